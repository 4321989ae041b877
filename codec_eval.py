"""How good is the codec? Objective scores against the speech codec everyone already has: Opus.

For every clip, the codec round trip at K codebooks (K x log2(codebook_size) bits per frame) and
the libopus round trip (through PyAV) at a few bitrates are scored against the reference with
PESQ-wb, STOI, a log-mel distance, SI-SDR and pitch: accuracy (pYIN's F0 of the decoded clip within
50 cents of the reference's, on the reference's voiced frames), F0 RMSE in cents (frames voiced in
both) and the voicing error (share of frames whose voiced/unvoiced call differs). Means, standard
deviations and counts per system go into one JSON structure:

    {"clips": N, "duration_s": ..., "sample_rate": 24000,
     "systems": {"codec_8cb_2000bps": {"kind": "codec", "kbps": 2.0, "stoi": {"mean", "std", "n"}, ...},
                 "opus_8kbps": {"kind": "opus", "kbps": 8.0, "kbps_measured": 7.6, ...}},
     "clip_names": [...], "opus": {...}}

Alignment. Every metric here but PESQ compares sample against sample, so a shift of a sample or
two is scored as distortion (SI-SDR most: Opus at 32 kbps drops from 17 to 11 dB one sample off).
Two steps, the first per system, the second the same for all:
1. Known delays. The codec's decoder lags its input by exactly `codec.delay` samples (one iSTFT
   hop); they are dropped from the front of its output. libopus delays its output by the encoder's
   lookahead, which it writes into the OpusHead header as "pre-skip" (312 samples at 48 kHz =
   6.5 ms, at every bitrate and input rate; 120 = 2.5 ms in "lowdelay"); the decoder reads the
   header and drops them itself.
2. Residual lag. Cross-correlation on real speech still finds Opus about one sample (24 kHz) early
   after the pre-skip in "audio" mode, two in "voip" (its high-pass filter's phase lead). So every
   decoded signal is shifted by its cross-correlation peak within +-1 ms before scoring; the shift
   is recorded per system as `lag_samples` (a codec whose `delay` is right shows about 0).

Opus runs in its "audio" application by default: PESQ and STOI match "voip" to within 0.05 and
0.005, but voip's high-pass at the bottom of the band costs 4-8 dB of SI-SDR for nothing audible,
which would flatter our codec. `--opus_application voip` gives the other.

    python codec_eval.py --checkpoint checkpoints/codec.safetensors --manifest data/synthetic/test.jsonl
    python codec_eval.py --curve runs/codec --manifest data/synthetic/val.jsonl --plot curve.png

Speaker identity: `--speaker_manifest data/synthetic/train.jsonl` also round-trips clips of the
agent's four voices (the voice bank's names) through every system and asks the speaker encoder
which bank voice each decoded clip is closest to (`speaker_id` in the JSON; the originals too).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import spectral
from audio_io import load_audio, read_manifest, resample
from checkpoint_io import Checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parent
REAL_EN_DIR = ROOT / "tests" / "data" / "real_en"
OPUS_KBPS = (6, 8, 12)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what the libopus encoder accepts
OPUS_APPLICATION = "audio"  # the strongest baseline on SI-SDR; "voip" high-passes (see above)
PESQ_RATE = 16000  # wideband PESQ is defined at 16 kHz
METRICS = ("pesq_wb", "stoi", "mel_distance", "si_sdr", "pitch_acc", "f0_rmse_cents", "voicing_error")
MAX_LAG_S = 0.001  # residual lag the fine alignment may undo (see the module docstring)


# --- metrics --------------------------------------------------------------------------------------

def si_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019): project the estimate onto the reference;
    the projection is the target, the rest is distortion. Immune to gain, not to a time shift."""
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    ref, est = ref - ref.mean(), est - est.mean()
    target = (np.dot(est, ref) / (np.dot(ref, ref) + eps)) * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sr: int) -> float:
    """PESQ wideband (ITU-T P.862.2) at 16 kHz; NaN where PESQ refuses the clip (too short, no
    utterance found), so one odd clip does not end an evaluation."""
    from pesq import PesqError, pesq

    try:
        return float(pesq(PESQ_RATE, resample(reference, sr, PESQ_RATE), resample(estimate, sr, PESQ_RATE), "wb"))
    except PesqError:
        return math.nan


def stoi(reference: np.ndarray, estimate: np.ndarray, sr: int) -> float:
    """Short-time objective intelligibility; pystoi resamples to its native 10 kHz from `sr`."""
    from pystoi import stoi as _stoi

    return float(_stoi(reference, estimate, sr, extended=False))


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sr: int) -> float:
    """spectral.mel_distance (mean log10-mel L1) on numpy clips."""
    return float(spectral.mel_distance(torch.from_numpy(estimate), torch.from_numpy(reference), sr))


def f0_track(pcm: np.ndarray, sr: int) -> np.ndarray:
    """pYIN F0 (Hz, NaN where unvoiced) every 10 ms at 16 kHz: librosa's, independent of the
    codec's own training target (telugu_codec_fixed.yin_f0)."""
    import librosa

    x = librosa.resample(pcm.astype(np.float32), orig_sr=sr, target_sr=16000) if sr != 16000 else pcm
    f0, voiced, _ = librosa.pyin(x, fmin=60, fmax=500, sr=16000, frame_length=1024, hop_length=160)
    return np.where(voiced, f0, np.nan)


def pitch_scores(ref_f0: np.ndarray, estimate: np.ndarray, sr: int) -> dict:
    """pYIN tracks of reference and estimate compared frame by frame (10 ms):
    - pitch_acc: share of the reference's voiced frames where the estimate is voiced too and within
      50 cents (melody extraction's raw pitch accuracy). A codec that decodes every voice at one
      buzzing pitch scores near 0 however good its spectra look;
    - f0_rmse_cents: RMS pitch error on the frames voiced in both (how far off, where it is on);
    - voicing_error: share of all frames whose voiced/unvoiced call differs."""
    est = f0_track(estimate, sr)
    n = min(len(ref_f0), len(est))
    ref, est = ref_f0[:n], est[:n]
    voiced, est_voiced = ~np.isnan(ref), ~np.isnan(est)
    both = voiced & est_voiced
    cents = 1200 * np.log2(est[both] / ref[both])
    return {"pitch_acc": float(np.sum(np.abs(cents) < 50) / voiced.sum()) if voiced.any() else math.nan,
            "f0_rmse_cents": float(np.sqrt(np.mean(cents ** 2))) if both.any() else math.nan,
            "voicing_error": float(np.mean(voiced != est_voiced)) if n else math.nan}


def pitch_accuracy(ref_f0: np.ndarray, estimate: np.ndarray, sr: int) -> float:
    """pitch_scores' pitch_acc alone."""
    return pitch_scores(ref_f0, estimate, sr)["pitch_acc"]


def measured_lag(reference: np.ndarray, estimate: np.ndarray, max_lag: int) -> int:
    """Samples by which `estimate` lags `reference` (peak of their cross-correlation within
    +-max_lag); 0 for a well-aligned system."""
    n = len(reference) + len(estimate)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(estimate, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    return int(lags[np.argmax(xc[lags])])


def align(reference: np.ndarray, estimate: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """Undo a residual whole-sample lag (at most `max_lag`) found by cross-correlation; the result
    is as long as the reference. Applied to every system alike."""
    lag = measured_lag(reference, estimate, max_lag)
    n = len(reference)
    shifted = estimate[lag:lag + n] if lag >= 0 else np.concatenate([np.zeros(-lag, np.float32), estimate])[:n]
    return np.pad(shifted, (0, n - len(shifted))).astype(np.float32), lag


def score(reference: np.ndarray, estimate: np.ndarray, sr: int, ref_f0: np.ndarray | None = None) -> dict:
    estimate, lag = align(reference, estimate, int(MAX_LAG_S * sr))
    ref_f0 = f0_track(reference, sr) if ref_f0 is None else ref_f0
    return {"pesq_wb": pesq_wb(reference, estimate, sr), "stoi": stoi(reference, estimate, sr),
            "mel_distance": mel_distance(reference, estimate, sr), "si_sdr": si_sdr(reference, estimate),
            **pitch_scores(ref_f0, estimate, sr), "lag_samples": lag}


# --- the systems ----------------------------------------------------------------------------------

def codec_kbps(codec, n_codebooks: int) -> float:
    frame_rate = codec.sample_rate / codec.frame_size
    return n_codebooks * math.log2(codec.cfg.codebook_size) * frame_rate / 1000


def codec_roundtrips(codec, pcm: np.ndarray, codebooks: Sequence[int]) -> dict[int, np.ndarray]:
    """Decoded audio at each K, aligned to and as long as `pcm`. One encode serves every K: the
    residual VQ is greedy, so the first K codes of an 8-codebook encode are the K-codebook encode."""
    n = len(pcm)
    # `delay` extra samples (encode pads them to a whole frame) so the decoder flushes the tail.
    codes = codec.encode(F.pad(torch.from_numpy(pcm), (0, codec.delay)), max(codebooks))
    out = {}
    for k in codebooks:
        audio = codec.decode(codes[:, :k])[0, 0, codec.delay:codec.delay + n].numpy()
        out[k] = np.pad(audio, (0, n - len(audio))).astype(np.float32)
    return out


def opus_roundtrip(pcm: np.ndarray, sr: int, kbps: float, application: str = OPUS_APPLICATION):
    """Encode and decode `pcm` with libopus through PyAV: mono, VBR at `kbps`, 20 ms packets.
    Returns (decoded audio aligned to and as long as `pcm`, measured bitrate in kbps)."""
    import av

    rate = sr if sr in OPUS_RATES else 48000
    x = resample(pcm, sr, rate)
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "flt"
    enc.bit_rate = int(kbps * 1000)
    enc.options = {"application": application}
    enc.open()
    size = enc.frame_size
    # One packet of silence past the end pushes the encoder's lookahead out, like the codec's flush.
    x = np.concatenate([x, np.zeros((-len(x)) % size + size, np.float32)])
    packets = []
    for start in range(0, len(x), size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, start:start + size]), format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        packets += enc.encode(frame)
    packets += enc.encode(None)
    # The decoder reads the pre-skip from OpusHead (the encoder's extradata) and drops it: the
    # alignment step. libopus decodes at 48 kHz whatever the input rate.
    dec = av.CodecContext.create("libopus", "r")
    dec.extradata = enc.extradata
    chunks, out_rate = [], 48000
    for packet in packets + [None]:
        for frame in dec.decode(packet):
            samples = frame.to_ndarray().reshape(-1)
            if samples.dtype.kind == "i":  # libopus decodes to s16 unless asked otherwise
                samples = samples / float(np.iinfo(samples.dtype).max + 1)
            chunks.append(samples.astype(np.float32))
            out_rate = frame.sample_rate
    y = resample(np.concatenate(chunks), out_rate, sr)[: len(pcm)]
    bits = 8 * sum(p.size for p in packets)
    return np.pad(y, (0, len(pcm) - len(y))).astype(np.float32), bits / (len(pcm) / sr) / 1000


# --- evaluation -----------------------------------------------------------------------------------

def _summary(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "n": len(finite)}


def _as_named(clips) -> dict[str, np.ndarray]:
    if isinstance(clips, Mapping):
        return {str(k): np.asarray(v, dtype=np.float32) for k, v in clips.items()}
    return {f"clip_{i:03d}": np.asarray(v, dtype=np.float32) for i, v in enumerate(clips)}


def default_codebooks(n_codebooks: int) -> list[int]:
    """1, 2, 4, ... up to the codec's count, and the count itself: (1, 2, 4, 8) for 8 codebooks."""
    ks = [2**i for i in range(int(math.log2(n_codebooks)) + 1)]
    return ks if ks[-1] == n_codebooks else ks + [n_codebooks]


@torch.no_grad()
def evaluate(codec, clips, codebooks: Sequence[int] | None = None, opus_kbps: Sequence[float] = OPUS_KBPS,
             progress: bool = True, opus_application: str = OPUS_APPLICATION) -> dict:
    """Score the codec at each K in `codebooks` (default 1, 2, 4, ... n_codebooks) and Opus at each
    of `opus_kbps` on `clips` (a sequence of float32 arrays at codec.sample_rate, or a name ->
    array mapping). Returns the JSON structure described in the module docstring."""
    codebooks = sorted(codebooks or default_codebooks(codec.n_codebooks))
    if codebooks[0] < 1 or codebooks[-1] > codec.n_codebooks:
        raise ValueError(f"codebooks {codebooks} outside 1..{codec.n_codebooks}")
    was_training = codec.training
    codec.eval()
    try:
        return _evaluate(codec, _as_named(clips), codebooks, opus_kbps, progress, opus_application)
    finally:
        codec.train(was_training)  # a training loop may hand us its live model


def _evaluate(codec, named, codebooks, opus_kbps, progress, opus_application) -> dict:
    sr = codec.sample_rate
    systems, codec_names = {}, {}
    for k in codebooks:
        kbps = codec_kbps(codec, k)
        codec_names[k] = f"codec_{k}cb_{round(kbps * 1000)}bps"
        systems[codec_names[k]] = {"kind": "codec", "codebooks": k, "kbps": kbps}
    for kbps in opus_kbps:
        systems[f"opus_{kbps:g}kbps"] = {"kind": "opus", "kbps": float(kbps)}
    per_clip = {name: {m: [] for m in (*METRICS, "lag_samples", "kbps_measured")} for name in systems}
    t0 = time.perf_counter()
    for i, (clip_name, ref) in enumerate(named.items()):
        decoded = {codec_names[k]: (audio, codec_kbps(codec, k))
                   for k, audio in codec_roundtrips(codec, ref, codebooks).items()}
        for kbps in opus_kbps:
            decoded[f"opus_{kbps:g}kbps"] = opus_roundtrip(ref, sr, kbps, opus_application)
        ref_f0 = f0_track(ref, sr)
        for name, (audio, measured) in decoded.items():
            for metric, value in score(ref, audio, sr, ref_f0).items():
                per_clip[name][metric].append(value)
            per_clip[name]["kbps_measured"].append(measured)
        if progress:
            print(f"  [{i + 1}/{len(named)}] {clip_name} ({len(ref) / sr:.1f} s) "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    for name, system in systems.items():
        values = per_clip[name]
        for metric in METRICS:
            system[metric] = _summary(values[metric])
        system["pesq_failures"] = sum(1 for v in values["pesq_wb"] if not math.isfinite(v))
        system["lag_samples"] = float(np.mean(values["lag_samples"])) if values["lag_samples"] else math.nan
        system["kbps_measured"] = float(np.mean(values["kbps_measured"])) if values["kbps_measured"] else math.nan
        system["per_clip"] = {m: values[m] for m in METRICS}
    return {
        "clips": len(named),
        "duration_s": sum(len(x) for x in named.values()) / sr,
        "sample_rate": sr,
        "codec": {"n_codebooks": codec.n_codebooks, "codebook_size": codec.cfg.codebook_size,
                  "frame_size": codec.frame_size, "delay": codec.delay},
        "opus": {"application": opus_application,
                 "alignment": "decoder drops the OpusHead pre-skip, then every system is shifted by "
                               f"its cross-correlation peak within +-{MAX_LAG_S * 1000:g} ms"},
        "clip_names": list(named),
        "eval_seconds": time.perf_counter() - t0,
        "systems": systems,
    }


def format_table(result: dict) -> str:
    """Markdown table, one row per system; kbps is what the system actually spent (Opus is VBR)."""
    def cell(stat, digits):
        return "n/a" if stat["n"] == 0 else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"

    lines = ["| system | kbps | PESQ-wb | STOI | mel dist | SI-SDR (dB) | pitch acc | F0 RMSE (cents) | voicing err |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in result["systems"].items():
        failures = f" ({s['pesq_failures']} failed)" if s["pesq_failures"] else ""
        lines.append(f"| {name} | {s['kbps_measured']:.2f} | {cell(s['pesq_wb'], 2)}{failures} | "
                     f"{cell(s['stoi'], 3)} | {cell(s['mel_distance'], 3)} | {cell(s['si_sdr'], 1)} | "
                     f"{cell(s['pitch_acc'], 3)} | {cell(s['f0_rmse_cents'], 0)} | {cell(s['voicing_error'], 3)} |")
    return "\n".join(lines)


# --- speaker identity after the round trip --------------------------------------------------------

def bank_voice_clips(manifest, voices: Sequence[str], per_voice: int, sr: int = 24000) -> dict[str, tuple[str, np.ndarray]]:
    """The first `per_voice` clips of each named voice in a manifest: name -> (voice, audio)."""
    taken, out = {v: 0 for v in voices}, {}
    for row in read_manifest(manifest):
        voice = row.get("speaker")
        if voice in taken and taken[voice] < per_voice:
            taken[voice] += 1
            out[Path(row["audio"]).stem + f"_{voice}"] = (voice, load_audio(row["audio"], sr))
        if all(n >= per_voice for n in taken.values()):
            break
    return out


@torch.no_grad()
def speaker_identification(codec, clips: Mapping[str, tuple[str, np.ndarray]], codebooks: Sequence[int],
                           opus_kbps: Sequence[float] = OPUS_KBPS, encoder=None, bank=None,
                           opus_application: str = OPUS_APPLICATION) -> dict:
    """Which bank voice does the speaker encoder hear in each decoded clip? Per system: accuracy
    (share of clips identified as the voice that spoke them), the clip count and the confusions
    (true -> heard -> count). "original" is the encoder's own ceiling on the undecoded clips."""
    import speaker_embeddings

    encoder = encoder or speaker_embeddings.load()
    bank = bank or speaker_embeddings.VoiceBank.load()
    sr = codec.sample_rate
    heard: dict[str, list[tuple[str, str]]] = {}
    for voice, pcm in clips.values():
        systems = {"original": pcm}
        for k, audio in codec_roundtrips(codec, pcm, codebooks).items():
            systems[f"codec_{k}cb_{round(codec_kbps(codec, k) * 1000)}bps"] = audio
        for kbps in opus_kbps:
            systems[f"opus_{kbps:g}kbps"] = opus_roundtrip(pcm, sr, kbps, opus_application)[0]
        for name, audio in systems.items():
            heard.setdefault(name, []).append((voice, bank.identify(encoder.embed(audio, sr))[0]))
    out = {}
    for name, pairs in heard.items():
        confusions: dict[str, dict[str, int]] = {}
        for true, got in pairs:
            confusions.setdefault(true, {}).setdefault(got, 0)
            confusions[true][got] += 1
        out[name] = {"accuracy": float(np.mean([t == g for t, g in pairs])), "n": len(pairs), "confusions": confusions}
    return out


def format_speaker_table(result: dict) -> str:
    lines = ["| system | voices identified | clips | confusions (true -> heard) |", "|---|---:|---:|---|"]
    for name, r in result.items():
        wrong = ", ".join(f"{t}->{g} x{n}" for t, row in r["confusions"].items() for g, n in row.items() if g != t)
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['n']} | {wrong or '-'} |")
    return "\n".join(lines)


# --- clips ----------------------------------------------------------------------------------------

def load_clips(manifest, limit: int | None = 60, seed: int = 0, sr: int = 24000) -> dict[str, np.ndarray]:
    """A seeded sample of `limit` utterances from a JSONL manifest (reservoir sampling: the manifest
    is streamed, never held whole), in manifest order, as name -> float32 audio at `sr`."""
    rng = random.Random(seed)
    chosen: list[tuple[int, dict]] = []
    for i, row in enumerate(read_manifest(manifest)):
        if limit is None or len(chosen) < limit:
            chosen.append((i, row))
        else:
            j = rng.randint(0, i)
            if j < limit:
                chosen[j] = (i, row)
    chosen.sort(key=lambda item: item[0])
    return {Path(row["audio"]).stem: load_audio(row["audio"], sr) for _, row in chosen}


def load_folder_clips(folder, sr: int = 24000) -> dict[str, np.ndarray]:
    """Every WAV in `folder` (any rate or channel count), sorted by name, as float32 at `sr`."""
    paths = sorted(Path(folder).glob("*.wav"))
    if not paths:
        raise FileNotFoundError(f"no .wav files in {folder}")
    return {p.stem: load_audio(p, sr) for p in paths}


# --- checkpoints and the training curve -----------------------------------------------------------

def load_training_checkpoint(path):
    """A step_*.pt of train_codec_dac.py -> (codec in eval mode, the checkpoint dict)."""
    from config import from_dict
    from telugu_codec_fixed import Codec

    ckpt = load_checkpoint(path)
    codec = Codec(from_dict(ckpt["config"]).codec)
    codec.load_state_dict(ckpt["model"])
    return codec.eval(), ckpt


def load_codec(checkpoint=None):
    """Exported safetensors (or the shipped codec when None) or a training step_*.pt."""
    import telugu_codec_fixed

    if checkpoint and Path(checkpoint).suffix == ".pt":
        return load_training_checkpoint(checkpoint)[0]
    return telugu_codec_fixed.load(checkpoint)


def curve(run_dir, manifest, limit: int | None = 60, seed: int = 0, progress: bool = True) -> list[dict]:
    """Held-out quality against training time: every step_*.pt in `run_dir` scored at its full
    codebook count on the same clips. Rows of step, elapsed_s, stoi, pesq_wb, pitch_acc (means)."""
    paths = Checkpoints(run_dir).all()
    if not paths:
        raise FileNotFoundError(f"no step_*.pt checkpoints in {run_dir}")
    clips, rows = None, []
    for path in paths:
        codec, ckpt = load_training_checkpoint(path)
        if clips is None:
            clips = load_clips(manifest, limit, seed, codec.sample_rate)
        result = evaluate(codec, clips, [codec.n_codebooks], opus_kbps=(), progress=False)
        (system,) = result["systems"].values()
        rows.append({"step": int(Checkpoints.pattern.search(path.name).group(1)),
                     "elapsed_s": float(ckpt.get("elapsed_s", math.nan)),
                     "stoi": system["stoi"]["mean"], "pesq_wb": system["pesq_wb"]["mean"],
                     "pitch_acc": system["pitch_acc"]["mean"], "checkpoint": str(path)})
        if progress:
            print(f"  {path.name}: STOI {rows[-1]['stoi']:.3f}, PESQ-wb {rows[-1]['pesq_wb']:.2f}, "
                  f"pitch acc {rows[-1]['pitch_acc']:.3f}", file=sys.stderr, flush=True)
    return rows


def format_curve(rows: list[dict]) -> str:
    lines = ["| step | training time (min) | STOI | PESQ-wb | pitch acc |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['elapsed_s'] / 60:.1f} | {r['stoi']:.3f} | {r['pesq_wb']:.2f} | "
              f"{r.get('pitch_acc', math.nan):.3f} |" for r in rows]
    return "\n".join(lines)


def plot_curve(rows: list[dict], out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = all(math.isfinite(r["elapsed_s"]) for r in rows)
    x = [r["elapsed_s"] / 60 if timed else r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, label in zip(axes, ("stoi", "pesq_wb", "pitch_acc"), ("STOI", "PESQ-wb", "pitch accuracy")):
        ax.plot(x, [r.get(key, math.nan) for r in rows], marker="o")
        ax.set_xlabel("training time (min)" if timed else "step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("codec quality on held-out clips (all codebooks)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


# --- CLI ------------------------------------------------------------------------------------------

def _json_ready(obj):
    """NaN -> null: strict JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return obj


def write_json(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_ready(obj), indent=2, allow_nan=False), encoding="utf-8")
    tmp.replace(path)


def main(argv=None):
    p = argparse.ArgumentParser(description="Score the codec against Opus (PESQ-wb, STOI, mel distance, SI-SDR, pitch accuracy)")
    p.add_argument("--checkpoint", help="codec .safetensors or training step_*.pt (default: the shipped codec)")
    p.add_argument("--manifest", help="JSONL manifest of held-out clips")
    p.add_argument("--limit", type=int, default=60, help="clips sampled from the manifest (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--real_en", nargs="?", const=str(REAL_EN_DIR), metavar="DIR",
                   help=f"also score real English speech (out of domain; default {REAL_EN_DIR.relative_to(ROOT)})")
    p.add_argument("--opus_kbps", type=float, nargs="+", default=list(OPUS_KBPS), help="Opus bitrates")
    p.add_argument("--opus_application", default=OPUS_APPLICATION, choices=["audio", "voip", "lowdelay"])
    p.add_argument("--curve", metavar="RUN_DIR", help="score every step_*.pt in a run folder instead")
    p.add_argument("--plot", metavar="OUT_PNG", help="with --curve: plot quality against training time")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: leave a core to training)")
    p.add_argument("--speaker_manifest", help="manifest with clips of the voice bank's voices (e.g. the train "
                                              "manifest): score speaker identification after the round trip")
    p.add_argument("--speaker_clips", type=int, default=10, help="clips per bank voice for --speaker_manifest")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.curve:
        if not args.manifest:
            p.error("--curve needs --manifest")
        try:
            rows = curve(args.curve, args.manifest, args.limit, args.seed)
        except FileNotFoundError as e:
            sys.exit(f"error: {e}")
        print(format_curve(rows))
        if args.plot:
            plot_curve(rows, args.plot)
            print(f"plot: {args.plot}")
        if args.json:
            write_json({"curve": rows}, args.json)
        return None  # train_codec_dac.py --eval passes this to sys.exit

    if not args.manifest and not args.real_en and not args.speaker_manifest:
        p.error("give --manifest (and/or --real_en, --speaker_manifest)")
    try:
        codec = load_codec(args.checkpoint)
    except FileNotFoundError as e:
        hint = "" if args.checkpoint else " -- no codec is shipped yet; pass --checkpoint"
        sys.exit(f"error: {e}{hint}")
    sets = {}
    if args.manifest:
        sets["held-out"] = load_clips(args.manifest, args.limit, args.seed, codec.sample_rate)
    if args.real_en:
        try:
            sets["real_en"] = load_folder_clips(args.real_en, codec.sample_rate)
        except FileNotFoundError as e:
            sys.exit(f"error: {e}")
    results = {}
    for title, clips in sets.items():
        result = evaluate(codec, clips, opus_kbps=args.opus_kbps, opus_application=args.opus_application)
        print(f"\n## {title}: {result['clips']} clips, {result['duration_s']:.1f} s "
              f"(scored in {result['eval_seconds']:.0f} s)\n\n{format_table(result)}")
        results[title] = result
    # The held-out set is the top level; real English is a section of it (or the top, if alone).
    out = results.get("held-out", results.get("real_en", {}))
    if "held-out" in results and "real_en" in results:
        out = dict(out, real_en=results["real_en"])
    if args.speaker_manifest:
        import speaker_embeddings

        bank = speaker_embeddings.VoiceBank.load()
        clips = bank_voice_clips(args.speaker_manifest, bank.names(), args.speaker_clips, codec.sample_rate)
        ids = speaker_identification(codec, clips, default_codebooks(codec.n_codebooks), args.opus_kbps,
                                     bank=bank, opus_application=args.opus_application)
        print(f"\n## speaker identification: {len(clips)} clips of {', '.join(bank.names())}\n\n"
              f"{format_speaker_table(ids)}")
        out = dict(out, speaker_id=ids)
    if args.checkpoint:
        out = dict(out, checkpoint=str(args.checkpoint))
    if args.json:
        write_json(out, args.json)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
