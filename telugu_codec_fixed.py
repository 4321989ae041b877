"""A causal, streaming, DAC-style neural audio codec for 24 kHz speech.

DAC's recipe (Snake activations, weight-normed convs, factorized L2-normalised residual VQ with
quantizer dropout) made causal like EnCodec/Mimi (left-only padding, explicit streaming state) and
cheap on a CPU: no layer runs at the full 24 kHz rate. The encoder reads the waveform in 10 ms
patches (a learned 20 ms analysis filterbank), works at 100 Hz, downsamples to 25 Hz frames and
quantizes them; the decoder mirrors it and synthesises the waveform with an iSTFT head (Vocos).

    pcm 24 kHz -> patch conv (100 Hz) -> res units -> stride-4 conv (25 Hz) -> res units -> latent
    latent -> RVQ (8 x 1024 codes, 2 kbps) -> res units (25 Hz) -> conv+reshape upsample (100 Hz)
           -> res units -> magnitude/phase -> iSTFT overlap-add -> pcm 24 kHz

The iSTFT frames are 20 ms long and overlap by one 10 ms hop, so a region of output is final only
when the frame after it is known: the decoder's output lags its input by one hop (`delay`).

Every causal conv keeps its left context in a state dict keyed by the conv's name; offline
`forward` and streaming `encode_step`/`decode_step` run the same code, which is why they agree.

`codec.decoder: source_filter` builds the other codec of this module (docs/DESIGN.md): pitch is
transmitted and the decoder is a harmonic-plus-noise synthesiser with learnt filters.

    pcm -> causal analysis per 10 ms: log-mel, 32-band envelope, YIN F0
        F0 -> PitchQuantizer -> codebook 0 (F0 line + voicing of the 40 ms frame, 250 bps)
        log-mel -> Encoder (+ the envelope itself) -> RVQ -> codebooks 1..7 (1.75 kbps)
    codes -> SourceFilterDecoder: controls per 10 ms (envelope, voicing mix, gains) + the F0
          -> SourceFilterSynth: harmonics (phase integrated per sample) + shaped noise -> pcm
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from checkpoint_io import load_safetensors
from config import CodecConfig, Config, config_json_path, from_dict

ROOT = Path(__file__).resolve().parent
SHIPPED = ROOT / "checkpoints" / "codec.safetensors"


# --- layers -------------------------------------------------------------------------------------

class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha: a periodic inductive bias that suits audio (DAC, BigVGAN)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x):
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class CausalConv1d(nn.Module):
    """Weight-normed Conv1d padded on the left only. In streaming, the left context it needs
    (`pad` samples) lives in state[self.key] between calls instead of in zero padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 init_scale: float = 1.0):
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel, stride, dilation=dilation)
        # Variance-preserving init, zero bias: PyTorch's default shrinks the signal at every layer
        # and the codec then learns one average spectrum (CODEC_PROBE.md).
        nn.init.normal_(conv.weight, std=init_scale / math.sqrt(cin * kernel))
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv)
        self.stride = stride
        self.pad = (kernel - 1) * dilation + 1 - stride
        self.key = ""  # set by Codec: the name under which this conv's stream state is kept

    def forward(self, x, state: dict | None = None):
        if state is None:
            return self.conv(F.pad(x, (self.pad, 0)))
        x = torch.cat([state[self.key], x], dim=-1)
        y = self._taps_matmul(x)
        state[self.key] = x[..., y.shape[-1] * self.stride:]  # what the next output still needs
        return y

    def _taps_matmul(self, x):
        """The conv over x [B, cin, T] with no padding, as one matmul over its taps. A streaming
        step has a few output steps per frame, where conv1d falls to slow CPU kernels (dilated ones
        to a per-row im2col loop, 1 ms a call); the matmul costs a quarter of that. Same sums,
        another order: equal to the conv to float rounding."""
        conv = self.conv
        B, cin, _ = x.shape
        k, dilation = conv.kernel_size[0], conv.dilation[0]
        taps = x.unfold(2, (k - 1) * dilation + 1, self.stride)[..., ::dilation]  # [B, cin, n, k]
        n = taps.shape[2]
        y = torch.addmm(conv.bias, taps.transpose(1, 2).reshape(B * n, cin * k), conv.weight.view(-1, cin * k).t())
        return y.view(B, n, -1).transpose(1, 2)

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.conv.in_channels, self.pad, device=device)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.act1 = Snake(channels)
        self.conv1 = CausalConv1d(channels, channels, kernel, dilation=dilation)
        self.act2 = Snake(channels)
        self.conv2 = CausalConv1d(channels, channels, 1, init_scale=0.1)  # branch starts near zero

    def forward(self, x, state=None):
        return x + self.conv2(self.act2(self.conv1(self.act1(x), state)), state)


class Stage(nn.Module):
    """Residual units with dilations 1, 3, 9, ... at one rate."""

    def __init__(self, channels: int, n_units: int, kernel: int):
        super().__init__()
        self.units = nn.ModuleList(ResidualUnit(channels, kernel, 3**i) for i in range(n_units))

    def forward(self, x, state=None):
        for unit in self.units:
            x = unit(x, state)
        return x


class Downsample(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.act = Snake(cin)
        self.conv = CausalConv1d(cin, cout, 2 * stride, stride=stride)

    def forward(self, x, state=None):
        return self.conv(self.act(x), state)


class Upsample(nn.Module):
    """Conv1d to `stride` times the channels, then reshape time-major: a causal transposed conv
    that stays on fast Conv1d kernels for one-frame inputs (DESIGN.md)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.act = Snake(cin)
        self.conv = CausalConv1d(cin, cout * stride, 3)
        self.stride = stride

    def forward(self, x, state=None):
        y = self.conv(self.act(x), state)
        b, cs, t = y.shape
        return y.view(b, cs // self.stride, self.stride, t).transpose(2, 3).reshape(b, cs // self.stride, t * self.stride)


class ISTFTHead(nn.Module):
    """Predicts log-magnitude and phase of a 2*hop-sample frame per step; inverse FFT, Hann window,
    overlap-add. Hann at 50 % overlap sums to one, so no envelope division is needed.

    noise=True (beside a HarmonicHead): the predicted phase is replaced by a fixed pseudo-random
    one per frame, so this head can only make noise shaped by its magnitudes (DDSP's filtered
    noise) and the voiced, periodic part must come from the harmonic oscillator. The frame counter
    that indexes the random phases is kept in the stream state."""

    PHASES = 1009  # frames of random phase before the pattern repeats (10 s; prime)

    def __init__(self, channels: int, hop: int, noise: bool = False):
        super().__init__()
        self.hop = hop
        self.n_fft = 2 * hop
        self.noise = noise
        self.act = Snake(channels)
        self.proj = CausalConv1d(channels, self.n_fft + 2, 1, init_scale=0.1)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        if noise:
            g = torch.Generator().manual_seed(0)
            self.register_buffer("random_phase", 2 * math.pi * torch.rand(self.PHASES, hop + 1, generator=g),
                                 persistent=False)
        self.key = ""

    def forward(self, x, state=None):
        log_mag, phase = self.proj(self.act(x), state).chunk(2, dim=1)  # [B, n_fft/2+1, N] each
        B, N = x.shape[0], x.shape[-1]
        prev = torch.zeros(B, 1, self.hop + int(self.noise), device=x.device) if state is None else state[self.key]
        if self.noise:
            start = prev[:, 0, -1].long()  # frames decoded so far, per stream (a batch's rows differ)
            idx = (start[:, None] + torch.arange(N, device=x.device)) % self.PHASES  # [B, N]
            phase = self.random_phase[idx].transpose(1, 2)  # [B, bins, N]
        mag = torch.exp(log_mag.clamp(max=8.0))
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1).transpose(1, 2) * self.window  # [B, N, n_fft]
        first, second = frames[..., : self.hop], frames[..., self.hop:]
        # Output region k = second half of frame k-1 + first half of frame k.
        out = first + torch.cat([prev[..., :self.hop], second[:, :-1]], dim=1)
        if state is not None:
            tail = second[:, -1:]
            if self.noise:
                tail = torch.cat([tail, ((start + N) % self.PHASES).to(tail.dtype).view(B, 1, 1)], dim=-1)
            state[self.key] = tail
        return out.reshape(B, 1, -1)

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, 1, self.hop + int(self.noise), device=device)


class HarmonicHead(nn.Module):
    """Voiced speech as harmonics of a predicted F0, added to the iSTFT head's output (DDSP's
    harmonic oscillator, Engel et al. 2020; NSF's source for a neural filter).

    Why: the iSTFT frames are 20 ms with a 10 ms hop, so a sinusoid stays continuous across frames
    only if its phase advances by 2*pi*f*hop/sr from one frame to the next. Mel losses do not teach
    that; with constant phases only multiples of 100 Hz come out whole, and without a GAN every
    voice was decoded at a 100 Hz (male) or 200 Hz (female) buzz. Here the phase is integrated from
    F0 sample by sample, so any pitch is continuous by construction; F0 is taught directly
    (`f0_loss` against `yin_f0` of the input) and the mel loss shapes the harmonic amplitudes.

    Per 10 ms control step: F0 (fmin..fmax, log scale), a loudness and a distribution over
    n harmonics. Output region k (the iSTFT head's region k) glides from control k-1 to control k,
    so both heads lag the input by the same hop. Stream state: last F0, last amplitudes, phase."""

    def __init__(self, channels: int, hop: int, sample_rate: int, n_harmonics: int,
                 fmin: float = 50.0, fmax: float = 500.0):
        super().__init__()
        self.hop, self.sr, self.n = hop, sample_rate, n_harmonics
        self.fmin, self.fmax = fmin, fmax
        self.act = Snake(channels)
        self.proj = CausalConv1d(channels, 2 + n_harmonics, 1, init_scale=0.1)
        self.register_buffer("ramp", torch.arange(1, hop + 1) / hop, persistent=False)
        self.register_buffer("k", torch.arange(1, n_harmonics + 1).float().view(1, -1, 1), persistent=False)
        self.key = ""
        self.last_f0 = None  # [B, N] of the last forward: train_codec_dac.py's F0 loss reads it
        # Training only: the true F0 [B, N] (0: unvoiced, or not forced), played instead of the
        # predicted one (DDSP trains on the true F0). Without it the mel loss silences the
        # harmonics while their predicted pitch is still wrong, and they never get a start.
        self.teacher_f0 = None

    def controls(self, x, state=None):
        r = self.proj(self.act(x), state)  # [B, 2 + n, N]
        f0 = self.fmin * (self.fmax / self.fmin) ** torch.sigmoid(r[:, 0])  # [B, N]
        loud = F.softplus(r[:, 1])  # starts at speech level: a quiet start lets the noise branch take all
        amps = loud.unsqueeze(1) * torch.softmax(r[:, 2:], dim=1)  # [B, n, N]
        return f0, amps

    def forward(self, x, state=None):
        f0, amps = self.controls(x, state)
        self.last_f0 = f0
        if self.teacher_f0 is not None:
            f0 = torch.where(self.teacher_f0 > 0, self.teacher_f0.to(f0.dtype), f0)
        B, N = f0.shape
        prev = torch.zeros(B, 2 + self.n, device=x.device, dtype=torch.float64) if state is None else state[self.key]
        prev_f0, prev_amps = prev[:, :1].to(f0.dtype), prev[:, 2:].to(f0.dtype)
        f0_prev = torch.cat([prev_f0, f0[:, :-1]], dim=1)  # control k-1 for every region k
        amps_prev = torch.cat([prev_amps.unsqueeze(-1), amps[..., :-1]], dim=2)
        w = self.ramp  # [hop]
        f0_s = (f0_prev.unsqueeze(-1) * (1 - w) + f0.unsqueeze(-1) * w).reshape(B, N * self.hop)
        amps_s = (amps_prev.unsqueeze(-1) * (1 - w) + amps.unsqueeze(-1) * w).reshape(B, self.n, N * self.hop)
        # F0 is taught by its own loss; the mel loss only shapes amplitudes (its gradient through a
        # phase is a wrapped, oscillating one, which DDSP found does not find the pitch).
        # float64: a chunked stream and one offline pass must integrate to the same phase.
        phase64 = prev[:, 1:2].double() + torch.cumsum(2 * math.pi * f0_s.detach().double() / self.sr, dim=1)
        phase64 = torch.remainder(phase64, 2 * math.pi)
        phase = phase64.to(f0_s.dtype)  # [B, T]
        audible = (self.k * f0_s.detach().unsqueeze(1) < 0.48 * self.sr).to(amps_s.dtype)  # below Nyquist
        out = (amps_s * audible * torch.sin(self.k * phase.unsqueeze(1))).sum(dim=1, keepdim=True)
        if state is not None:  # float64, like the phase it carries
            state[self.key] = torch.cat([f0[:, -1:].double(), phase64[:, -1:], amps[..., -1].double()], dim=1)
        return out

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, 2 + self.n, device=device, dtype=torch.float64)


def yin_f0(pcm, sample_rate: int, hop: int, fmin: float = 60.0, fmax: float = 500.0,
           win: int = 960, threshold: float = 0.3):
    """F0 (Hz) of pcm [B, T] every `hop` samples, frame k centred on sample k*hop; 0 where
    unvoiced. YIN (de Cheveigne and Kawahara 2002): the first lag whose cumulative-mean-normalised
    difference dips under `threshold`, refined to the local minimum. Batched torch, for the
    harmonic head's F0 loss; good on clean speech, as every training target here is."""
    B, T = pcm.shape
    n = T // hop
    tmax = int(sample_rate / fmin)
    x = F.pad(pcm.float(), (win // 2, win // 2 + tmax + hop))
    return yin_frames(x.unfold(-1, win + tmax, hop)[:, :n], sample_rate, fmin, fmax, win, threshold)


def yin_frames(frames, sample_rate: int, fmin: float, fmax: float, win: int, threshold: float = 0.3,
               voicing: float | None = None):
    """YIN on frames [B, n, win + sample_rate / fmin] -> F0 [B, n] (0 where unvoiced). The first
    `win` samples are compared with every lag up to the longest period. `voicing` > threshold
    also calls a frame voiced whose deepest dip is under it (at that dip's lag): a causal window
    that straddles an onset rarely dips under the strict threshold (PROBES-style sweep in DESIGN.md)."""
    tmin, tmax = int(sample_rate / fmax), int(sample_rate / fmin)
    L = frames.shape[-1]
    a = frames[..., :win]
    nfft = 1 << (L + win - 1).bit_length()
    corr = torch.fft.irfft(torch.fft.rfft(frames, nfft).mul(torch.fft.rfft(a, nfft).conj()), nfft)[..., :tmax + 1]
    cs = F.pad(torch.cumsum(frames ** 2, dim=-1), (1, 0))
    lags = torch.arange(tmax + 1, device=frames.device)
    e_tau = cs[..., lags + win] - cs[..., lags]
    d = (cs[..., win:win + 1] + e_tau - 2 * corr).clamp(min=0)  # [B, n, tmax+1]
    cmnd = d[..., 1:] * lags[1:] / torch.cumsum(d[..., 1:], dim=-1).clamp(min=1e-8)  # lag 1..tmax
    cmnd = cmnd[..., tmin - 1:]  # lags tmin..tmax
    below = cmnd < threshold
    deepest = cmnd.argmin(-1) if voicing is not None else torch.zeros_like(below[..., 0], dtype=torch.long)
    first = torch.where(below.any(-1), below.float().argmax(-1), deepest)
    span = 24  # the dip's minimum is within a few lags of its first sample under the threshold
    idx = (first.unsqueeze(-1) + torch.arange(span, device=frames.device)).clamp(max=cmnd.shape[-1] - 1)
    best = first + torch.gather(cmnd, -1, idx).argmin(-1)
    f0 = sample_rate / (best + tmin).float()
    loud = a.pow(2).mean(-1) > 1e-5  # about -50 dBFS
    voiced = below.any(-1) if voicing is None else below.any(-1) | (cmnd.min(-1).values < voicing)
    return torch.where(voiced & loud, f0, torch.zeros_like(f0))


def f0_loss(pred_f0, target):
    """Mean |log2(pred / target)| (octaves) over the control steps where the target (yin_f0 of
    the input) is voiced."""
    target = target[:, :pred_f0.shape[1]]
    voiced = target > 0
    if not voiced.any():
        return pred_f0.sum() * 0.0
    return torch.log2(pred_f0[:, :target.shape[1]][voiced] / target[voiced]).abs().mean()


# --- quantizer -----------------------------------------------------------------------------------

class VectorQuantize(nn.Module):
    """DAC's factorized VQ: project to a few dims, find the nearest L2-normalised code (cosine),
    project back. Low-dimensional normalised lookups keep all codes in use."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_proj = weight_norm(nn.Conv1d(dim, codebook_dim, 1))
        self.out_proj = weight_norm(nn.Conv1d(codebook_dim, dim, 1))
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        # EMA of each code's share of use, relative to uniform use (1.0 = used as often as average).
        self.register_buffer("usage", torch.ones(codebook_size))

    def encode(self, z):  # z [B, D, T] -> indices [B, T], z_e [B, d, T]
        z_e = self.in_proj(z)
        flat = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]), dim=1)
        scores = flat @ F.normalize(self.codebook.weight, dim=1).t()
        return scores.argmax(dim=1).view(z.shape[0], -1), z_e

    def decode(self, indices):  # [B, T] -> [B, D, T]
        return self.out_proj(self.codebook(indices).transpose(1, 2))

    def forward(self, z):
        indices, z_e = self.encode(z)
        z_q = self.codebook(indices).transpose(1, 2)
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="none").mean(dim=(1, 2))
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean(dim=(1, 2))
        z_q = z_e + (z_q - z_e).detach()  # straight-through
        if self.training:
            counts = torch.bincount(indices.flatten(), minlength=self.usage.numel()).float()
            self.usage.mul_(0.99).add_(counts * (self.usage.numel() / indices.numel()), alpha=0.01)
        return self.out_proj(z_q), indices, z_e, commitment, codebook

    @torch.no_grad()
    def restart_dead_codes(self, z_e: torch.Tensor, threshold: float) -> int:
        """Move codes nobody uses onto random recent encoder outputs (the data they should cover)."""
        dead = (self.usage < threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pool = z_e.detach().transpose(1, 2).reshape(-1, z_e.shape[1])
        pick = torch.randint(0, pool.shape[0], (dead.numel(),), device=pool.device)
        self.codebook.weight[dead] = pool[pick] + 1e-3 * torch.randn_like(pool[pick])
        self.usage[dead] = 1.0
        return int(dead.numel())


class ResidualVQ(nn.Module):
    def __init__(self, cfg: CodecConfig, n_codebooks: int | None = None):
        super().__init__()
        n_codebooks = cfg.n_codebooks if n_codebooks is None else n_codebooks
        self.quantizers = nn.ModuleList(
            VectorQuantize(cfg.latent_dim, cfg.codebook_size, cfg.codebook_dim) for _ in range(n_codebooks))
        self.dropout = cfg.quantizer_dropout

    def forward(self, z, n_q: int | None = None):
        """Returns quantized latent, codes [B, K, T], z_e list, commitment and codebook losses.
        In training, a share of the batch uses a random number of codebooks (quantizer dropout)
        so the decoder works at every bitrate."""
        n_total = len(self.quantizers)
        n_q = n_total if n_q is None else n_q
        b = z.shape[0]
        keep = torch.full((b,), n_q, device=z.device)
        if self.training and self.dropout > 0:
            random_k = torch.randint(1, n_total + 1, (b,), device=z.device)
            use_random = torch.rand(b, device=z.device) < self.dropout
            keep = torch.where(use_random, random_k, keep)
        residual, z_q = z, torch.zeros_like(z)
        codes, latents = [], []
        commitment = codebook = z.new_zeros(())
        for i, vq in enumerate(self.quantizers if self.training else self.quantizers[:n_q]):
            q, idx, z_e, c_loss, cb_loss = vq(residual)
            mask = (keep > i).float()
            z_q = z_q + q * mask[:, None, None]
            residual = residual - q
            commitment = commitment + (c_loss * mask).mean()
            codebook = codebook + (cb_loss * mask).mean()
            codes.append(idx)
            latents.append(z_e)
        return z_q, torch.stack(codes, dim=1), latents, commitment, codebook

    def encode(self, z, n_q: int):
        codes, residual = [], z
        for vq in self.quantizers[:n_q]:
            idx, _ = vq.encode(residual)
            residual = residual - vq.decode(idx)
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes):  # [B, K, T] -> [B, D, T]; K may be fewer than n_codebooks
        return sum(self.quantizers[k].decode(codes[:, k]) for k in range(codes.shape[1]))

    @torch.no_grad()
    def init_from_data(self, z, seed: int = 0):
        """Start every stage where the data is (SoundStream/EnCodec start their codebooks from
        k-means of the first batch): stage k projects the residual left by stages < k onto its
        principal directions (in_proj; out_proj maps back), and its codes are random residuals
        of that projection. A random factorized RVQ makes the residual larger at every stage."""
        g = torch.Generator().manual_seed(seed)
        r = z.transpose(1, 2).reshape(-1, z.shape[1]).float()  # [frames, D]
        for vq in self.quantizers:
            d = vq.codebook.weight.shape[1]
            basis = torch.linalg.eigh(r.T @ r / len(r)).eigenvectors[:, -d:]  # [D, d], top variance
            vq.in_proj.weight = basis.T.unsqueeze(-1).contiguous()
            vq.out_proj.weight = basis.unsqueeze(-1).contiguous()
            vq.in_proj.bias.zero_()
            vq.out_proj.bias.zero_()
            pick = torch.randint(0, len(r), (vq.codebook.weight.shape[0],), generator=g)
            vq.codebook.weight.copy_(r[pick] @ basis)
            q = vq.decode(vq.encode(r.T.unsqueeze(0))[0])[0].T  # [frames, D]
            r = r - q


# --- source-filter parts: transmitted pitch, a learnt envelope, DSP synthesis ------------------

def hz_to_mel(f):
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangular bands evenly spaced in (HTK) mel, each row summing to one, so a band's value is
    the mean power per FFT bin under it: the unit the synthesiser turns back into amplitudes.
    Returns (filterbank [n_bands, n_fft/2+1], band centres in mel [n_bands])."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    points = torch.linspace(0, float(hz_to_mel(torch.tensor(sample_rate / 2.0))), n_bands + 2, dtype=torch.float64)
    mel = hz_to_mel(freqs)
    lo, mid, hi = points[:-2, None], points[1:-1, None], points[2:, None]
    fb = torch.minimum((mel - lo) / (mid - lo), (hi - mel) / (hi - mid)).clamp(min=0)
    fb = fb / fb.sum(-1, keepdim=True).clamp(min=1e-9)
    return fb.float(), points[1:-1].float()


class Analysis(nn.Module):
    """The source_filter encoder's causal front end, one row per 10 ms patch k, from samples up to
    the end of patch k only (no look-ahead): log-mel of a Hann window (`analysis_fft`), the same
    power in `envelope_bands` mel bands (the decoder's envelope target), and YIN's F0. In streaming
    the samples before the chunk live in the state (`history` of them) instead of zero padding."""

    EPS = 1e-5  # power floor (about -90 dB under a full-scale sine's bin)

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.hop, self.sr, self.n_fft = cfg.patch_size, cfg.sample_rate, cfg.analysis_fft
        self.fmin, self.fmax = cfg.f0_min, cfg.f0_max
        # 30 ms compared with every lag up to the longest period; strict dip 0.3, voiced under 0.6.
        # Measured against pYIN on 10 val clips (DESIGN.md): 0.92 of its voiced 10 ms frames within
        # 50 cents, against 0.81 for a 20 ms window with the plain 0.3 threshold.
        self.yin_win, self.yin_threshold, self.yin_voicing = 3 * cfg.patch_size, 0.3, 0.6
        self.yin_len = self.yin_win + int(cfg.sample_rate / cfg.f0_min)
        self.history = max(self.n_fft, self.yin_len) - self.hop
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        self.register_buffer("mel_in", mel_filterbank(self.sr, self.n_fft, cfg.encoder_mels)[0], persistent=False)
        self.register_buffer("mel_env", mel_filterbank(self.sr, self.n_fft, cfg.envelope_bands)[0], persistent=False)
        self.key = ""

    def forward(self, pcm, state=None):
        """pcm [B, 1, n * hop] -> log-mel [B, encoder_mels, n], envelope [B, envelope_bands, n]
        (natural log of mean power per bin), F0 [B, n] (Hz, 0 where unvoiced)."""
        x = pcm[:, 0].float()
        prev = x.new_zeros(x.shape[0], self.history) if state is None else state[self.key]
        buf = torch.cat([prev, x], dim=-1)
        if state is not None:
            state[self.key] = buf[:, -self.history:]
        n = x.shape[-1] // self.hop
        end = self.history + self.hop  # the end of patch 0 in buf
        frames = buf[:, end - self.n_fft:].unfold(-1, self.n_fft, self.hop)[:, :n]
        power = torch.fft.rfft(frames * self.window).abs().pow(2)  # [B, n, bins]
        log_mel = torch.log(power @ self.mel_in.T + self.EPS).transpose(1, 2)
        envelope = torch.log(power @ self.mel_env.T + self.EPS).transpose(1, 2)
        f0 = yin_frames(buf[:, end - self.yin_len:].unfold(-1, self.yin_len, self.hop)[:, :n],
                        self.sr, self.fmin, self.fmax, self.yin_win, self.yin_threshold, self.yin_voicing)
        return log_mel, envelope, f0

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.history, device=device)


class PitchQuantizer(nn.Module):
    """F0 and voicing of one frame (4 patches) in one code of `codebook_size` entries: code 0 is
    "unvoiced"; the others are a mean log-F0 on a uniform grid times a slope from a small signed
    set (a straight line through the frame's 4 log-F0 values, least squares over its voiced
    patches). A frame is voiced when at least half its patches are. With 1024 entries and 8
    slopes: 127 means 29 cents apart, 250 bps. No parameters: the grid is fixed, so the code's
    meaning never drifts during training and the S2S model sees a stable pitch stream."""

    MAX_SLOPE = 0.06  # octaves per 10 ms patch at the steepest level (a fast glide)
    OUTLIER = 0.3  # octaves

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.patches = cfg.frame_size // cfg.patch_size
        self.fmin = cfg.f0_min
        self.span = math.log2(cfg.f0_max / cfg.f0_min)
        self.n_means = (cfg.codebook_size - 1) // cfg.pitch_slopes
        self.n_slopes = cfg.pitch_slopes
        half = torch.arange(cfg.pitch_slopes // 2) + 0.5
        levels = self.MAX_SLOPE * (half / (cfg.pitch_slopes // 2)) ** 2  # fine near flat, coarse for glides
        self.register_buffer("slopes", torch.cat([-levels.flip(0), levels]), persistent=False)
        self.register_buffer("x", torch.arange(self.patches) - (self.patches - 1) / 2, persistent=False)

    def encode(self, f0):  # [B, frames * patches] Hz (0 = unvoiced) -> codes [B, frames]
        f = f0.view(f0.shape[0], -1, self.patches)
        voiced = f > 0
        n_voiced = voiced.sum(-1)
        log_f0 = torch.log2(f.clamp(min=self.fmin) / self.fmin)
        # The line goes through the frame's majority: a patch more than OUTLIER octaves from the
        # median of the voiced ones (YIN's octave slips) is left out of the fit, and so takes the
        # line's F0 in the decoder.
        median = torch.where(voiced, log_f0, torch.nan).nanmedian(-1).values
        w = (voiced & ((log_f0 - median.unsqueeze(-1)).abs() < self.OUTLIER)).float()
        sw = w.sum(-1).clamp(min=1)
        mx = (w * self.x).sum(-1) / sw
        my = (w * log_f0).sum(-1) / sw
        dx = (self.x - mx.unsqueeze(-1)) * w
        slope = (dx * (log_f0 - my.unsqueeze(-1))).sum(-1) / (dx * dx).sum(-1).clamp(min=1e-9)
        centre = my - slope * mx  # the line's value at the frame's centre
        mean_idx = torch.round(centre / self.span * (self.n_means - 1)).clamp(0, self.n_means - 1).long()
        slope_idx = (slope.unsqueeze(-1) - self.slopes).abs().argmin(-1)
        code = 1 + mean_idx * self.n_slopes + slope_idx
        return torch.where(n_voiced * 2 >= self.patches, code, torch.zeros_like(code))

    def decode(self, codes):  # [B, frames] -> F0 [B, frames * patches] Hz, 0 where unvoiced
        c = (codes - 1).clamp(min=0)
        centre = (c // self.n_slopes).float() / (self.n_means - 1) * self.span
        log_f0 = centre.unsqueeze(-1) + self.slopes[c % self.n_slopes].unsqueeze(-1) * self.x
        f0 = self.fmin * torch.exp2(log_f0) * (codes > 0).unsqueeze(-1)
        return f0.reshape(codes.shape[0], -1)


class SourceFilterSynth(nn.Module):
    """Harmonic-plus-noise synthesis from 10 ms controls (DDSP, hn-NSF), no learnt weights.

    Per control step k: F0 and two log-power envelopes in mel bands, one for the harmonic part
    and one for the noise, in the analysis's unit (mean power per bin of an `analysis_fft` Hann
    STFT), so an envelope measured on speech is resynthesised at its level with no training:
    - harmonic h of F0 gets the amplitude whose STFT power, spread over F0's spacing, is the
      envelope at h*F0: A^2 = 32 F0 P / (3 N sr);
    - noise is shaped per 20 ms Hann frame (random phase, magnitude from the envelope, 50 %
      overlap-add; ISTFTHead's noise): |M|^2 = 32 n P / (9 N) for an n-point frame.
    Output region k glides from control k-1 to control k (amplitudes and F0 linearly, the phase
    integrated per sample in float64, so pitch is right by construction and a stream equals one
    pass). Stream state: last F0, phase, last harmonic amplitudes, the noise overlap and a frame
    counter for the random phases."""

    PHASES = 1009  # noise frames before the random phases repeat (10 s; prime)

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.hop, self.sr, self.n = cfg.patch_size, cfg.sample_rate, cfg.source_harmonics
        n_fft, bands = cfg.analysis_fft, cfg.envelope_bands
        _, centres = mel_filterbank(self.sr, n_fft, bands)
        self.mel0, self.mel_step, self.bands = float(centres[0]), float(centres[1] - centres[0]), bands
        self.harmonic_scale = 32.0 / (3.0 * n_fft * self.sr)
        self.noise_scale = 32.0 * 2 * self.hop / (9.0 * n_fft)
        bin_mel = hz_to_mel(torch.linspace(0, self.sr / 2, self.hop + 1))
        self.register_buffer("noise_interp", self._interp_matrix(bin_mel), persistent=False)  # [bins, bands]
        self.register_buffer("k", torch.arange(1, self.n + 1).float().view(1, -1, 1), persistent=False)
        self.register_buffer("ramp", torch.arange(1, self.hop + 1) / self.hop, persistent=False)
        self.register_buffer("window", torch.hann_window(2 * self.hop, periodic=True), persistent=False)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("random_phase", 2 * math.pi * torch.rand(self.PHASES, self.hop + 1, generator=g),
                             persistent=False)
        self.key = ""

    def _position(self, mel):
        """Fractional band index of a mel value, and the lower band with its interpolation weight."""
        pos = ((mel - self.mel0) / self.mel_step).clamp(0, self.bands - 1)
        i0 = pos.floor().clamp(max=self.bands - 2)
        return i0.long(), pos - i0

    def _interp_matrix(self, mel):
        i0, w = self._position(mel)
        m = torch.zeros(mel.numel(), self.bands)
        m[torch.arange(mel.numel()), i0] = 1 - w
        m[torch.arange(mel.numel()), i0 + 1] += w
        return m

    def harmonic_amplitudes(self, f0, log_harmonic):  # [B, N], [B, bands, N] -> [B, n, N]
        freqs = self.k * f0.unsqueeze(1)  # [B, n, N]
        i0, w = self._position(hz_to_mel(freqs))
        lo = torch.gather(log_harmonic, 1, i0)
        hi = torch.gather(log_harmonic, 1, i0 + 1)
        power = torch.exp((lo + w * (hi - lo)).clamp(max=20.0))
        audible = (freqs < 0.45 * self.sr).to(power.dtype)  # below Nyquist, with a margin for the glide
        return torch.sqrt(self.harmonic_scale * f0.unsqueeze(1) * power + 1e-12) * audible

    def forward(self, f0, log_harmonic, log_noise, state=None):
        B, N = f0.shape
        hop, n = self.hop, self.n
        prev = torch.zeros(B, 3 + n + hop, dtype=torch.float64, device=f0.device) if state is None else state[self.key]
        # Harmonics: controls k-1 -> k glide across region k.
        amps = self.harmonic_amplitudes(f0, log_harmonic)
        f0_prev = torch.cat([prev[:, :1].to(f0.dtype), f0[:, :-1]], dim=1)
        amps_prev = torch.cat([prev[:, 2:2 + n].to(amps.dtype).unsqueeze(-1), amps[..., :-1]], dim=2)
        w = self.ramp
        f0_s = (f0_prev.unsqueeze(-1) * (1 - w) + f0.unsqueeze(-1) * w).reshape(B, N * hop)
        amps_s = (amps_prev.unsqueeze(-1) * (1 - w) + amps.unsqueeze(-1) * w).reshape(B, n, N * hop)
        phase64 = prev[:, 1:2] + torch.cumsum(2 * math.pi * f0_s.double() / self.sr, dim=1)
        phase64 = torch.remainder(phase64, 2 * math.pi)
        harmonic = (amps_s * torch.sin(self.k * phase64.to(f0.dtype).unsqueeze(1))).sum(dim=1)  # [B, T]
        # Noise: a random-phase frame per control, shaped by the noise envelope, overlap-added.
        start = prev[:, -1].long()  # frames synthesised so far, per stream (a batch's rows differ)
        magnitude = torch.sqrt(self.noise_scale * torch.exp((self.noise_interp @ log_noise).clamp(max=20.0)))
        idx = (start[:, None] + torch.arange(N, device=f0.device)) % self.PHASES  # [B, N]
        phase = self.random_phase[idx].transpose(1, 2)  # [B, bins, N]
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        frames = torch.fft.irfft(spec, n=2 * hop, dim=1).transpose(1, 2) * self.window  # [B, N, 2 hop]
        first, second = frames[..., :hop], frames[..., hop:]
        noise = first + torch.cat([prev[:, None, 2 + n:2 + n + hop].to(frames.dtype), second[:, :-1]], dim=1)
        if state is not None:
            counter = ((start + N) % self.PHASES).to(torch.float64).view(B, 1)
            state[self.key] = torch.cat([f0[:, -1:].double(), phase64[:, -1:], amps[..., -1].double(),
                                         second[:, -1].double(), counter], dim=1)
        return (harmonic + noise.reshape(B, -1)).unsqueeze(1)

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, 3 + self.n + self.hop, dtype=torch.float64, device=device)


class SourceFilterDecoder(nn.Module):
    """Codes -> controls -> SourceFilterSynth. The envelope codebooks' latent runs through causal
    residual units at 25 Hz, is upsampled to the 10 ms control rate, meets the transmitted F0 and
    voicing there, and a 1x1 head reads four things per mel band: the spectral envelope, the
    harmonic share (a voicing mix per band), and log-gain corrections for the harmonic and the
    noise part.

    It starts as a correct signal-processing synthesiser (PROBES.md section 2: from scratch the
    harmonic path died): the envelope is read straight out of the latent (Codec._analyse puts
    the measured one there), the corrections start at zero, voiced patches put 90 % of the
    envelope's power into harmonics and unvoiced ones all of it into noise. So the untrained
    codec is the classic vocoder of the quantized envelope; training corrects it where the
    spectral and envelope losses say so."""

    VOICED_MIX, UNVOICED_MIX = 2.2, -4.0  # harmonic share logits at initialisation (0.90, 0.02)

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        c0, c1 = cfg.channels[0], cfg.channels[-1]
        self.bands, self.fmin, self.span = cfg.envelope_bands, cfg.f0_min, math.log2(cfg.f0_max / cfg.f0_min)
        self.inp = CausalConv1d(cfg.latent_dim, c1, 3)
        self.low = Stage(c1, cfg.res_units, cfg.kernel_sizes[-1])
        self.up = Upsample(c1, c0, cfg.strides[0])
        self.pitch_in = CausalConv1d(2, c0, 1)
        self.high = Stage(c0, cfg.res_units, cfg.kernel_sizes[0])
        self.act = Snake(c0)
        self.head = nn.Conv1d(c0, 4 * self.bands, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[:self.bands].normal_(std=0.1 / math.sqrt(c0))
            self.head.bias.zero_()
        self.synth = SourceFilterSynth(cfg)
        self.patches = cfg.frame_size // cfg.patch_size
        if cfg.latent_dim != self.bands * self.patches:
            raise ValueError(f"codec.decoder=source_filter carries the envelope in the latent: latent_dim must be "
                             f"envelope_bands x patches per frame = {self.bands * self.patches}, not {cfg.latent_dim}")
        self.key = ""
        self.last_envelope = None  # [B, bands, N] of the last forward: the trainer's envelope loss

    ENV_SHIFT, ENV_SCALE = 4.0, 0.25  # log power per bin (about -12..6) <-> unit range in the latent

    def stack(self, envelope):  # [B, bands, frames * patches] -> [B, bands * patches, frames]
        B, C, N = envelope.shape
        e = (envelope + self.ENV_SHIFT) * self.ENV_SCALE
        return e.view(B, C, N // self.patches, self.patches).transpose(2, 3).reshape(B, C * self.patches, -1)

    def unstack(self, z):  # the inverse of stack
        B, _, T = z.shape
        e = z.view(B, self.bands, self.patches, T).transpose(2, 3).reshape(B, self.bands, T * self.patches)
        return e / self.ENV_SCALE - self.ENV_SHIFT

    def forward(self, z, f0, state=None):
        """z [B, latent, frames], f0 [B, patches] (Hz, 0 = unvoiced) -> pcm [B, 1, patches * hop]."""
        voiced = f0 > 0
        # Unvoiced patches hold the last voiced F0, so a harmonic the network keeps there (and the
        # glide into the next voiced patch) stays on the speaker's pitch.
        last = torch.full_like(f0[:, :1], 100.0) if state is None else state[self.key]
        idx = torch.where(voiced, torch.arange(f0.shape[1], device=f0.device), -1).cummax(dim=1).values
        held = torch.where(idx >= 0, torch.gather(f0, 1, idx.clamp(min=0)), last)
        if state is not None:
            state[self.key] = held[:, -1:]
        pitch = torch.stack([2 * torch.log2(held / self.fmin) / self.span - 1, voiced.float()], dim=1)
        x = self.up(self.low(self.inp(z, state), state), state)
        x = self.high(x + self.pitch_in(pitch, state), state)
        envelope, mix, harmonic_gain, noise_gain = self.head(self.act(x)).chunk(4, dim=1)
        envelope = envelope + self.unstack(z)  # the envelope carried in the latent, corrected
        self.last_envelope = envelope
        mix = mix + torch.where(voiced, self.VOICED_MIX, self.UNVOICED_MIX).unsqueeze(1)
        log_harmonic = envelope + F.logsigmoid(mix) + harmonic_gain
        log_noise = envelope + F.logsigmoid(-mix) + noise_gain
        return self.synth(held, log_harmonic, log_noise, state)

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.full((batch, 1), 100.0, device=device)


# --- the codec ------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """pcm [B, 1, T] -> latent (the istft codec: a learnt 20 ms filterbank reads the waveform), or
    with `features` > 0, a [B, features, T / patch_size] analysis (the source_filter codec's log-mel)."""

    def __init__(self, cfg: CodecConfig, features: int = 0):
        super().__init__()
        ch = cfg.channels
        if features:
            self.patch = CausalConv1d(features, ch[0], 3)
        else:
            self.patch = CausalConv1d(1, ch[0], 2 * cfg.patch_size, stride=cfg.patch_size)
        layers = []
        for i, stride in enumerate(cfg.strides):
            layers += [Stage(ch[i], cfg.res_units, cfg.kernel_sizes[i]), Downsample(ch[i], ch[i + 1], stride)]
        layers += [Stage(ch[-1], cfg.res_units, cfg.kernel_sizes[-1])]
        self.layers = nn.ModuleList(layers)
        self.act = Snake(ch[-1])
        # Beside the source_filter codec's envelope skip the learnt part starts as a small residual.
        self.out = CausalConv1d(ch[-1], cfg.latent_dim, 3, init_scale=0.1 if features else 1.0)

    def forward(self, pcm, state=None):  # [B, 1, T] -> [B, latent, T / frame_size]
        x = self.patch(pcm, state)  # (or [B, features, T / patch_size] analysis)
        for layer in self.layers:
            x = layer(x, state)
        return self.out(self.act(x), state)


class Decoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        ch = cfg.channels
        self.inp = CausalConv1d(cfg.latent_dim, ch[-1], 3)
        layers = []
        for i in reversed(range(len(cfg.strides))):
            layers += [Stage(ch[i + 1], cfg.res_units, cfg.kernel_sizes[i + 1]), Upsample(ch[i + 1], ch[i], cfg.strides[i])]
        layers += [Stage(ch[0], cfg.res_units, cfg.kernel_sizes[0])]
        self.layers = nn.ModuleList(layers)
        self.head = ISTFTHead(ch[0], cfg.patch_size, noise=cfg.harmonics > 0)
        self.harmonic = HarmonicHead(ch[0], cfg.patch_size, cfg.sample_rate, cfg.harmonics) if cfg.harmonics else None

    def forward(self, z, state=None):  # [B, latent, T] -> [B, 1, T * frame_size]
        x = self.inp(z, state)
        for layer in self.layers:
            x = layer(x, state)
        y = self.head(x, state)
        return y if self.harmonic is None else y + self.harmonic(x, state)


class Codec(nn.Module):
    """Both codecs of this module behind one API; `cfg.decoder` picks one.

    istft: pcm -> Encoder -> RVQ (all codebooks) -> Decoder (iSTFT head).
    source_filter: pcm -> Analysis (causal log-mel, envelope, YIN F0 per 10 ms)
        F0  -> PitchQuantizer -> codebook 0 (contour + voicing of the frame)
        log-mel -> Encoder -> RVQ -> codebooks 1.. (the envelope and whatever else the loss wants)
        -> SourceFilterDecoder (transmitted F0 + learnt filters -> harmonic + noise synthesis).
    """

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        if cfg.decoder not in ("istft", "source_filter"):
            raise ValueError(f"codec.decoder must be istft or source_filter, not {cfg.decoder!r}")
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.frame_size = cfg.frame_size
        self.n_codebooks = cfg.n_codebooks
        self.source_filter = cfg.decoder == "source_filter"
        if self.source_filter:
            if cfg.pitch_codebooks != 1 or cfg.n_codebooks < 2:
                raise ValueError("codec.decoder=source_filter needs pitch_codebooks=1 and n_codebooks >= 2")
            # Output region k glides from control k-1 to k, and control k describes a window that
            # ends with patch k: its centre lies about `delay_patches` patches back (DESIGN.md).
            self.delay = cfg.patch_size * cfg.delay_patches
            self.analysis = Analysis(cfg)
            self.pitch = PitchQuantizer(cfg)
            self.encoder = Encoder(cfg, features=cfg.encoder_mels)
            self.quantizer = ResidualVQ(cfg, cfg.n_codebooks - cfg.pitch_codebooks)
            self.decoder = SourceFilterDecoder(cfg)
        else:
            self.delay = cfg.patch_size  # decoder output lags by one iSTFT hop (see module docstring)
            self.encoder = Encoder(cfg)
            self.quantizer = ResidualVQ(cfg)
            self.decoder = Decoder(cfg)
        self.last_envelope = None  # source_filter training: (decoded, analysed) envelopes of the last pass
        self._stateful = []
        for name, m in self.named_modules():
            if isinstance(m, (CausalConv1d, ISTFTHead, HarmonicHead, Analysis, SourceFilterSynth, SourceFilterDecoder)):
                m.key = name
                self._stateful.append(m)

    # source_filter pieces, shared by the offline and the streaming paths ----------------------
    LOG_MEL_SHIFT, LOG_MEL_SCALE = 4.0, 0.25  # log-mel of speech (about -12..8) to unit scale

    def _analyse(self, pcm, state=None):
        """-> (encoder latent, pitch codes [B, frames], analysed envelope).

        The latent starts as the frame's own envelope (its 4 patches x envelope_bands values,
        scaled to unit range) plus a small learnt residual, and SourceFilterDecoder reads the
        envelope straight back out of it: at initialisation the codec is a vector-quantized
        vocoder of the measured envelope (PROBES.md: start from the DSP answer), and the RVQ
        and both networks learn from there."""
        log_mel, envelope, f0 = self.analysis(pcm, state)
        z = self.encoder((log_mel + self.LOG_MEL_SHIFT) * self.LOG_MEL_SCALE, state)
        return z + self.decoder.stack(envelope), self.pitch.encode(f0), envelope

    def _synthesise(self, codes, state=None):
        """codes [B, K, frames] (codebook 0: pitch) -> pcm; K = 1 decodes an average envelope."""
        if codes.shape[1] > 1:
            z = self.quantizer.decode(codes[:, 1:])
        else:
            z = torch.zeros(codes.shape[0], self.cfg.latent_dim, codes.shape[-1], device=codes.device)
        return self.decoder(z, self.pitch.decode(codes[:, 0]), state)

    # offline --------------------------------------------------------------------------------
    def forward(self, pcm, vq_mix: float = 1.0):
        """Training pass. vq_mix < 1 blends the continuous latent into the decoder's input (the
        VQ warm-up). Returns audio [B, 1, T] (delayed by `delay`), codes and the VQ losses."""
        if self.source_filter:
            z, pitch_codes, envelope = self._analyse(pcm)
        else:
            z = self.encoder(pcm)
        z_q, codes, latents, commitment, codebook = self.quantizer(z)
        if vq_mix < 1.0:
            z_q = vq_mix * z_q + (1.0 - vq_mix) * z
        if not self.source_filter:
            return self.decoder(z_q), codes, latents, commitment, codebook
        y = self.decoder(z_q, self.pitch.decode(pitch_codes))
        self.last_envelope = (self.decoder.last_envelope, envelope)
        return y, torch.cat([pitch_codes[:, None], codes], dim=1), latents, commitment, codebook

    def _pad(self, pcm):
        if pcm.dim() == 1:
            pcm = pcm[None, None]
        elif pcm.dim() == 2:
            pcm = pcm[:, None]
        rem = (-pcm.shape[-1]) % self.frame_size
        return F.pad(pcm, (0, rem))

    def _encode(self, pcm, n_q, state=None):
        n_q = n_q or self.n_codebooks
        if not self.source_filter:
            return self.quantizer.encode(self.encoder(pcm, state), n_q)
        z, pitch_codes, _ = self._analyse(pcm, state)
        if n_q == 1:
            return pitch_codes[:, None]
        return torch.cat([pitch_codes[:, None], self.quantizer.encode(z, n_q - 1)], dim=1)

    def _decode(self, codes, state=None):
        if self.source_filter:
            return self._synthesise(codes, state)
        return self.decoder(self.quantizer.decode(codes), state)

    @torch.no_grad()
    def encode(self, pcm, n_q: int | None = None):
        """pcm [T], [B, T] or [B, 1, T] (zero-padded to whole frames) -> codes [B, K, frames]."""
        return self._encode(self._pad(pcm), n_q)

    @torch.no_grad()
    def decode(self, codes):
        """codes [B, K, frames] -> pcm [B, 1, frames * frame_size] (lagging the input by `delay`)."""
        return self._decode(codes)

    def latent(self, pcm):
        """The continuous encoder output [B, latent, frames]: an S2S input option."""
        if self.source_filter:
            return self._analyse(self._pad(pcm))[0]
        return self.encoder(self._pad(pcm))

    # streaming -------------------------------------------------------------------------------
    def init_state(self, batch: int = 1, device=None) -> dict:
        return {m.key: m.init_state(batch, device) for m in self._stateful}

    @torch.no_grad()
    def encode_step(self, pcm_frame, state: dict, n_q: int | None = None):
        """pcm_frame [B, 1, n * frame_size] -> (codes [B, K, n], new state)."""
        state = dict(state)
        return self._encode(pcm_frame, n_q, state), state

    @torch.no_grad()
    def decode_step(self, codes, state: dict):
        """codes [B, K, n] -> (pcm [B, 1, n * frame_size], new state)."""
        state = dict(state)
        return self._decode(codes, state), state

    def remove_weight_norm(self):
        """Fold weight norm into plain weights: same outputs, fewer ops per streaming step."""
        for m in self.modules():
            if isinstance(m, nn.Conv1d) and parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return self


# --- checkpoints -------------------------------------------------------------------------------

def load(path=None, device="cpu", inference: bool = True) -> Codec:
    """The shipped codec (no path) or any exported one: safetensors + JSON config beside it."""
    path = Path(path) if path else SHIPPED
    if not path.exists():
        raise FileNotFoundError(f"codec checkpoint not found: {path} (train one with train_codec_dac.py)")
    cfg_path = config_json_path(path)
    if not cfg_path.exists():
        raise FileNotFoundError(f"codec config not found beside the checkpoint: {cfg_path}")
    import json
    cfg: Config = from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    model = Codec(cfg.codec)
    model.load_state_dict(load_safetensors(path), strict=True)
    model.to(device).eval()
    if inference:
        model.remove_weight_norm()
    return model


# --- CLI -----------------------------------------------------------------------------------------

def _read(path, sr):
    from audio_io import load_audio
    return torch.from_numpy(load_audio(path, sr))


def main(argv=None):
    p = argparse.ArgumentParser(description="Telugu streaming codec: round trip, encode, decode")
    sub = p.add_subparsers(dest="cmd", required=True)
    rt = sub.add_parser("roundtrip", help="encode and decode a file (any rate/channels; output 24 kHz)")
    rt.add_argument("inp"), rt.add_argument("out")
    enc = sub.add_parser("encode", help="audio file -> codes file (.npz)")
    enc.add_argument("inp"), enc.add_argument("out")
    dec = sub.add_parser("decode", help="codes file (.npz) -> 24 kHz WAV")
    dec.add_argument("inp"), dec.add_argument("out")
    for s in (rt, enc, dec):
        s.add_argument("--checkpoint", help="codec .safetensors (default: the shipped one)")
        s.add_argument("--codebooks", type=int, help="use the first K codebooks (bitrate = K x 250 bps)")
    args = p.parse_args(argv)
    from audio_io import AudioError, save_wav

    try:
        codec = load(args.checkpoint)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    k = args.codebooks or codec.n_codebooks
    if not 1 <= k <= codec.n_codebooks:
        sys.exit(f"error: --codebooks must be between 1 and {codec.n_codebooks}")
    try:
        if args.cmd in ("roundtrip", "encode"):
            pcm = _read(args.inp, codec.sample_rate)
            n = len(pcm)
            # One extra frame of silence so the decoder's last `delay` samples are flushed too.
            codes = codec.encode(F.pad(pcm, (0, codec.frame_size)), k)
            if args.cmd == "encode":
                np.savez_compressed(args.out, codes=codes[0].numpy().astype(np.int16), n_samples=n,
                                    sample_rate=codec.sample_rate)
                bps = k * math.log2(codec.cfg.codebook_size) * codec.sample_rate / codec.frame_size
                print(f"{args.out}: {codes.shape[-1]} frames x {k} codebooks ({bps:.0f} bps)")
                return
        else:
            data = np.load(args.inp)
            codes = torch.from_numpy(data["codes"].astype(np.int64))[None]
            n = int(data["n_samples"])
        audio = codec.decode(codes)[0, 0, codec.delay:codec.delay + n]
        save_wav(args.out, audio.numpy(), codec.sample_rate)
        print(f"{args.out}: {len(audio) / codec.sample_rate:.2f} s at {codec.sample_rate} Hz, {k} codebooks")
    except (AudioError, FileNotFoundError, KeyError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
