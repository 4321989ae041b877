"""Speaker encoder and the agent's voice bank.

A lean ECAPA-TDNN (Desplanques et al., 2020) on log-mel: a TDNN stem, three SE-Res2 blocks with
growing dilation, multi-layer feature aggregation and attentive statistics pooling, projected to
an L2-normalised embedding. Trained by train_speakers.py with an additive angular margin softmax
(the head lives there: it is training-only). The voice bank holds the agent's named voices, each
the mean embedding of its enrolment utterances; the S2S model is conditioned on one of them.

    python speaker_embeddings.py embed FILE.wav
    python speaker_embeddings.py compare A.wav B.wav
    python speaker_embeddings.py bench            # ms per second of audio on one thread
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint_io import load_safetensors
from config import ROOT, SpeakerConfig, config_json_path, from_dict

DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "speaker_encoder.safetensors"
DEFAULT_VOICE_BANK = ROOT / "checkpoints" / "voice_bank.json"


# --- building blocks ------------------------------------------------------------------------------

class LogMel(nn.Module):
    """25 ms / 10 ms log-mel with per-utterance mean removal (cepstral mean normalisation), so a
    fixed channel colouration (microphone, codec) shifts no embedding."""

    def __init__(self, cfg: SpeakerConfig):
        super().__init__()
        import librosa

        self.n_fft = 512
        self.win_length = cfg.sample_rate * 25 // 1000
        self.hop_length = cfg.sample_rate * 10 // 1000
        mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=self.n_fft, n_mels=cfg.n_mels,
                                  fmin=20.0, fmax=cfg.sample_rate / 2 - 400)
        # Derived from the config, so not part of the shipped weights.
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, n_mels, frames)
        with torch.autocast(pcm.device.type, enabled=False):
            spec = torch.stft(pcm.float(), self.n_fft, self.hop_length, self.win_length, self.window,
                              center=True, pad_mode="reflect", return_complex=True)
            power = spec.real.square() + spec.imag.square()
            logmel = torch.log(self.mel_basis @ power + 1e-6)
            return logmel - logmel.mean(dim=-1, keepdim=True)


class ConvBlock(nn.Sequential):
    """Conv1d -> ReLU -> BatchNorm, the TDNN layer of ECAPA."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(c_out),
        )


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.down = nn.Conv1d(channels, bottleneck, 1)
        self.up = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x):
        s = x.mean(dim=-1, keepdim=True)
        return x * torch.sigmoid(self.up(F.relu(self.down(s))))


class SERes2Block(nn.Module):
    """1x1 conv, Res2 dilated convs over `scale` channel groups (each group sees the previous
    group's output: a growing receptive field at the cost of one small conv each), 1x1 conv, SE,
    residual."""

    def __init__(self, channels: int, dilation: int, scale: int = 4, kernel_size: int = 3):
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.pre = ConvBlock(channels, channels)
        self.convs = nn.ModuleList(ConvBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))
        self.post = ConvBlock(channels, channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x):
        groups = self.pre(x).chunk(self.scale, dim=1)
        out, y = [groups[0]], None
        for conv, g in zip(self.convs, groups[1:]):
            y = conv(g if y is None else g + y)
            out.append(y)
        return x + self.se(self.post(torch.cat(out, dim=1)))


class AttentiveStatsPool(nn.Module):
    """Weighted mean and standard deviation over time, the weights from a small attention net that
    also sees the utterance's global mean and std (ECAPA's context-dependent pooling)."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv1d(channels * 3, bottleneck, 1), nn.ReLU(inplace=True), nn.BatchNorm1d(bottleneck),
            nn.Tanh(), nn.Conv1d(bottleneck, channels, 1))

    @staticmethod
    def _stats(x, w):
        mean = (x * w).sum(dim=-1)
        std = ((x.square() * w).sum(dim=-1) - mean.square()).clamp(min=1e-5).sqrt()
        return mean, std

    def forward(self, x):  # (B, C, T) -> (B, 2C)
        uniform = torch.full_like(x[:, :1], 1.0 / x.shape[-1])
        mean, std = self._stats(x, uniform)
        context = torch.cat([x, mean.unsqueeze(-1).expand_as(x), std.unsqueeze(-1).expand_as(x)], dim=1)
        w = torch.softmax(self.attention(context), dim=-1)
        mean, std = self._stats(x, w)
        return torch.cat([mean, std], dim=1)


# --- the encoder ----------------------------------------------------------------------------------

class SpeakerEncoder(nn.Module):
    """16 kHz waveform (B, T) -> L2-normalised embedding (B, embed_dim)."""

    dilations = (2, 3, 4)

    def __init__(self, cfg: SpeakerConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.features = LogMel(cfg)
        self.stem = ConvBlock(cfg.n_mels, c, kernel_size=5)
        self.blocks = nn.ModuleList(SERes2Block(c, d) for d in self.dilations)
        self.aggregate = ConvBlock(c * len(self.dilations), c * len(self.dilations))
        self.pool = AttentiveStatsPool(c * len(self.dilations))
        self.pool_norm = nn.BatchNorm1d(c * len(self.dilations) * 2)
        self.project = nn.Linear(c * len(self.dilations) * 2, cfg.embed_dim)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        """Un-normalised embedding (the AAM head normalises; callers want `embed`)."""
        x = self.stem(self.features(pcm))
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
        x = self.aggregate(torch.cat(skips, dim=1))
        return self.project(self.pool_norm(self.pool(x)))

    @torch.inference_mode()
    def embed_tensor(self, pcm: torch.Tensor) -> torch.Tensor:
        """(B, T) at the encoder's rate -> (B, embed_dim), unit length."""
        return F.normalize(self(pcm).float(), dim=-1)

    def embed(self, pcm: np.ndarray, sr: int) -> np.ndarray:
        """One utterance, any sample rate -> unit-length float32 vector."""
        from audio_io import resample, to_mono

        pcm = resample(to_mono(pcm), sr, self.sample_rate)
        min_len = self.features.win_length  # at least one analysis window
        if len(pcm) < min_len:
            pcm = np.pad(pcm, (0, min_len - len(pcm)))
        device = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(pcm)).to(device).unsqueeze(0)
        return self.embed_tensor(x)[0].cpu().numpy()

    def embed_file(self, path) -> np.ndarray:
        from audio_io import load_audio

        return self.embed(load_audio(path, self.sample_rate), self.sample_rate)

    @property
    def threshold(self) -> float:
        return self.cfg.threshold


def similarity(a, b) -> float:
    """Cosine similarity of two embeddings (numpy or torch; need not be normalised)."""
    a = torch.as_tensor(np.asarray(a, dtype=np.float32)).flatten()
    b = torch.as_tensor(np.asarray(b, dtype=np.float32)).flatten()
    return float(F.cosine_similarity(a, b, dim=0))


def load(path=None, device="cpu") -> SpeakerEncoder:
    """The shipped encoder (or `path`: a .safetensors with its .json config beside it), eval mode."""
    path = Path(path) if path else DEFAULT_CHECKPOINT
    cfg_path = config_json_path(path)
    if not path.exists() or not cfg_path.exists():
        raise FileNotFoundError(f"speaker encoder checkpoint {path} (+ {cfg_path.name}) not found; "
                                "train one with train_speakers.py")
    # Only the speaker section: the rest of the saved Config may predate later changes elsewhere.
    saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg = from_dict({"speaker": saved["speaker"]})
    model = SpeakerEncoder(cfg.speaker)
    model.load_state_dict(load_safetensors(path))
    return model.to(device).eval()


# --- the voice bank -------------------------------------------------------------------------------

@dataclass
class Voice:
    name: str
    gender: str
    source: str  # where the voice comes from: "telugu_tts:<variant>", a corpus name, ...
    enrolment: list[str]  # the utterances averaged into the embedding
    embedding: list[float]


class VoiceBank:
    """The agent's named voices, saved as JSON (checkpoints/voice_bank.json)."""

    def __init__(self, voices: list[Voice] | None = None, encoder: str = ""):
        self.voices = {v.name: v for v in voices or []}
        self.encoder = encoder  # the checkpoint the embeddings were made with

    @classmethod
    def load(cls, path=None) -> "VoiceBank":
        path = Path(path) if path else DEFAULT_VOICE_BANK
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls([Voice(**v) for v in data["voices"]], data.get("encoder", ""))

    def save(self, path=None) -> None:
        path = Path(path) if path else DEFAULT_VOICE_BANK
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"encoder": self.encoder,
                "voices": [dict(v.__dict__, embedding=[round(x, 6) for x in v.embedding])
                           for v in self.voices.values()]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def add(self, voice: Voice) -> None:
        self.voices[voice.name] = voice

    def names(self) -> list[str]:
        return list(self.voices)

    def embedding(self, name: str) -> torch.Tensor:
        if name not in self.voices:
            raise KeyError(f"no voice '{name}' in the bank (voices: {', '.join(self.voices)})")
        return torch.tensor(self.voices[name].embedding, dtype=torch.float32)

    def identify(self, emb) -> tuple[str, float]:
        """The closest voice and its cosine similarity."""
        scores = {name: similarity(emb, v.embedding) for name, v in self.voices.items()}
        best = max(scores, key=scores.get)
        return best, scores[best]


def mean_embedding(embeddings) -> np.ndarray:
    """A voice's embedding: the normalised mean of its utterances' unit embeddings."""
    m = np.mean(np.stack(embeddings), axis=0)
    return (m / (np.linalg.norm(m) + 1e-12)).astype(np.float32)


# --- command line ---------------------------------------------------------------------------------

def bench(model: SpeakerEncoder, seconds: float = 1.0, repeats: int = 50) -> tuple[float, float]:
    """Milliseconds to embed `seconds` of audio on the current threads: (median, fastest) of
    `repeats`; on a shared machine the fastest run is the one nothing else interrupted."""
    pcm = torch.randn(1, int(seconds * model.sample_rate)) * 0.1
    for _ in range(5):
        model.embed_tensor(pcm)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.embed_tensor(pcm)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)), 1000 * float(np.min(times))


def run(args) -> None:
    model = load(args.checkpoint)
    if args.command == "embed":
        print(json.dumps([round(float(x), 6) for x in model.embed_file(args.audio)]))
    elif args.command == "compare":
        score = similarity(model.embed_file(args.audio_a), model.embed_file(args.audio_b))
        verdict = "same" if score >= model.threshold else "different"
        print(f"similarity {score:.4f}  threshold {model.threshold:.4f}  -> {verdict} speaker")
    elif args.command == "identify":
        name, score = VoiceBank.load(args.voice_bank).identify(model.embed_file(args.audio))
        print(f"{name} {score:.4f}")
    elif args.command == "bench":
        n_params = sum(p.numel() for p in model.parameters())
        median, fastest = bench(model, args.seconds)
        print(f"{n_params / 1e6:.2f} M params: {median:.2f} ms (fastest {fastest:.2f} ms) to embed "
              f"{args.seconds:g} s of audio on {torch.get_num_threads()} thread(s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help=f"encoder .safetensors (default {DEFAULT_CHECKPOINT.relative_to(ROOT)})")
    parser.add_argument("--threads", type=int, default=1)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("embed", help="print the embedding of a file as JSON")
    p.add_argument("audio")
    p = sub.add_parser("compare", help="cosine similarity of two files and same/different")
    p.add_argument("audio_a")
    p.add_argument("audio_b")
    p = sub.add_parser("identify", help="closest voice in the voice bank")
    p.add_argument("audio")
    p.add_argument("--voice_bank", help="default checkpoints/voice_bank.json")
    p = sub.add_parser("bench", help="time to embed audio on the given threads")
    p.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:
        run(args)
    except (FileNotFoundError, KeyError, ValueError) as e:  # AudioError is a ValueError
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
