"""Audio and manifest I/O shared by every part of telugu-s2s.

Inside the project audio is 24 kHz mono float32 in [-1, 1]; on disk it is PCM16 WAV. Resampling
happens here, at the edge, and nowhere else. Manifests are JSONL, one utterance a line, streamed
so that a corpus of any size never has to fit in memory (see DESIGN.md "Checkpoints and data").
"""
from __future__ import annotations

import io
import json
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 24000  # the one internal rate; config.AudioConfig.sample_rate defaults to it


class AudioError(ValueError):
    """A file that cannot be used as speech; the message says why."""


def to_mono(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm, dtype=np.float32)
    return pcm.mean(axis=1) if pcm.ndim == 2 else pcm


def resample(pcm: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    if sr_in == sr_out:
        return np.asarray(pcm, dtype=np.float32)
    return soxr.resample(np.asarray(pcm, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def load_audio(source, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read a path, a file object or raw bytes in any format libsndfile knows; return mono float32 at `sr`."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        pcm, sr_in = sf.read(source, dtype="float32", always_2d=False)
    except Exception as e:  # libsndfile raises several types; callers only need "unusable, and why"
        raise AudioError(f"cannot decode audio: {e}") from e
    return resample(to_mono(pcm), sr_in, sr)


def save_wav(path, pcm: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write PCM16 atomically: a reader never sees half a file, a re-run never keeps a broken one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pcm = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0)
    sf.write(tmp, pcm, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def pcm16_bytes(pcm: np.ndarray) -> bytes:
    """float32 [-1, 1] -> PCM16 little-endian bytes, the wire format of the server."""
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def from_pcm16_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


# --- cleaning: what makes a clip fit for training -------------------------------------------------

def trim_silence(pcm: np.ndarray, sr: int = SAMPLE_RATE, top_db: float = 40.0, margin_s: float = 0.1):
    """Cut leading/trailing silence (relative to the clip's own peak) but keep a short margin, so
    word onsets are not clipped. Returns (trimmed, offset_seconds) so word timings can be shifted."""
    if pcm.size == 0:
        return pcm, 0.0
    hop = max(1, int(0.01 * sr))
    n = len(pcm) // hop
    if n == 0:
        return pcm, 0.0
    frames = pcm[: n * hop].reshape(n, hop)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.nonzero(db > db.max() - top_db)[0]
    margin = int(margin_s * sr)
    start = max(0, loud[0] * hop - margin)
    end = min(len(pcm), (loud[-1] + 1) * hop + margin)
    return pcm[start:end], start / sr


def normalize_loudness(pcm: np.ndarray, target_dbfs: float = -23.0, peak: float = 0.95) -> np.ndarray:
    """RMS-normalise to `target_dbfs` (the level of broadcast speech), never pushing peaks past `peak`."""
    rms = float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0
    if rms < 1e-8:
        return pcm
    gain = 10 ** (target_dbfs / 20) / rms
    gain = min(gain, peak / (float(np.abs(pcm).max()) + 1e-9))
    return (pcm * gain).astype(np.float32)


def check_clip(pcm: np.ndarray, sr: int = SAMPLE_RATE, min_s: float = 0.5, max_s: float = 30.0,
               clip_fraction: float = 0.001) -> str | None:
    """Return why a clip is unfit for training, or None when it is fine."""
    if pcm.size == 0:
        return "empty"
    if not np.all(np.isfinite(pcm)):
        return "non-finite samples"
    dur = len(pcm) / sr
    if dur < min_s:
        return f"too short ({dur:.2f} s < {min_s} s)"
    if dur > max_s:
        return f"too long ({dur:.1f} s > {max_s} s)"
    if float(np.sqrt(np.mean(pcm**2))) < 1e-4:
        return "silent"
    if np.mean(np.abs(pcm) >= 0.999) > clip_fraction:
        return "clipped"
    return None


# --- manifests -----------------------------------------------------------------------------------

MANIFEST_FIELDS = ("audio", "text", "speaker", "lang", "duration", "split")  # "words" where known


def _parse_row(line, path: Path, where: str, resolve: bool = True) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{where}: not JSON ({e})") from e
    missing = [k for k in MANIFEST_FIELDS if k not in row]
    if missing:
        raise ValueError(f"{path}:{where}: missing fields {missing}")
    if resolve and not os.path.isabs(row["audio"]):
        row["audio"] = str(path.parent / row["audio"])
    return row


def read_manifest(path) -> Iterator[dict]:
    """Stream a JSONL manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                yield _parse_row(line, path, str(line_no))


class ManifestIndex(Sequence):
    """Random access to a JSONL manifest of any size without holding its rows in memory.

    One pass over the file keeps, per row, only where it starts and what training samples by
    (duration, speaker), in numpy arrays: 20 bytes a row, so ten million utterances take 200 MB
    where the parsed dicts would take tens of GB. A row is read and parsed when asked for.
    Numpy arrays, unlike lists of dicts, also stay shared between forked DataLoader workers
    (reading a Python object writes its refcount and copies its page; reading an array does not).
    """

    def __init__(self, path):
        self.path = Path(path)
        # array.array while reading: raw values, not a Python object per number.
        starts, ends, durations, speaker_of_row = array("q"), array("q"), array("f"), array("i")
        first_seen: dict[str, int] = {}
        offset = 0
        with open(self.path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    row = _parse_row(line, self.path, str(line_no), resolve=False)  # checked, not kept
                    starts.append(offset)
                    ends.append(offset + len(line))
                    durations.append(float(row["duration"]))
                    speaker_of_row.append(first_seen.setdefault(str(row["speaker"]), len(first_seen)))
                offset += len(line)
        self.offsets = np.frombuffer(starts, dtype=np.int64).copy()
        self.lengths = (np.frombuffer(ends, dtype=np.int64) - self.offsets).astype(np.int32)
        self.durations = np.frombuffer(durations, dtype=np.float32).copy()
        # Ids follow the sorted names, so an id means the same as an index into `speakers`.
        self.speakers = sorted(first_seen)
        rank = {name: i for i, name in enumerate(self.speakers)}
        remap = np.array([rank[name] for name in first_seen], dtype=np.int32)
        self.speaker_ids = remap[np.frombuffer(speaker_of_row, dtype=np.int32)] if len(speaker_of_row) \
            else np.zeros(0, dtype=np.int32)
        self.file_size = offset
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i) -> dict:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)} in {self.path}")
        if self._pid != os.getpid():  # a forked DataLoader worker must not share the parent's descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        line = os.pread(self._fd, int(self.lengths[i]), int(self.offsets[i]))
        return _parse_row(line, self.path, f"row {i}")

    def __iter__(self) -> Iterator[dict]:
        return read_manifest(self.path)  # in order: buffered reading beats one pread a row

    def __getstate__(self):  # pickled into spawned workers; the descriptor is reopened there
        state = dict(self.__dict__)
        state["_fd"] = state["_pid"] = None
        return state

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def speaker(self, i: int) -> str:
        return self.speakers[int(self.speaker_ids[i])]

    def hours(self) -> float:
        return float(self.durations.sum(dtype=np.float64)) / 3600


def write_manifest(path, rows: Iterable[dict]) -> int:
    """Write rows atomically (tmp + rename); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            missing = [k for k in MANIFEST_FIELDS if k not in row]
            if missing:
                raise ValueError(f"manifest row for {row.get('audio')!r} misses {missing}")
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
