"""The codec streams: any chunking of the input gives the offline codes and audio (Moshi's tests)."""
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from config import CodecConfig, Config
from telugu_codec_fixed import Codec, CausalConv1d, load

torch.set_num_threads(1)


def tiny_cfg(**kw):
    return CodecConfig(channels=[32, 48], n_codebooks=4, codebook_size=64, **kw)


def tiny_source_filter_cfg(**kw):
    return tiny_cfg(decoder="source_filter", pitch_codebooks=1, pitch_slopes=4, **kw)


@pytest.fixture(scope="module", params=["istft", "istft+harmonic", "source_filter"])
def codec(request):
    torch.manual_seed(0)
    if request.param == "source_filter":
        return Codec(tiny_source_filter_cfg()).eval()  # plays the input's envelope from the start
    model = Codec(tiny_cfg(harmonics=16 if request.param == "istft+harmonic" else 0)).eval()
    if model.decoder.harmonic is not None:
        with torch.no_grad():  # loud harmonics, so the stream test covers their phase and glide
            model.decoder.harmonic.proj.conv.bias[1] += 6.0
    return model


def speechlike(n, sr=24000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return torch.tensor(0.1 * x + 0.01 * rng.standard_normal(n), dtype=torch.float32)


@pytest.mark.parametrize("chunk_frames", [[1], [2], [3, 1, 2], [5]])
def test_streaming_matches_offline(codec, chunk_frames):
    n_frames = 11
    pcm = speechlike(n_frames * codec.frame_size)[None, None]
    codes = codec.encode(pcm)
    audio = codec.decode(codes)
    enc_state, dec_state = codec.init_state(1), codec.init_state(1)
    got_codes, got_audio, pos, i = [], [], 0, 0
    while pos < n_frames:
        n = min(chunk_frames[i % len(chunk_frames)], n_frames - pos)
        c, enc_state = codec.encode_step(pcm[..., pos * codec.frame_size:(pos + n) * codec.frame_size], enc_state)
        a, dec_state = codec.decode_step(c, dec_state)
        got_codes.append(c), got_audio.append(a)
        pos, i = pos + n, i + 1
    assert torch.equal(torch.cat(got_codes, -1), codes)
    # The harmonic oscillator integrates F0, so a one-ulp difference in a streamed F0 (the
    # streaming convs sum in another order than the offline ones) drifts its phase a little:
    # 2e-4 to 5e-4 at this (loud) level over the clip, depending on the chunking.
    atol = 1e-3 if getattr(codec.decoder, "harmonic", None) is not None else 1e-5
    torch.testing.assert_close(torch.cat(got_audio, -1), audio, atol=atol, rtol=1e-4)


def test_streaming_state_is_explicit(codec):
    """Two interleaved streams with their own states give the same result as each alone."""
    a, b = speechlike(4 * codec.frame_size, seed=1)[None, None], speechlike(4 * codec.frame_size, seed=2)[None, None]
    sa, sb = codec.init_state(1), codec.init_state(1)
    out_a = []
    for f in range(4):
        sl = slice(f * codec.frame_size, (f + 1) * codec.frame_size)
        ca, sa = codec.encode_step(a[..., sl], sa)
        _, sb = codec.encode_step(b[..., sl], sb)
        out_a.append(ca)
    assert torch.equal(torch.cat(out_a, -1), codec.encode(a))


def test_a_batch_of_streams_equals_each_alone(codec):
    """encode_step/decode_step over a batch whose rows started at different frames (a frame
    scheduler's conversations, joined at different ticks) give each row what it gets alone: the
    state is per row, the noise head's random-phase counter included."""
    fs, n = codec.frame_size, 6
    pcm = [speechlike((n + lag) * fs, seed=lag) for lag in (0, 3)]  # the second joined 3 frames later
    alone = []
    for x in pcm:
        enc, dec = codec.init_state(1), codec.init_state(1)
        audio = []
        for f in range(len(x) // fs):
            c, enc = codec.encode_step(x[f * fs:(f + 1) * fs].view(1, 1, -1), enc)
            a, dec = codec.decode_step(c, dec)
            audio.append(a)
        alone.append(torch.cat(audio, -1)[0, 0])
    # Row 1 runs its first 3 frames alone, then both rows step as one batch.
    enc1, dec1 = codec.init_state(1), codec.init_state(1)
    head = []
    for f in range(3):
        c, enc1 = codec.encode_step(pcm[1][f * fs:(f + 1) * fs].view(1, 1, -1), enc1)
        a, dec1 = codec.decode_step(c, dec1)
        head.append(a[0, 0])
    enc0, dec0 = codec.init_state(1), codec.init_state(1)
    enc = {k: torch.cat([enc0[k], enc1[k]]) for k in enc0}
    dec = {k: torch.cat([dec0[k], dec1[k]]) for k in dec0}
    rows = [[], head]
    for f in range(n):
        x = torch.stack([pcm[0][f * fs:(f + 1) * fs], pcm[1][(f + 3) * fs:(f + 4) * fs]])[:, None]
        c, enc = codec.encode_step(x, enc)
        a, dec = codec.decode_step(c, dec)
        rows[0].append(a[0, 0]), rows[1].append(a[1, 0])
    # Oscillators (harmonic head, source-filter synth) integrate F0: a batched conv's last-bit
    # differences in F0 drift their phase a little, as in the streaming test above.
    oscillates = getattr(codec.decoder, "harmonic", None) is not None or codec.cfg.decoder == "source_filter"
    atol = 3e-4 if oscillates else 1e-5
    for got, want in zip(rows, alone):
        torch.testing.assert_close(torch.cat(got), want, atol=atol, rtol=1e-4)


def test_causal_conv_state_any_stride():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 5, kernel=8, stride=4)
    conv.key = "c"
    x = torch.randn(2, 3, 40)
    state, outs = {"c": conv.init_state(2)}, []
    for size in (4, 8, 12, 16):
        outs.append(conv(x[..., sum(o.shape[-1] for o in outs) * 4:][..., :size], state))
    torch.testing.assert_close(torch.cat(outs, -1), conv(x))


def test_no_lookahead(codec):
    """Changing the future never changes past codes or audio: the codec is causal."""
    pcm = speechlike(6 * codec.frame_size)[None, None]
    other = pcm.clone()
    other[..., 3 * codec.frame_size:] = torch.randn_like(other[..., 3 * codec.frame_size:])
    ca, cb = codec.encode(pcm), codec.encode(other)
    assert torch.equal(ca[..., :3], cb[..., :3])
    torch.testing.assert_close(codec.decode(ca)[..., :3 * codec.frame_size], codec.decode(cb)[..., :3 * codec.frame_size])


def test_fewer_codebooks_and_shapes(codec):
    pcm = speechlike(1000)  # not a whole number of frames: padded
    for k in (1, 2, 4):
        codes = codec.encode(pcm, k)
        assert codes.shape == (1, k, 2)
        assert codec.decode(codes).shape == (1, 1, 2 * codec.frame_size)


def test_training_pass_gives_finite_losses_and_gradients():
    torch.manual_seed(0)
    model = Codec(tiny_cfg()).train()
    pcm = speechlike(2 * 960)[None, None].repeat(3, 1, 1)
    audio, codes, latents, commitment, codebook = model(pcm, vq_mix=0.5)
    loss = (audio - pcm).abs().mean() + commitment + codebook
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.encoder.patch.conv.parametrizations.weight.original1.grad.abs().sum() > 0


def test_dead_codes_restart():
    torch.manual_seed(0)
    model = Codec(tiny_cfg()).train()
    vq = model.quantizer.quantizers[0]
    vq.usage[:10] = 0.0
    z = torch.randn(2, model.cfg.latent_dim, 5)
    _, z_e = vq.encode(z)
    before = vq.codebook.weight[:10].clone()
    assert vq.restart_dead_codes(z_e, threshold=0.02) >= 10
    assert not torch.allclose(before, vq.codebook.weight[:10])


def test_weight_norm_removal_keeps_outputs(codec):
    pcm = speechlike(3 * codec.frame_size)[None, None]
    plain = Codec(codec.cfg)
    plain.load_state_dict(codec.state_dict())
    plain.eval().remove_weight_norm()
    torch.testing.assert_close(plain.decode(plain.encode(pcm)), codec.decode(codec.encode(pcm)), atol=1e-5, rtol=1e-4)


def test_cli_roundtrip_encode_decode(tmp_path):
    from checkpoint_io import export_safetensors
    torch.manual_seed(0)
    cfg = Config()
    cfg.codec = tiny_cfg()
    model = Codec(cfg.codec)
    ckpt = tmp_path / "codec.safetensors"
    export_safetensors(model.state_dict(), ckpt, cfg)
    stereo_44k = np.stack([speechlike(44100 // 2, sr=44100).numpy()] * 2, axis=1)
    sf.write(tmp_path / "in.wav", stereo_44k, 44100)
    run = lambda *a: subprocess.run([sys.executable, "telugu_codec_fixed.py", *a, "--checkpoint", str(ckpt)],
                                    capture_output=True, text=True, check=True)
    run("roundtrip", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--codebooks", "2")
    out, sr = sf.read(tmp_path / "out.wav")
    assert sr == 24000 and out.ndim == 1 and len(out) == 12000
    run("encode", str(tmp_path / "in.wav"), str(tmp_path / "codes.npz"))
    run("decode", str(tmp_path / "codes.npz"), str(tmp_path / "dec.wav"))
    dec, _ = sf.read(tmp_path / "dec.wav")
    assert len(dec) == 12000
    loaded = load(ckpt)
    assert loaded.n_codebooks == 4 and not loaded.training
    bad = subprocess.run([sys.executable, "telugu_codec_fixed.py", "roundtrip", str(tmp_path / "missing.wav"),
                          str(tmp_path / "x.wav"), "--checkpoint", str(ckpt)], capture_output=True, text=True)
    assert bad.returncode != 0 and "error" in bad.stderr


def test_yin_finds_the_pitch_and_silence():
    """The harmonic head's F0 target: a 150 Hz and a 220 Hz tone within a few cents, silence
    and noise unvoiced."""
    from telugu_codec_fixed import yin_f0
    sr, n = 24000, 24000
    t = torch.arange(n) / sr
    tones = torch.stack([sum(torch.sin(2 * torch.pi * k * f * t) / k for k in range(1, 6)) * 0.1 for f in (150.0, 220.0)])
    f0 = yin_f0(tones, sr, 240)
    inner = f0[:, 5:-5]
    assert (inner > 0).all()
    cents = 1200 * torch.log2(inner / torch.tensor([[150.0], [220.0]])).abs()
    assert cents.max() < 20
    quiet = yin_f0(torch.stack([torch.zeros(n), 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(0))]), sr, 240)
    assert (quiet == 0).float().mean() > 0.95


def test_harmonic_head_plays_the_pitch_it_predicts():
    """Whatever F0 the head predicts is what comes out, at any pitch (not only multiples of the
    100 Hz frame rate, the failure it exists to fix), and its F0 loss is zero at the true pitch."""
    from telugu_codec_fixed import HarmonicHead, f0_loss, yin_f0
    head = HarmonicHead(8, 240, 24000, 8)
    with torch.no_grad():
        head.proj.conv.weight.zero_()
        for hz in (113.0, 187.0):
            frac = math.log(hz / head.fmin) / math.log(head.fmax / head.fmin)
            head.proj.conv.bias.zero_()
            head.proj.conv.bias[0] = math.log(frac / (1 - frac))  # sigmoid^-1
            head.proj.conv.bias[1] = 6.0
            y = head(torch.zeros(1, 8, 60))  # 0.6 s
            got = yin_f0(y.view(1, -1), 24000, 240)[0, 10:-5]
            assert (got > 0).all() and (1200 * torch.log2(got / hz).abs()).max() < 20
            assert f0_loss(head.last_f0, yin_f0(y.view(1, -1), 24000, 240)) < 0.02


# --- the source-filter codec (codec.decoder = "source_filter") -------------------------------------

def test_old_config_loads_as_before():
    """A config written before the source-filter codec (no decoder/pitch keys) builds the same
    istft codec, and the shipped weights load into it strictly."""
    import json
    from pathlib import Path

    from checkpoint_io import load_safetensors
    from config import from_dict
    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "codec.json"
    values = json.loads(shipped.read_text())
    assert "decoder" not in values["codec"] and "pitch_codebooks" not in values["codec"]
    cfg = from_dict(values).codec
    assert cfg.decoder == "istft" and cfg.pitch_codebooks == 0
    model = Codec(cfg)
    model.load_state_dict(load_safetensors(shipped.with_suffix(".safetensors")), strict=True)
    assert model.delay == cfg.patch_size and not model.source_filter


def test_pitch_quantizer_round_trip():
    """Codebook 0: a frame's F0 line comes back within a few cents, unvoiced frames as 0, a
    half-voiced frame as voiced, and an octave slip inside a frame does not bend the line."""
    from telugu_codec_fixed import PitchQuantizer
    pq = PitchQuantizer(CodecConfig(decoder="source_filter", pitch_codebooks=1))
    glide = 140.0 * 2 ** (0.01 * torch.arange(4.0))  # 12 cents per 10 ms
    f0 = torch.cat([glide, torch.zeros(4), torch.tensor([0.0, 0.0, 230.0, 232.0]),
                    torch.tensor([180.0, 360.0, 180.0, 181.0])])[None]
    codes = pq.encode(f0)
    assert codes.shape == (1, 4) and codes[0, 1] == 0 and (codes[0, [0, 2, 3]] > 0).all()
    assert 0 <= codes.min() and codes.max() < 1024
    back = pq.decode(codes)
    cents = lambda a, b: (1200 * torch.log2(a / b)).abs()
    assert cents(back[0, :4], glide).max() < 20
    assert (back[0, 4:8] == 0).all()
    assert cents(back[0, 10:12], f0[0, 10:12]).max() < 20
    assert cents(back[0, 12:], torch.full((4,), 180.0)).max() < 20  # the 360 Hz slip follows the line


def test_source_filter_synthesiser_resynthesises_speech_without_training():
    """The DSP prior: the analysed envelope and YIN's F0 of a voice-like signal, synthesised with
    no learnt weights at all, come back at the input's level and pitch."""
    from telugu_codec_fixed import Analysis, SourceFilterSynth, yin_f0
    cfg = CodecConfig(decoder="source_filter", pitch_codebooks=1)
    t = torch.arange(24000) / 24000
    phase = 2 * math.pi * torch.cumsum(120 + 30 * torch.sin(2 * math.pi * 3 * t), 0) / 24000  # a gliding voice
    pcm = (0.1 * sum(torch.sin(k * phase) / k for k in range(1, 20)))[None, None]
    with torch.no_grad():
        _, envelope, f0 = Analysis(cfg)(pcm)
        voiced = (f0 > 0).float().unsqueeze(1)
        # Voiced patches all harmonic, unvoiced all noise: the calibration of both paths.
        y = SourceFilterSynth(cfg)(f0.clamp(min=60.0), envelope + torch.log(voiced + 1e-4),
                                   envelope + torch.log(1 - voiced + 1e-4))
    level_db = 10 * torch.log10(y[..., 2400:].pow(2).mean() / pcm[..., 2400:].pow(2).mean())
    assert abs(level_db) < 2.0
    want = 120 + 30 * torch.sin(2 * math.pi * 3 * torch.arange(10, 90) * 0.01)  # F0 at patch k
    got = yin_f0(y[0], 24000, 240)[0, 12:92]  # the output lags by `delay_patches` = 2
    both = (got > 0) & (want > 0)
    assert both.float().mean() > 0.9
    assert (1200 * torch.log2(got[both] / want[both])).abs().median() < 25


@pytest.mark.parametrize("hz", [113.0, 187.0, 262.0])
def test_untrained_source_filter_codec_keeps_the_pitch(hz):
    """Random weights, no training: a voice at any pitch comes out of the round trip at that
    pitch (the shipped istft codec decoded every voice at 100 or 200 Hz)."""
    torch.manual_seed(0)  # the pitch code needs its real size: 127 F0 levels, 29 cents apart
    model = Codec(CodecConfig(channels=[32, 48], n_codebooks=2, decoder="source_filter", pitch_codebooks=1)).eval()
    t = torch.arange(24000) / 24000
    pcm = 0.1 * sum(torch.sin(2 * math.pi * k * hz * t) / k for k in range(1, 12))
    y = model.decode(model.encode(pcm))[0, 0, 4800:4800 + 8192]
    spectrum = torch.fft.rfft(y * torch.hann_window(8192)).abs()
    freqs = torch.fft.rfftfreq(8192, 1 / 24000)
    low = (freqs > 50) & (freqs < 1.5 * hz)  # the fundamental, and nothing an octave under it
    peak = freqs[low][spectrum[low].argmax()]
    assert abs(1200 * math.log2(peak / hz)) < 25
    assert spectrum[(freqs > 40) & (freqs < 0.75 * hz)].max() < 0.5 * spectrum[low].max()  # no subharmonic


def test_source_filter_training_pass_reports_its_envelope():
    torch.manual_seed(0)
    model = Codec(tiny_source_filter_cfg()).train()
    pcm = speechlike(2 * 960)[None, None].repeat(2, 1, 1)
    audio, codes, latents, commitment, codebook = model(pcm, vq_mix=0.5)
    decoded_env, analysed_env = model.last_envelope
    assert audio.shape == pcm.shape and codes.shape == (2, 4, 2) and len(latents) == 3
    assert decoded_env.shape == analysed_env.shape == (2, model.cfg.envelope_bands, 8)
    ((audio - pcm).abs().mean() + (decoded_env - analysed_env).abs().mean() + commitment + codebook).backward()
    assert model.decoder.head.weight.grad.abs().sum() > 0
    assert model.encoder.patch.conv.parametrizations.weight.original1.grad.abs().sum() > 0
