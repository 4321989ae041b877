"""Spectral losses and measures, below the models, the trainers and the evaluations: DAC's
multi-scale log-mel L1 (`MultiScaleMelLoss`), APNet's phase losses (`PhaseLoss`) and
`mel_distance`, a single-resolution log-mel L1 for evaluation (codec_eval.py). Torch and
librosa's mel filters; nothing of the GAN, so an evaluation needs no discriminator code.
"""
from __future__ import annotations

import functools
import warnings

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# --- mel losses -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    # At short windows with many mels some triangles fall between FFT bins and are empty (DAC has
    # the same at 44.1 kHz); an empty band gives the clamp value on both sides and adds 0 to the loss.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


def _mel(wav: torch.Tensor, mel_basis: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
    """[..., T] -> [..., n_mels, frames] mel-weighted STFT magnitude (power 1), centred frames."""
    shape = wav.shape[:-1]
    wav = wav.reshape(-1, wav.shape[-1])
    spec = torch.stft(wav, len(window), hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True).abs()
    mel = torch.matmul(mel_basis, spec)
    return mel.reshape(*shape, *mel.shape[-2:])


class MultiScaleMelLoss(nn.Module):
    """DAC's MelSpectrogramLoss: for each (window, n_mels), L1 between log10 mel magnitudes
    (clamped at 1e-5, power 1), hop = window / 4, summed over scales; `mag_weight` adds the L1 of
    the linear mel magnitudes (DAC's final configs use 0)."""

    def __init__(self, sample_rate: int, windows=(32, 64, 128, 256, 512, 1024, 2048),
                 n_mels=(5, 10, 20, 40, 80, 160, 320), clamp_eps: float = 1e-5,
                 log_weight: float = 1.0, mag_weight: float = 0.0):
        super().__init__()
        if len(windows) != len(n_mels):
            raise ValueError(f"mel windows {list(windows)} and bins {list(n_mels)} differ in length")
        self.windows = list(windows)
        self.clamp_eps, self.log_weight, self.mag_weight = clamp_eps, log_weight, mag_weight
        for i, (w, m) in enumerate(zip(windows, n_mels)):
            # Built once; not persistent, so checkpoints hold no copy of what the config rebuilds.
            self.register_buffer(f"mel_{i}", torch.tensor(_mel_basis(sample_rate, w, m)),
                                 persistent=False)
            self.register_buffer(f"hann_{i}", torch.hann_window(w), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: estimate, y: reference, [B, 1, T] or [B, T]."""
        loss = 0.0
        for i, w in enumerate(self.windows):
            basis, hann = getattr(self, f"mel_{i}"), getattr(self, f"hann_{i}")
            mx, my = _mel(x, basis, hann, w // 4), _mel(y, basis, hann, w // 4)
            if self.log_weight:
                loss = loss + self.log_weight * F.l1_loss(mx.clamp(min=self.clamp_eps).log10(),
                                                          my.clamp(min=self.clamp_eps).log10())
            if self.mag_weight:
                loss = loss + self.mag_weight * F.l1_loss(mx, my)
        return loss


def mel_distance(a: torch.Tensor, b: torch.Tensor, sample_rate: int, window: int = 1024,
                 n_mels: int = 80) -> torch.Tensor:
    """Mean |log10 mel(a) - log10 mel(b)| at one resolution (by default window 1024, hop 256, 80 mels), for
    evaluation. Any shape [..., T]; the longer signal is cut to the shorter (a decoder may pad)."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    length = min(a.shape[-1], b.shape[-1])
    basis = torch.tensor(_mel_basis(sample_rate, window, n_mels), device=a.device)
    hann = torch.hann_window(window, device=a.device)
    ma = _mel(a[..., :length], basis, hann, window // 4).clamp(min=1e-5).log10()
    mb = _mel(b[..., :length], basis, hann, window // 4).clamp(min=1e-5).log10()
    return (ma - mb).abs().mean()


# --- phase losses ---------------------------------------------------------------------------------

def _unit_phase_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """1 - cos(angle(a) - angle(b)) for complex a, b, without torch.angle (whose gradient blows
    up near zero magnitude): the anti-wrapped phase error of APNet, in a bounded form [0, 2]."""
    return 1 - (a * b.conj()).real / ((a.abs() + eps) * (b.abs() + eps))


class PhaseLoss(nn.Module):
    """APNet's phase losses (Ai & Ling, 2023), for a decoder that predicts phase (our iSTFT head):
    instantaneous frequency (phase advance from frame to frame), group delay (phase step from bin
    to bin) and, weighted down, the instantaneous phase itself. The mel loss ignores phase, and a
    decoder trained on it alone overlaps frames of unrelated phase: a rough, noisy sound that STOI
    and PESQ punish. Each bin counts in proportion to the reference's magnitude (silent bins carry
    no phase worth learning). Cheap: a few STFTs, no discriminator."""

    def __init__(self, windows=(512, 1024), ip_weight: float = 0.1):
        super().__init__()
        self.windows, self.ip_weight = list(windows), ip_weight
        for i, w in enumerate(self.windows):
            self.register_buffer(f"hann_{i}", torch.hann_window(w), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: estimate, y: reference, [B, 1, T] or [B, T]."""
        loss = 0.0
        for i, w in enumerate(self.windows):
            hann = getattr(self, f"hann_{i}")
            X, Y = (torch.stft(s.reshape(-1, s.shape[-1]), w, w // 4, window=hann, return_complex=True) for s in (x, y))
            weight = Y.abs() / (Y.abs().mean(dim=(1, 2), keepdim=True) + 1e-8)  # [B, F, frames]
            dt = lambda S: S[..., 1:] * S[..., :-1].conj()  # frame-to-frame phase advance
            df = lambda S: S[:, 1:] * S[:, :-1].conj()  # bin-to-bin phase step
            iaf = (_unit_phase_distance(dt(X), dt(Y)) * weight[..., 1:]).mean()
            gd = (_unit_phase_distance(df(X), df(Y)) * weight[:, 1:]).mean()
            ip = (_unit_phase_distance(X, Y) * weight).mean()
            loss = loss + iaf + gd + self.ip_weight * ip
        return loss / len(self.windows)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence (linear magnitude) + log-magnitude L1, averaged over several FFT sizes
    (Parallel WaveGAN; hn-NSF trains its source-filter vocoder on this alone, no GAN). Long windows
    judge the harmonics' pitch and level, short ones (down to 64 samples) the timing of onsets and
    the glottal pulses, which the 10 ms controls must get right without a discriminator."""

    def __init__(self, windows=(2048, 1024, 512, 256, 128, 64), eps: float = 1e-5):
        super().__init__()
        self.windows, self.eps = list(windows), eps
        for w in self.windows:
            self.register_buffer(f"window_{w}", torch.hann_window(w), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: reconstruction, y: target, both [B, 1, T]."""
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        total = x.new_zeros(())
        for w in self.windows:
            window = getattr(self, f"window_{w}")
            mx = torch.stft(x, w, w // 4, window=window, return_complex=True).abs()
            my = torch.stft(y, w, w // 4, window=window, return_complex=True).abs()
            convergence = torch.linalg.norm(mx - my) / (torch.linalg.norm(my) + self.eps)
            log_l1 = (torch.log(mx + self.eps) - torch.log(my + self.eps)).abs().mean()
            total = total + convergence + log_l1
        return total / len(self.windows)
