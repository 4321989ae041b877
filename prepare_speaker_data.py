#!/usr/bin/env python3
"""Turn real speech corpora into clean, speaker-split manifests (DESIGN.md "Checkpoints and data").

    python prepare_speaker_data.py --data_dir data/raw --out data/prepared
    python prepare_speaker_data.py --synthetic --out data/synthetic

Reads whichever corpora `download_datasets.sh` left under --data_dir, each in its own published
layout (LAYOUTS below), decodes every utterance (any format, rate, channel count), drops what is
unfit for training, resamples to 24 kHz mono, trims silence, normalises loudness and writes

    OUT/wavs/<corpus>/<speaker>/<utt>.wav    PCM16, 24 kHz mono
    OUT/train.jsonl, val.jsonl, test.jsonl   speaker-disjoint (seeded), DESIGN.md fields
    OUT/rejected.jsonl                       every file dropped, with the reason
    OUT/summary.json                         counts and hours per corpus, split and speaker

A re-run skips every utterance whose WAV is already written, so it is cheap and can resume.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import random
import re
import sys
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audio_io import (SAMPLE_RATE, AudioError, check_clip, normalize_loudness, resample, save_wav,
                      to_mono, trim_silence, write_manifest)

LANG = {"slr66": "te", "indictts": "te", "commonvoice": "te",
        "librispeech": "en", "vctk": "en", "ljspeech": "en", "folder": "te"}

# Where each corpus is looked for, relative to --data_dir: download_datasets.sh puts each corpus in
# DEST/<corpus>/ and the corpus's own archive decides the rest. A reader gets the matched paths.
LAYOUTS = {
    "slr66": ["slr66/line_index.tsv", "slr66/*/line_index.tsv"],
    "indictts": ["indictts/*.parquet", "indictts/*/*.parquet"],
    "librispeech": ["librispeech/*/*/*/*.trans.txt", "librispeech/LibriSpeech/*/*/*/*.trans.txt"],
    "vctk": ["vctk/wav48_silence_trimmed", "vctk/*/wav48_silence_trimmed", "vctk/wav48", "vctk/*/wav48"],
    "ljspeech": ["ljspeech/metadata.csv", "ljspeech/*/metadata.csv"],
    "commonvoice": ["commonvoice/validated.tsv", "commonvoice/*/validated.tsv",
                    "commonvoice/*/*/validated.tsv", "commonvoice/*/*/*/validated.tsv"],
    "folder": ["folder/**/*.wav"],
}


@dataclass
class ParquetRow:
    """An utterance whose audio bytes sit in row `row` of a parquet file (IndicTTS)."""
    path: str
    row: int

    def __str__(self):
        return f"{self.path}#row={self.row}"


@dataclass
class Utterance:
    corpus: str
    speaker: str  # as the corpus names it; the manifest prefixes the corpus
    utt_id: str
    text: str
    source: str | ParquetRow

    @property
    def manifest_speaker(self) -> str:
        return f"{self.corpus}_{self.speaker}"


@dataclass
class Rejected:
    corpus: str
    speaker: str
    source: str
    reason: str


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.synthetic:
        return build_synthetic(args)

    data_dir, out_dir = Path(args.data_dir), Path(args.out)
    found = find_corpora(data_dir, args.corpora)
    print(f"found under {data_dir}: {', '.join(found)}")

    utterances, rejected = list_utterances(found)
    utterances, duplicates = drop_duplicates(utterances, out_dir)
    rejected += duplicates
    utterances = cap_per_speaker(utterances, args.max_per_speaker, args.seed)
    splits, train_only = assign_splits(utterances, args.val_speakers, args.test_speakers, args.seed)

    langs = {**LANG, "folder": args.folder_lang}
    rows, failures = clean_all(utterances, out_dir, langs, args)
    rejected += failures
    for row in rows:
        row["split"] = splits[row["speaker"]]

    write_outputs(out_dir, rows, rejected, train_only, args)
    return 0


# --- finding the corpora -------------------------------------------------------------------------

def find_corpora(data_dir: Path, wanted: list[str] | None) -> dict[str, list[Path]]:
    if not data_dir.is_dir():
        sys.exit(f"error: --data_dir {data_dir} does not exist or is not a folder "
                 f"(run download_datasets.sh --dest {data_dir} first)")
    found = {}
    for corpus in wanted or LAYOUTS:
        paths = sorted({Path(p) for pattern in LAYOUTS[corpus]
                        for p in glob.glob(str(data_dir / pattern), recursive=True)})
        if paths:
            found[corpus] = paths
        elif wanted:
            sys.exit(f"error: corpus '{corpus}' not found under {data_dir} "
                     f"(looked for {', '.join(LAYOUTS[corpus])})")
    if not found:
        looked = "\n".join(f"  {c:12s} {', '.join(p)}" for c, p in LAYOUTS.items())
        sys.exit(f"error: no known corpus under {data_dir}. Looked for (relative to it):\n{looked}")
    return found


# --- one reader per corpus layout: yield Utterance, or Rejected for what cannot be listed ----------

def read_slr66(index_files):
    """slr66/te_in_{female,male}/line_index.tsv: `<utt_id>\\t<text>`, `<utt_id>.wav` beside it.
    Utterance ids are `te<gender>_<speaker>_<number>` (tef_01033_00351357063); the speaker is the
    first two fields, so female and male numbers never collide."""
    for index in index_files:
        for line_no, line in enumerate(read_lines(index), 1):
            fields = [f.strip() for f in line.split("\t")]
            utt_id, text = fields[0], next((f for f in reversed(fields[1:]) if f), "")
            parts = utt_id.split("_")
            if len(parts) < 3 or not text:
                yield Rejected("slr66", "", f"{index}:{line_no}", "malformed line_index.tsv line")
                continue
            yield Utterance("slr66", f"{parts[0]}_{parts[1]}", utt_id, text, str(index.parent / f"{utt_id}.wav"))


def read_indictts(parquet_files):
    """indictts/data/*.parquet from the HF Hub: columns audio ({bytes, path}), text and gender
    (a ClassLabel female/male: the corpus has one speaker of each). Only text and speaker are read
    here; the audio bytes are streamed later, straight to the workers."""
    import pyarrow.parquet as pq
    from datasets import ClassLabel, load_dataset  # only this corpus needs datasets
    for path in parquet_files:
        names = pq.read_schema(path).names
        if "audio" not in names:
            yield Rejected("indictts", "", str(path), f"no audio column (columns: {names})")
            continue
        speaker_column = next((c for c in ("speaker", "speaker_id", "gender") if c in names), None)
        columns = [c for c in ("text", speaker_column) if c in names]
        rows = load_dataset("parquet", data_files=[str(path)], split="train", streaming=True, columns=columns)
        label = (rows.features or {}).get(speaker_column) if speaker_column else None
        for row, example in enumerate(rows):
            speaker = example.get(speaker_column) if speaker_column else None
            if isinstance(label, ClassLabel) and speaker is not None:
                speaker = label.int2str(speaker)
            yield Utterance("indictts", str(speaker if speaker is not None else "unknown"),
                            f"{path.stem}-{row:06d}", (example.get("text") or "").strip(), ParquetRow(str(path), row))


def read_librispeech(transcript_files):
    """librispeech/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt: `<utt_id> <TEXT>`
    lines, `<utt_id>.flac` beside it."""
    for transcript in transcript_files:
        for line in read_lines(transcript):
            utt_id, _, text = line.strip().partition(" ")
            if not utt_id:
                continue
            yield Utterance("librispeech", utt_id.split("-")[0], utt_id, text.strip(),
                            str(transcript.parent / f"{utt_id}.flac"))


def read_vctk(wav_dirs):
    """vctk/wav48_silence_trimmed/pXXX/pXXX_YYY_mic{1,2}.flac with vctk/txt/pXXX/pXXX_YYY.txt.
    Each sentence was recorded by two microphones: mic1 is taken, mic2 only where mic1 is missing.
    A few sentences (all of p315) have no text: kept, with text "" (the codec does not need it)."""
    for wav_dir in wav_dirs:
        txt_dir = wav_dir.parent / "txt"
        for speaker_dir in sorted(p for p in wav_dir.iterdir() if p.is_dir()):
            takes = defaultdict(dict)
            for audio in sorted([*speaker_dir.glob("*.flac"), *speaker_dir.glob("*.wav")]):
                base, _, mic = audio.stem.rpartition("_")
                if mic not in ("mic1", "mic2"):  # VCTK 0.80: pXXX_YYY.wav, one microphone
                    base, mic = audio.stem, "mic1"
                takes[base][mic] = audio
            for base, mics in sorted(takes.items()):
                txt = txt_dir / speaker_dir.name / f"{base}.txt"
                text = " ".join(read_lines(txt)).strip() if txt.is_file() else ""
                yield Utterance("vctk", speaker_dir.name, base, text, str(mics.get("mic1") or mics["mic2"]))


def read_ljspeech(metadata_files):
    """ljspeech/LJSpeech-1.1/metadata.csv: `id|text|normalized text`, wavs/<id>.wav (22.05 kHz)."""
    for metadata in metadata_files:
        for line in read_lines(metadata):
            fields = line.split("|")
            if len(fields) < 2:
                continue
            text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
            yield Utterance("ljspeech", "LJ", fields[0].strip(), text.strip(),
                            str(metadata.parent / "wavs" / f"{fields[0].strip()}.wav"))


def read_commonvoice(tsv_files):
    """commonvoice/<release>/te/validated.tsv (client_id, path, sentence, ...) with clips/<path>.mp3.
    The speaker is the first 16 hex digits of client_id (a 128-digit hash)."""
    for tsv in tsv_files:
        with open(tsv, encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            missing = {"client_id", "path", "sentence"} - set(reader.fieldnames or [])
            if missing:
                yield Rejected("commonvoice", "", str(tsv), f"validated.tsv lacks columns {sorted(missing)}")
                continue
            for row in reader:
                clip = (row["path"] or "").strip()
                if not clip:
                    continue
                yield Utterance("commonvoice", (row["client_id"] or "unknown")[:16], Path(clip).stem,
                                (row["sentence"] or "").strip(), str(tsv.parent / "clips" / clip))


def read_folder(wav_files):
    """folder/<speaker>/<name>.wav (any depth): the speaker is the WAV's parent folder; an optional
    <name>.txt beside it is the transcript."""
    for wav in wav_files:
        txt = wav.with_suffix(".txt")
        text = " ".join(read_lines(txt)).strip() if txt.is_file() else ""
        yield Utterance("folder", wav.parent.name, wav.stem, text, str(wav))


READERS = {"slr66": read_slr66, "indictts": read_indictts, "librispeech": read_librispeech,
           "vctk": read_vctk, "ljspeech": read_ljspeech, "commonvoice": read_commonvoice,
           "folder": read_folder}


def read_lines(path: Path) -> list[str]:
    # A stray byte in a transcript should cost one character, not the corpus.
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def list_utterances(found: dict[str, list[Path]]):
    utterances, rejected = [], []
    for corpus, paths in found.items():
        before = len(utterances)
        try:
            for item in READERS[corpus](paths):
                (rejected if isinstance(item, Rejected) else utterances).append(item)
        except Exception as e:  # a layout we misread must not take the other corpora down
            rejected.append(Rejected(corpus, "", str(paths[0].parent), f"cannot read corpus: {e!r}"))
        print(f"  {corpus}: {len(utterances) - before} utterances listed")
    return utterances, rejected


# --- choosing what goes where --------------------------------------------------------------------

def safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name) or "_"


def wav_path(out_dir: Path, utt: Utterance) -> Path:
    return out_dir / "wavs" / utt.corpus / safe_name(utt.speaker) / f"{safe_name(utt.utt_id)}.wav"


def drop_duplicates(utterances, out_dir):
    seen, kept, rejected = set(), [], []
    for utt in utterances:
        path = wav_path(out_dir, utt)
        if path in seen:
            rejected.append(Rejected(utt.corpus, utt.manifest_speaker, str(utt.source),
                                     f"duplicate utterance id {utt.utt_id} for speaker {utt.speaker}"))
            continue
        seen.add(path)
        kept.append(utt)
    return kept, rejected


def cap_per_speaker(utterances, max_per_speaker: int, seed: int):
    if not max_per_speaker:
        return utterances
    by_speaker = defaultdict(list)
    for utt in utterances:
        by_speaker[utt.manifest_speaker].append(utt)
    kept = []
    for speaker, utts in sorted(by_speaker.items()):
        if len(utts) > max_per_speaker:
            utts = random.Random(f"{seed}:{speaker}").sample(utts, max_per_speaker)
        kept += utts
    return kept


def assign_splits(utterances, n_val: int, n_test: int, seed: int):
    """Hold out whole speakers, per corpus, so val and test measure unseen voices in every corpus.
    A corpus with too few speakers to spare (LJSpeech: one; IndicTTS: two) stays in train. Seeded
    per corpus, so adding a corpus does not reshuffle the others."""
    speakers = defaultdict(set)
    for utt in utterances:
        speakers[utt.corpus].add(utt.manifest_speaker)
    splits, train_only = {}, []
    for corpus, names in sorted(speakers.items()):
        names = sorted(names)
        if n_val + n_test and len(names) <= n_val + n_test:
            train_only.append(corpus)
            splits.update({s: "train" for s in names})
            continue
        random.Random(f"{seed}:{corpus}").shuffle(names)
        splits.update({s: "test" for s in names[:n_test]})
        splits.update({s: "val" for s in names[n_test:n_test + n_val]})
        splits.update({s: "train" for s in names[n_test + n_val:]})
    return splits, train_only


# --- cleaning: decode, check, resample, trim, normalise, write (in worker processes) ---------------

def clean_all(utterances, out_dir: Path, langs: dict, args):
    """Returns manifest rows (without split) and Rejected for every utterance that failed."""
    rows, rejected, todo = [], [], []
    for utt in utterances:
        path = wav_path(out_dir, utt)
        duration = existing_duration(path)
        if duration is None:
            todo.append(utt)
        else:
            rows.append(manifest_row(utt, path, out_dir, duration, langs))
    if rows:
        print(f"{len(rows)} utterances already prepared, {len(todo)} to do")
    limits = (args.min_seconds, args.max_seconds)
    with tqdm(total=len(todo), desc="cleaning", unit="utt", mininterval=2) as progress:
        for utt, (duration, reason) in run_workers(todo, out_dir, limits, args.workers):
            progress.update()
            if reason:
                rejected.append(Rejected(utt.corpus, utt.manifest_speaker, str(utt.source), reason))
            else:
                rows.append(manifest_row(utt, wav_path(out_dir, utt), out_dir, duration, langs))
    return rows, rejected


def existing_duration(path: Path) -> float | None:
    try:
        info = sf.info(str(path))
    except Exception:  # absent, or not a WAV we wrote: (re)make it
        return None
    return info.frames / info.samplerate


def manifest_row(utt: Utterance, path: Path, out_dir: Path, duration: float, langs: dict) -> dict:
    return {"audio": path.relative_to(out_dir).as_posix(), "text": utt.text, "speaker": utt.manifest_speaker,
            "lang": langs[utt.corpus], "duration": round(duration, 3), "split": ""}


def run_workers(utterances, out_dir: Path, limits, workers: int):
    """Yield (utterance, (duration, reject_reason)) as workers finish. Few tasks are in flight at
    once: a parquet corpus streams its audio bytes through here and must not pile up in memory."""
    tasks = iter_tasks(utterances, out_dir)
    if workers <= 1:
        for utt, payload, path in tasks:
            yield utt, clean_utterance(payload, str(path), *limits)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending = {}
        for utt, payload, path in tasks:
            pending[pool.submit(clean_utterance, payload, str(path), *limits)] = utt
            if len(pending) >= 4 * workers:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                yield from ((pending.pop(f), worker_result(f)) for f in done)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            yield from ((pending.pop(f), worker_result(f)) for f in done)


def worker_result(future):
    try:
        return future.result()
    except Exception as e:  # a worker that died; its utterance is rejected, the run goes on
        return None, f"worker failed: {e!r}"


def iter_tasks(utterances, out_dir: Path):
    """(utterance, path or audio bytes, output path): files first, then each parquet file read once,
    in order, handing over only the rows wanted."""
    wanted = defaultdict(dict)
    for utt in utterances:
        if isinstance(utt.source, ParquetRow):
            wanted[utt.source.path][utt.source.row] = utt
        else:
            yield utt, utt.source, wav_path(out_dir, utt)
    for parquet, rows in wanted.items():
        from datasets import Audio, load_dataset
        stream = load_dataset("parquet", data_files=[parquet], split="train", streaming=True,
                              columns=["audio"]).cast_column("audio", Audio(decode=False))
        for row, example in enumerate(stream):
            if row in rows:
                audio = example["audio"] or {}
                payload = audio.get("bytes")
                if payload is None and audio.get("path"):  # stored by reference, next to the parquet
                    payload = str(Path(parquet).parent / audio["path"])
                yield rows[row], payload if payload is not None else b"", wav_path(out_dir, rows[row])


def clean_utterance(source, out_path: str, min_s: float, max_s: float):
    """Decode, check, clean and write one utterance. Returns (duration, None) or (None, reason);
    never raises, so one bad file cannot stop a run."""
    try:
        pcm, sr = decode(source)
        # Judge clipping at the native rate: resampling rings around flat-topped peaks.
        reason = check_clip(pcm, sr, min_s=min_s, max_s=max_s)
        if reason:
            return None, reason
        pcm, _ = trim_silence(resample(pcm, sr, SAMPLE_RATE), SAMPLE_RATE)
        pcm = normalize_loudness(pcm)
        reason = check_clip(pcm, SAMPLE_RATE, min_s=min_s, max_s=max_s)
        if reason:
            return None, f"{reason} after trimming silence"
        save_wav(out_path, pcm, SAMPLE_RATE)
        return len(pcm) / SAMPLE_RATE, None
    except AudioError as e:
        return None, str(e)
    except Exception as e:
        return None, f"unexpected error: {e!r}"


def decode(source) -> tuple[np.ndarray, int]:
    """Mono float32 at the file's own rate. libsndfile first (WAV, FLAC, and MP3 from 1.1 on), then
    PyAV (FFmpeg) for what libsndfile cannot read."""
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioError("empty file (0 bytes)")
    else:
        if not os.path.exists(source):
            raise AudioError("missing audio file")
        if os.path.getsize(source) == 0:
            raise AudioError("empty file (0 bytes)")
    try:
        pcm, sr = sf.read(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                          dtype="float32", always_2d=False)
        return to_mono(pcm), sr
    except Exception as e:  # its message names the BytesIO's address: drop it, rejects stay reproducible
        libsndfile_error = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "audio bytes", str(e))
    try:
        return decode_with_av(source)
    except ImportError:
        raise AudioError(f"cannot decode audio: {libsndfile_error} (and PyAV is not installed)")
    except Exception as e:
        raise AudioError(f"cannot decode audio: {libsndfile_error}; PyAV: {e}") from e


def decode_with_av(source) -> tuple[np.ndarray, int]:
    import av
    with av.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        to_float_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [out.to_ndarray().reshape(-1)
                  for frame in container.decode(stream) for out in to_float_mono.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in to_float_mono.resample(None)]
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


# --- outputs -------------------------------------------------------------------------------------

def write_outputs(out_dir: Path, rows, rejected, train_only, args):
    rows.sort(key=lambda r: r["audio"])
    for split in ("train", "val", "test"):
        n = write_manifest(out_dir / f"{split}.jsonl", (r for r in rows if r["split"] == split))
        print(f"{split}: {n} utterances -> {out_dir / f'{split}.jsonl'}")
    rejected.sort(key=lambda r: (r.corpus, r.source))
    write_jsonl(out_dir / "rejected.jsonl", ({"source": r.source, "corpus": r.corpus, "speaker": r.speaker,
                                              "reason": r.reason} for r in rejected))
    summary = summarize(rows, rejected, train_only, args)
    tmp = out_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out_dir / "summary.json")
    print(f"rejected: {len(rejected)} -> {out_dir / 'rejected.jsonl'}"
          + "".join(f"\n  {n:6d}  {reason}" for reason, n in summary["rejected"]["by_reason"].items()))
    for corpus, c in summary["corpora"].items():
        print(f"  {corpus:12s} {c['utterances']:7d} utt  {c['hours']:8.2f} h  {c['speakers']:5d} speakers")
    if train_only:
        print(f"  too few speakers to hold any out, train only: {', '.join(train_only)}")


def write_jsonl(path: Path, rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def summarize(rows, rejected, train_only, args) -> dict:
    def tally(selected):
        return {"utterances": len(selected), "hours": round(sum(r["duration"] for r in selected) / 3600, 4),
                "speakers": len({r["speaker"] for r in selected})}

    corpus_of = lambda row: row["audio"].split("/")[1]  # noqa: E731 (wavs/<corpus>/...)
    corpora = {}
    for corpus in sorted({corpus_of(r) for r in rows} | {r.corpus for r in rejected}):
        mine = [r for r in rows if corpus_of(r) == corpus]
        corpora[corpus] = {"lang": mine[0]["lang"] if mine else LANG[corpus], **tally(mine),
                           "rejected": sum(1 for r in rejected if r.corpus == corpus),
                           "splits": {s: tally([r for r in mine if r["split"] == s]) for s in ("train", "val", "test")}}
    speakers = defaultdict(list)
    for row in rows:
        speakers[row["speaker"]].append(row)
    return {
        "sample_rate": SAMPLE_RATE,
        "data_dir": str(args.data_dir),
        "seed": args.seed,
        "corpora": corpora,
        "splits": {s: tally([r for r in rows if r["split"] == s]) for s in ("train", "val", "test")},
        "speakers": {name: {"split": rs[0]["split"], **tally(rs)} for name, rs in sorted(speakers.items())},
        "train_only_corpora": train_only,
        "rejected": {"total": len(rejected),
                     "by_reason": dict(Counter(reason_kind(r.reason) for r in rejected).most_common())},
    }


def reason_kind(reason: str) -> str:
    """'too short (0.10 s < 0.5 s)' -> 'too short': the summary counts kinds, rejected.jsonl has details."""
    return re.split(r"[(:;]", reason, maxsplit=1)[0].strip()


# --- the synthetic corpus (another module builds it) ---------------------------------------------

def build_synthetic(args) -> int:
    import synthetic_corpus  # imported here: the real-corpus path must not depend on it
    kwargs = {"workers": args.workers, "seed": args.seed}
    if args.per_voice:
        kwargs["per_voice_train"] = args.per_voice
    paths = synthetic_corpus.build(Path(args.out), **kwargs)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", help="folder with the corpora, as download_datasets.sh lays them out")
    p.add_argument("--out", required=True,
                   help="output folder: wavs/, train/val/test.jsonl, rejected.jsonl, summary.json")
    p.add_argument("--corpora", help=f"comma-separated subset of {','.join(LAYOUTS)} (default: every one found)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--val_speakers", type=int, default=2, help="speakers held out for val, per corpus (default 2); a corpus with no more "
                        "speakers than val + test stays in train")
    p.add_argument("--test_speakers", type=int, default=2, help="speakers held out for test, per corpus (default 2)")
    p.add_argument("--max_per_speaker", type=int, default=0,
                   help="take at most N utterances a speaker, picked (seeded) before cleaning (0: all)")
    p.add_argument("--min_seconds", type=float, default=0.5, help="shorter clips are rejected (default 0.5)")
    p.add_argument("--max_seconds", type=float, default=30.0, help="longer clips are rejected (default 30)")
    p.add_argument("--folder_lang", default="te", help="lang of the folder corpus's utterances (default te)")
    p.add_argument("--seed", type=int, default=0, help="seed of the speaker splits and --max_per_speaker")
    p.add_argument("--synthetic", action="store_true",
                   help="build the synthetic corpus (synthetic_corpus.build) into --out instead")
    p.add_argument("--per_voice", type=int, help="with --synthetic: training utterances per voice")
    args = p.parse_args(argv)
    if args.synthetic:
        return args
    if not args.data_dir:
        p.error("--data_dir is required (or --synthetic)")
    if args.corpora:
        args.corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
        unknown = [c for c in args.corpora if c not in LAYOUTS]
        if unknown:
            p.error(f"unknown corpora {unknown}; known: {', '.join(LAYOUTS)}")
    for flag in ("val_speakers", "test_speakers", "max_per_speaker", "workers"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag} must not be negative")
    return args


if __name__ == "__main__":
    sys.exit(main())
