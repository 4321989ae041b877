"""The codec's discriminators and losses, after DAC (descript-audio-codec).

Discriminators: a multi-period discriminator (one 2-D conv stack per period, HiFi-GAN/DAC) and a
multi-band multi-scale complex-STFT discriminator (DAC's MRD). `Discriminator.forward` returns one
list of feature maps per sub-discriminator; the last map of each list is its logit map.

Losses: least-squares GAN losses and feature matching. The spectral losses the generator trains on
(DAC's multi-scale log-mel L1, APNet's phase losses) and `mel_distance` live in spectral.py, which
needs no discriminator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from config import DiscriminatorConfig


def wn_conv2d(in_ch, out_ch, kernel, stride=1, padding=0, act=True) -> nn.Module:
    conv = weight_norm(nn.Conv2d(in_ch, out_ch, kernel, stride, padding))
    return nn.Sequential(conv, nn.LeakyReLU(0.1)) if act else conv


# --- multi-period ---------------------------------------------------------------------------------

class PeriodDiscriminator(nn.Module):
    """Folds the waveform into [time / period, period] and convolves along time only, so each of the
    `period` phases is judged on its own: periodic structure (pitch, harmonics) becomes visible."""

    def __init__(self, period: int, channels: int = 32):
        super().__init__()
        self.period = period
        c = channels  # DAC: 32 -> 128 -> 512 -> 1024 -> 1024
        widths = [1, c, 4 * c, 16 * c, 32 * c, 32 * c]
        strides = [3, 3, 3, 3, 1]
        self.convs = nn.ModuleList(
            wn_conv2d(cin, cout, (5, 1), (s, 1), padding=(2, 0))
            for cin, cout, s in zip(widths[:-1], widths[1:], strides))
        self.conv_post = wn_conv2d(widths[-1], 1, (3, 1), padding=(1, 0), act=False)

    def forward(self, wav: torch.Tensor) -> list[torch.Tensor]:
        # Always pad at least one sample (as DAC), so a length that is a multiple of the period
        # and one that is not go through the same code path.
        wav = F.pad(wav, (0, self.period - wav.shape[-1] % self.period), mode="reflect")
        x = wav.view(wav.shape[0], 1, -1, self.period)
        fmaps = []
        for conv in self.convs:
            x = conv(x)
            fmaps.append(x)
        fmaps.append(self.conv_post(x))
        return fmaps


class MPD(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, wav: torch.Tensor) -> list[list[torch.Tensor]]:
        return [d(wav) for d in self.discriminators]


# --- multi-band multi-scale STFT ------------------------------------------------------------------

class BandSTFTDiscriminator(nn.Module):
    """DAC's MRD at one window: the complex STFT as (real, imag) channels over [frames, bins], cut
    into frequency bands, each band with its own conv stack (low and high bands look different, so
    they should not share filters), then joined along frequency for a final conv."""

    def __init__(self, window: int, bands, channels: int = 32, hop_factor: float = 0.25):
        super().__init__()
        self.window = window
        self.hop = int(window * hop_factor)
        n_bins = window // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        self.register_buffer("hann", torch.hann_window(window), persistent=False)
        c = channels

        def band_stack():
            return nn.ModuleList([
                wn_conv2d(2, c, (3, 9), (1, 1), padding=(1, 4)),
                wn_conv2d(c, c, (3, 9), (1, 2), padding=(1, 4)),
                wn_conv2d(c, c, (3, 9), (1, 2), padding=(1, 4)),
                wn_conv2d(c, c, (3, 9), (1, 2), padding=(1, 4)),
                wn_conv2d(c, c, (3, 3), (1, 1), padding=(1, 1)),
            ])

        self.band_convs = nn.ModuleList(band_stack() for _ in self.bands)
        self.conv_post = wn_conv2d(c, 1, (3, 3), padding=(1, 1), act=False)

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, T] -> [B, 2, ceil(T / hop), bins]. Frame k covers samples centred on k*hop + hop/2
        (DAC's match_stride), so frames line up with a conv of stride `hop`."""
        length = wav.shape[-1]
        right = -length % self.hop
        pad = (self.window - self.hop) // 2
        wav = F.pad(wav, (pad, pad + right), mode="reflect")
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), self.window, self.hop, window=self.hann,
                          center=False, return_complex=True)
        return torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, F, frames, 2] -> [B, 2, frames, F]

    def forward(self, wav: torch.Tensor) -> list[torch.Tensor]:
        spec = self.spectrogram(wav)
        fmaps, outs = [], []
        for (lo, hi), stack in zip(self.bands, self.band_convs):
            x = spec[..., lo:hi]
            for conv in stack:
                x = conv(x)
                fmaps.append(x)
            outs.append(x)
        fmaps.append(self.conv_post(torch.cat(outs, dim=-1)))
        return fmaps


class MRD(nn.Module):
    def __init__(self, windows=(2048, 1024, 512), bands=((0.0, 0.1), (0.1, 0.25), (0.25, 0.5),
                                                        (0.5, 0.75), (0.75, 1.0)), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(BandSTFTDiscriminator(w, bands, channels) for w in windows)

    def forward(self, wav: torch.Tensor) -> list[list[torch.Tensor]]:
        return [d(wav) for d in self.discriminators]


class Discriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig | None = None):
        super().__init__()
        cfg = cfg or DiscriminatorConfig()
        self.mpd = MPD(cfg.periods, cfg.mpd_channels)
        self.mrd = MRD(cfg.stft_windows, cfg.bands, cfg.stft_channels)

    @staticmethod
    def preprocess(wav: torch.Tensor) -> torch.Tensor:
        # As DAC: the discriminators judge the waveform's shape, not its DC offset or level (the mel
        # loss already holds the level).
        wav = wav - wav.mean(dim=-1, keepdim=True)
        return 0.8 * wav / (wav.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, wav: torch.Tensor) -> list[list[torch.Tensor]]:
        """wav [B, 1, T] -> one feature-map list per sub-discriminator (MPD periods, then MRD
        windows); the last element of each list is the logit map."""
        if wav.dim() == 2:
            wav = wav.unsqueeze(1)
        wav = self.preprocess(wav)
        return self.mpd(wav) + self.mrd(wav)


# --- adversarial losses (least squares, as DAC) ---------------------------------------------------

def discriminator_loss(d_fake, d_real) -> torch.Tensor:
    """d_fake from the generator output *detached*, d_real from the target. Minimal (0) when every
    real logit is 1 and every fake logit 0."""
    loss = 0.0
    for fake, real in zip(d_fake, d_real):
        loss = loss + torch.mean(fake[-1] ** 2) + torch.mean((1 - real[-1]) ** 2)
    return loss


def generator_losses(d_fake, d_real) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature matching). Feature matching is the L1 between fake and (detached) real
    feature maps of every layer but the logits, summed over layers and sub-discriminators."""
    adv = sum(torch.mean((1 - fake[-1]) ** 2) for fake in d_fake)
    feat = sum(F.l1_loss(f, r.detach())
               for fake, real in zip(d_fake, d_real) for f, r in zip(fake[:-1], real[:-1]))
    return adv, feat
