import math

import pytest
import torch
from torch.nn.utils import parametrize

from config import DiscriminatorConfig, LossConfig, load_config
from discriminator_dac import (BandSTFTDiscriminator, Discriminator, PeriodDiscriminator, discriminator_loss,
                               generator_losses)
from spectral import MultiScaleMelLoss, PhaseLoss, mel_distance

torch.set_num_threads(1)
SR = 24000
SMALL = DiscriminatorConfig(mpd_channels=2, stft_channels=4, stft_windows=[256, 128])


@pytest.fixture(scope="module")
def disc():
    torch.manual_seed(0)
    return Discriminator(SMALL)


def speech_like(batch=2, length=4800, seed=0):
    """A few harmonics with a wobbling pitch plus a little noise: enough spectral structure for the
    mel loss to see."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / SR
    f0 = 120 + 40 * torch.rand(batch, 1, generator=g)
    phase = 2 * math.pi * f0 * (t + 0.002 * torch.sin(2 * math.pi * 3 * t))
    wav = sum(torch.sin(k * phase) / k for k in range(1, 6))
    wav = 0.3 * wav + 0.01 * torch.randn(batch, length, generator=g)
    return wav.unsqueeze(1)


def ceil_div(a, b):
    return -(-a // b)


@pytest.mark.parametrize("length", [2400, 2401, 3079, 4620])  # 4620 = 2*3*5*7*11*2: a multiple of all
def test_output_shapes(disc, length):
    out = disc(torch.randn(3, 1, length))
    assert len(out) == len(SMALL.periods) + len(SMALL.stft_windows)
    for period, fmaps in zip(SMALL.periods, out):
        height = ceil_div(length + period - length % period, period)
        for _ in range(4):  # four stride-3 layers
            height = ceil_div(height, 3)
        assert fmaps[-1].shape == (3, 1, height, period)
    for window, fmaps in zip(SMALL.stft_windows, out[len(SMALL.periods):]):
        hop = window // 4
        n_bins = window // 2 + 1
        widths = [int(hi * n_bins) - int(lo * n_bins) for lo, hi in SMALL.bands]
        for _ in range(3):  # three stride-2 layers along frequency
            widths = [ceil_div(w, 2) for w in widths]
        assert fmaps[-1].shape == (3, 1, ceil_div(length, hop), sum(widths))
    assert all(torch.isfinite(f).all() for fmaps in out for f in fmaps)


def test_feature_map_counts(disc):
    out = disc(torch.randn(1, 1, 2400))
    n_mpd = len(SMALL.periods)
    assert [len(f) for f in out[:n_mpd]] == [6] * n_mpd  # five convs + logits
    assert [len(f) for f in out[n_mpd:]] == [5 * len(SMALL.bands) + 1] * len(SMALL.stft_windows)


def test_accepts_batch_by_time_and_ignores_level(disc):
    wav = torch.randn(2, 1, 2400)
    a, b = disc(wav), disc(3.0 * wav.squeeze(1))  # DAC's preprocessing: DC removed, peak normalised
    for fa, fb in zip(a, b):
        assert torch.allclose(fa[-1], fb[-1], atol=1e-5)


def test_widths_follow_config():
    period = PeriodDiscriminator(2, channels=4)
    assert [c[0].out_channels for c in period.convs] == [4, 16, 64, 128, 128]  # DAC x 4/32
    band = BandSTFTDiscriminator(128, [[0.0, 0.5], [0.5, 1.0]], channels=4)
    assert len(band.band_convs) == 2 and band.bands == [(0, 32), (32, 65)]
    assert parametrize.is_parametrized(period.convs[0][0], "weight")  # weight norm
    assert parametrize.is_parametrized(band.conv_post, "weight")


def test_tiny_preset_builds():
    cfg = load_config("tiny")
    d = Discriminator(cfg.discriminator)
    assert len(d.mpd.discriminators) == 5 and len(d.mrd.discriminators) == len(cfg.discriminator.stft_windows)


def fake_outputs(logit_value, n=3):
    return [[torch.randn(2, 4, 5), torch.full((2, 1, 5), float(logit_value))] for _ in range(n)]


def test_discriminator_loss_zero_point():
    assert discriminator_loss(fake_outputs(0.0), fake_outputs(1.0)).item() == 0.0
    assert discriminator_loss(fake_outputs(0.5), fake_outputs(1.0)).item() == pytest.approx(3 * 0.25)
    assert discriminator_loss(fake_outputs(0.0), fake_outputs(0.5)).item() == pytest.approx(3 * 0.25)
    assert discriminator_loss(fake_outputs(1.0), fake_outputs(0.0)).item() == pytest.approx(3 * 2.0)


def test_generator_losses_zero_points(disc):
    real = fake_outputs(1.0)
    adv, feat = generator_losses(real, real)
    assert adv.item() == 0.0 and feat.item() == 0.0  # fake scored real, identical features
    adv, feat = generator_losses(fake_outputs(0.0), real)
    assert adv.item() == pytest.approx(3.0) and feat.item() > 0

    wav = speech_like()
    out = disc(wav)
    adv, feat = generator_losses(out, disc(wav))
    assert feat.item() == 0.0 and torch.isfinite(adv)


def test_generator_gradients_reach_the_input(disc):
    real = speech_like()
    fake = (real + 0.05 * torch.randn_like(real)).requires_grad_()
    adv, feat = generator_losses(disc(fake), disc(real))
    assert adv.item() > 0 and feat.item() > 0
    (adv + feat).backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    disc.zero_grad()


def test_discriminator_loss_trains_the_discriminator(disc):
    real = speech_like()
    fake = (real + 0.05 * torch.randn_like(real)).requires_grad_()
    loss = discriminator_loss(disc(fake.detach()), disc(real))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert fake.grad is None  # the generator's output is detached in the D step
    grads = [p.grad for p in disc.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    disc.zero_grad()


@pytest.fixture(scope="module")
def mel_loss():
    cfg = LossConfig()
    return MultiScaleMelLoss(SR, windows=cfg.mel_windows, n_mels=cfg.mel_bins)


def test_mel_loss_zero_on_identical_and_finite(mel_loss):
    wav = speech_like()
    assert mel_loss(wav, wav).item() == 0.0
    assert mel_loss(wav, torch.zeros_like(wav)).item() > 0  # silence: the clamp keeps it finite
    assert torch.isfinite(mel_loss(torch.zeros_like(wav), torch.zeros_like(wav)))
    assert not list(mel_loss.state_dict())  # filterbanks are rebuilt from the config, not saved


def test_mel_loss_decreases_as_signals_converge(mel_loss):
    target = speech_like(seed=1)
    other = speech_like(seed=2)
    losses = [mel_loss((1 - a) * other + a * target, target).item() for a in (0.0, 0.5, 0.8, 0.95, 1.0)]
    assert all(x > y for x, y in zip(losses, losses[1:])), losses
    assert losses[-1] == 0.0


def test_mel_loss_gradient_and_magnitude_term():
    loss = MultiScaleMelLoss(SR, windows=[64, 256], n_mels=[10, 40], mag_weight=1.0)
    target = speech_like()
    estimate = (0.5 * target).requires_grad_()
    value = loss(estimate, target)
    value.backward()
    assert value.item() > 0 and estimate.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        MultiScaleMelLoss(SR, windows=[64, 256], n_mels=[10])


def test_mel_distance_symmetric_and_zero():
    a, b = speech_like(seed=3), speech_like(seed=4)
    assert mel_distance(a, a, SR).item() == 0.0
    assert mel_distance(a, b, SR).item() == pytest.approx(mel_distance(b, a, SR).item())
    assert mel_distance(a, b, SR).item() > 0
    assert mel_distance(a, 0.9 * a, SR) < mel_distance(a, b, SR)
    # A decoder may return a few padded samples more: compared over the common length.
    padded = torch.cat([a, torch.zeros(2, 1, 100)], dim=-1)
    assert mel_distance(a, padded, SR).item() < 0.01


def test_phase_loss_sees_phase_that_the_mel_loss_misses():
    """Same magnitudes, scrambled phase: the mel loss barely notices, PhaseLoss does; gradients
    stay finite even through silent bins (no torch.angle)."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(24000) / 24000
    y = (torch.sin(2 * torch.pi * 180 * t) + 0.5 * torch.sin(2 * torch.pi * 540 * t)) * (t > 0.3)
    y = y[None, None] * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    spec = torch.stft(y[0], 512, 128, window=torch.hann_window(512), return_complex=True)
    scrambled = torch.polar(spec.abs(), 2 * torch.pi * torch.rand(spec.shape, generator=g))
    x = torch.istft(scrambled, 512, 128, window=torch.hann_window(512), length=y.shape[-1])[None]
    phase, mel = PhaseLoss(), MultiScaleMelLoss(24000, [256, 1024], [40, 80])
    assert phase(y, y).item() < 0.01
    assert phase(torch.roll(y, 1, -1), y).item() < 0.05  # a sample of delay is not a phase error
    assert phase(x, y).item() > 0.5 > 10 * phase(torch.roll(y, 1, -1), y).item()
    assert mel(x, y).item() < 2.0  # the mel loss sees little of it
    est = x.clone().requires_grad_(True)
    phase(est, y).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
