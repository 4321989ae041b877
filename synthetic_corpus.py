"""Build the synthetic Telugu corpus: catalogue voices x project sentences -> WAVs + manifests.

    data/telugu_sentences.tsv (category, sentence)
      -> hold out a seeded, category-stratified share of sentences
      -> train = train voices (agents included) x the other sentences
         val   = val voices  x held-out sentences      (unseen voices AND unseen sentences,
         test  = test voices x held-out sentences       so scores measure generalisation)
      -> per clip: synthesize, trim silence, normalise loudness, check, save
      -> out_dir/{train,val,test}.jsonl, corpus.json, rejected.jsonl, wavs/<voice>/<sentence id>.wav

Work is spread over processes, each task one voice (libespeak-ng holds one voice per process).
Re-running is cheap: a clip whose WAV is on disk (and whose sidecar JSON says it came from the same
text and voice settings) is not synthesised again, and the manifests come out identical.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

import audio_io
import telugu_tts
from config import ROOT

DEFAULT_SENTENCES = ROOT / "data" / "telugu_sentences.tsv"
SPLITS = ("train", "val", "test")
_TASK_CLIPS = 25  # clips per worker task: small enough for a live progress bar and even load


@dataclass(frozen=True)
class Sentence:
    id: str  # "s00042": the 0-based row in the TSV; also the clip's file name
    category: str
    text: str


# --- sentences and splits -------------------------------------------------------------------------

def read_sentences(path) -> list[Sentence]:
    """TSV with a header naming `category` and `sentence`. Blank and repeated sentences are dropped,
    since a sentence present twice could land on both sides of the held-out split."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sentence file {path} not found (a TSV with columns category, sentence)")
    sentences, seen = [], set()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or not {"category", "sentence"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: header must name the columns category and sentence, got {reader.fieldnames}")
        for row_no, row in enumerate(reader):
            text = " ".join((row["sentence"] or "").split())
            if text and text not in seen:
                seen.add(text)
                sentences.append(Sentence(f"s{row_no:05d}", (row["category"] or "").strip() or "none", text))
    if not sentences:
        raise ValueError(f"{path}: no sentences")
    return sentences


def split_sentences(sentences: list[Sentence], heldout_fraction: float, seed: int):
    """(train, held-out) sentence lists. Per category a seeded shuffle holds out round(fraction * n),
    at least one when the category has two or more sentences, so every topic is tested."""
    by_category = defaultdict(list)
    for s in sentences:
        by_category[s.category].append(s)
    rng = random.Random(seed)
    heldout_ids = set()
    for category in sorted(by_category):
        group = list(by_category[category])
        rng.shuffle(group)
        k = round(heldout_fraction * len(group))
        if heldout_fraction > 0 and len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        heldout_ids.update(s.id for s in group[:k])
    train = [s for s in sentences if s.id not in heldout_ids]
    heldout = [s for s in sentences if s.id in heldout_ids]
    return train, heldout


def assign_sentences(voices, pool: list[Sentence], per_voice: int, seed: int) -> dict[str, list[Sentence]]:
    """Each voice gets `per_voice` distinct sentences of `pool`. Voices take consecutive windows of
    one seeded permutation, so together they cover the pool as evenly as possible (independent
    random samples would leave many sentences never spoken)."""
    order = list(pool)
    random.Random(seed).shuffle(order)
    n = min(per_voice, len(order))
    out = {}
    for i, voice in enumerate(voices):
        offset = (i * n) % len(order) if order else 0
        out[voice.name] = [order[(offset + j) % len(order)] for j in range(n)]
    return out


def _split_of(voice: telugu_tts.Voice) -> str:
    return "train" if voice.role in ("train", "agent") else voice.role


# --- one clip, one task ---------------------------------------------------------------------------

def _clip_paths(out_dir: Path, voice: str, sentence_id: str) -> tuple[Path, Path]:
    wav = out_dir / "wavs" / voice / f"{sentence_id}.wav"
    return wav, wav.with_suffix(".json")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _cached(wav: Path, sidecar: Path, expected: dict):
    """The sidecar of a finished clip made from the same text and voice settings, else None."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta["source"] != expected:
            return None
        if meta["rejected"] is None:
            info = sf.info(str(wav))  # the WAV must still be there and readable
            if info.frames == 0:
                return None
            meta["duration"] = info.frames / info.samplerate
        return meta
    except (OSError, ValueError, KeyError, RuntimeError):  # missing, half-written or stale
        return None


def make_clip(out_dir: Path, voice: telugu_tts.Voice, sentence: Sentence) -> dict:
    """Synthesise (or reuse) one clip; returns its sidecar record: spoken text, words, duration or
    the reason it was rejected."""
    wav, sidecar = _clip_paths(out_dir, voice.name, sentence.id)
    source = {"text": sentence.text, "voice": asdict(voice)}
    meta = _cached(wav, sidecar, source)
    if meta is not None:
        return meta
    pcm, words = telugu_tts.synthesize(sentence.text, voice)
    pcm, offset = audio_io.trim_silence(pcm)
    duration = len(pcm) / audio_io.SAMPLE_RATE
    words = [{"word": w["word"], "start": round(min(max(w["start"] - offset, 0.0), duration), 3),
              "end": round(min(max(w["end"] - offset, 0.0), duration), 3)} for w in words]
    pcm = audio_io.normalize_loudness(pcm)
    reason = audio_io.check_clip(pcm)
    meta = {"source": source, "text": telugu_tts.spoken_text(sentence.text), "words": words,
            "rejected": reason}
    wav.parent.mkdir(parents=True, exist_ok=True)
    if reason is None:
        audio_io.save_wav(wav, pcm)
    _write_json(sidecar, meta)  # written last: a sidecar means the clip is complete
    meta["duration"] = duration
    return meta


def _run_task(task) -> list[tuple[str, str, dict]]:
    """Worker: one voice, a few sentences. Returns (voice, sentence id, clip record) triples."""
    out_dir, voice, sentences = task
    return [(voice.name, s.id, make_clip(out_dir, voice, s)) for s in sentences]


# --- the build ------------------------------------------------------------------------------------

def build(out_dir, sentences_path=DEFAULT_SENTENCES, per_voice_train: int = 200, per_voice_heldout: int = 60,
          heldout_sentence_fraction: float = 0.1, workers: int = 2, seed: int = 0, progress: bool = True,
          voices=None) -> dict[str, Path]:
    """Build (or complete) the corpus in out_dir. `voices`: catalogue names or Voice objects to use
    (default: the whole catalogue); each goes to the split of its role. Returns the paths of the
    train/val/test manifests, corpus.json and rejected.jsonl."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [telugu_tts.get_voice(v) for v in (voices if voices is not None else telugu_tts.voices())]
    by_split = {split: [v for v in chosen if _split_of(v) == split] for split in SPLITS}
    sentences = read_sentences(sentences_path)
    train_sentences, heldout_sentences = split_sentences(sentences, heldout_sentence_fraction, seed)

    plan = {}  # voice name -> sentences
    plan.update(assign_sentences(by_split["train"], train_sentences, per_voice_train, seed))
    plan.update(assign_sentences(by_split["val"], heldout_sentences, per_voice_heldout, seed + 1))
    plan.update(assign_sentences(by_split["test"], heldout_sentences, per_voice_heldout, seed + 2))
    for split, pool, per_voice in (("train", train_sentences, per_voice_train),
                                   ("val", heldout_sentences, per_voice_heldout),
                                   ("test", heldout_sentences, per_voice_heldout)):
        if by_split[split] and len(pool) < per_voice:
            print(f"note: {split} voices get {len(pool)} sentences each, not {per_voice}: "
                  f"only {len(pool)} sentences in their pool", file=sys.stderr)
    voice_by_name = {v.name: v for v in chosen}
    chunks = {name: [ss[i:i + _TASK_CLIPS] for i in range(0, len(ss), _TASK_CLIPS)] for name, ss in plan.items()}
    tasks = []  # round-robin over voices so both workers stay busy to the end
    for i in range(max((len(c) for c in chunks.values()), default=0)):
        tasks += [(out_dir, voice_by_name[name], c[i]) for name, c in chunks.items() if i < len(c)]

    records = {}
    bar = tqdm(total=sum(len(ss) for ss in plan.values()), unit="clip", disable=not progress,
               desc=f"synthesising {out_dir}")
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:  # fresh processes: one espeak each
            for result in pool.imap_unordered(_run_task, tasks):
                records.update({(name, sid): meta for name, sid, meta in result})
                bar.update(len(result))
    else:
        for task in tasks:
            result = _run_task(task)
            records.update({(name, sid): meta for name, sid, meta in result})
            bar.update(len(result))
    bar.close()

    paths, rows_by_split, rejected = {}, {}, []
    for split in SPLITS:
        rows = []
        for voice in by_split[split]:
            for s in sorted(plan[voice.name], key=lambda s: s.id):
                meta = records[(voice.name, s.id)]
                audio = f"wavs/{voice.name}/{s.id}.wav"
                if meta["rejected"] is not None:
                    rejected.append({"audio": audio, "speaker": voice.name, "text": meta["text"],
                                     "reason": meta["rejected"]})
                    continue
                rows.append({"audio": audio, "text": meta["text"], "speaker": voice.name, "lang": "te",
                             "duration": round(meta["duration"], 3), "split": split, "words": meta["words"],
                             "category": s.category, "gender": voice.gender})
        paths[split] = out_dir / f"{split}.jsonl"
        audio_io.write_manifest(paths[split], rows)
        rows_by_split[split] = rows

    paths["rejected"] = out_dir / "rejected.jsonl"
    tmp = paths["rejected"].with_name("rejected.jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected), encoding="utf-8")
    os.replace(tmp, paths["rejected"])

    hours = {split: round(sum(r["duration"] for r in rows) / 3600, 4) for split, rows in rows_by_split.items()}
    summary = {
        "sentences_path": str(sentences_path), "seed": seed, "heldout_sentence_fraction": heldout_sentence_fraction,
        "per_voice_train": per_voice_train, "per_voice_heldout": per_voice_heldout,
        "voices": {split: [asdict(v) for v in by_split[split]] for split in SPLITS},
        "n_sentences": {"train": len(train_sentences), "heldout": len(heldout_sentences)},
        "heldout_sentence_ids": sorted(s.id for s in heldout_sentences),
        "counts": {split: len(rows) for split, rows in rows_by_split.items()},
        "rejected": len(rejected),
        "hours": hours, "total_hours": round(sum(hours.values()), 4),
    }
    paths["corpus"] = out_dir / "corpus.json"
    _write_json(paths["corpus"], summary)
    return paths


def build_ear_corpus(out_dir, n_voices: int = 64, per_voice: int = 200, n_requests: int = 3000,
                     workers: int = 2, seed: int = 0, progress: bool = True) -> list[Path]:
    """Extra training audio for the ear: `n_voices` random training voices (unused variant families
    excluded, random pitch, range and rate) reading the corpus's training sentences (the same held-out
    split as `build`, so no held-out sentence is heard), and the dialogue domain's training requests
    (training phrasings and slot values only) in the same voices. Returns the two train manifests."""
    import dialogue_domain

    out_dir = Path(out_dir)
    voices = telugu_tts.random_train_voices(n_voices, seed)
    sentences = build(out_dir / "sentences", DEFAULT_SENTENCES, per_voice, 0, workers=workers, seed=0,
                      progress=progress, voices=voices)["train"]
    rng = random.Random(seed)
    texts = sorted({dialogue_domain.sample_turn(rng, "train").user_text for _ in range(n_requests)})
    tsv = out_dir / "requests.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text("category\tsentence\n" + "".join(f"request\t{t}\n" for t in texts), encoding="utf-8")
    requests = build(out_dir / "requests", tsv, per_voice // 2, 0, heldout_sentence_fraction=0.0,
                     workers=workers, seed=seed, progress=progress, voices=voices)["train"]
    return [sentences, requests]


# Modules whose docstrings give plain English sentences on a machine with no internet: the ear's
# "not Telugu" examples only need English sounds, not any particular text.
_ENGLISH_SOURCES = ("collections", "json", "argparse", "logging", "subprocess", "unittest", "asyncio",
                    "pathlib", "typing", "datetime", "random", "statistics", "textwrap", "shutil",
                    "tarfile", "zipfile", "socket", "threading", "multiprocessing", "email.message")


def english_sentences(n: int, seed: int = 0) -> list[str]:
    """n distinct English sentences (4-16 words, letters only) from the standard library's docstrings."""
    import importlib
    import inspect
    import re

    found = set()
    for name in _ENGLISH_SOURCES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""] + [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(module)]
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                sentence = sentence.strip().rstrip(".!?")
                if 4 <= len(sentence.split()) <= 16 and re.fullmatch(r"[A-Za-z ,']+", sentence):
                    found.add(sentence + ".")
    found = sorted(found)
    random.Random(seed).shuffle(found)
    return found[:n]


def build_foreign_corpus(out_dir, n_clips: int = 1500, workers: int = 2, seed: int = 0,
                         progress: bool = True) -> Path:
    """Speech that is not Telugu, for the ear to learn to write nothing for it: English sentences in
    espeak's English voices with random pitch, range and rate. Rows carry `lang` "en" and the English
    text (what was said); train_asr.py gives them an empty transcript. Returns the train manifest."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    variants = telugu_tts.training_variants()
    voices = [telugu_tts.Voice(f"en_{i:02d}_{v}", f"en+{v}", "unknown", pitch=rng.randint(20, 80),
                               range=rng.randint(25, 85), rate=rng.randint(135, 210))
              for i, v in enumerate(rng.sample(variants, 20))]
    texts = english_sentences(n_clips, seed)
    tsv = out_dir / "english.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text("category\tsentence\n" + "".join(f"english\t{t}\n" for t in texts), encoding="utf-8")
    path = build(out_dir, tsv, max(1, n_clips // len(voices)), 0, heldout_sentence_fraction=0.0,
                 workers=workers, seed=seed, progress=progress, voices=voices)["train"]
    rows = [dict(r, lang="en") for r in audio_io.read_manifest(path)]
    for r in rows:
        r["audio"] = str(Path(r["audio"]).relative_to(out_dir))
    audio_io.write_manifest(path, rows)
    return path


def add_build_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--sentences", default=str(DEFAULT_SENTENCES), help="TSV with columns category, sentence")
    parser.add_argument("--per_voice_train", type=int, default=200, help="clips per train voice")
    parser.add_argument("--per_voice_heldout", type=int, default=60, help="clips per val/test voice")
    parser.add_argument("--heldout_sentence_fraction", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voices", nargs="+", help="catalogue voice names to use (default: all)")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--foreign_clips", type=int, default=0,
                        help=">0: build this many English clips instead (build_foreign_corpus), speech the ear "
                             "must not transcribe")
    parser.add_argument("--ear_voices", type=int, default=0,
                        help=">0: build the ear's extra training corpus instead (build_ear_corpus): this many "
                             "random training voices reading the training sentences and the domain's requests")
    return parser


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build the synthetic Telugu corpus (espeak-ng voices).")
    parser.add_argument("--out", default=str(ROOT / "data" / "synthetic"), help="output folder")
    args = add_build_args(parser).parse_args(argv)
    t0 = time.time()
    if args.foreign_clips > 0:
        path = build_foreign_corpus(args.out, args.foreign_clips, args.workers, args.seed, not args.no_progress)
        print(f"train {sum(1 for _ in open(path, encoding='utf-8')):6d} clips -> {path}; {time.time() - t0:.0f} s")
        return 0
    if args.ear_voices > 0:
        for path in build_ear_corpus(args.out, args.ear_voices, args.per_voice_train, workers=args.workers,
                                     seed=args.seed, progress=not args.no_progress):
            print(f"train {sum(1 for _ in open(path, encoding='utf-8')):6d} clips -> {path}")
        print(f"{time.time() - t0:.0f} s")
        return 0
    try:
        paths = build(args.out, args.sentences, args.per_voice_train, args.per_voice_heldout,
                      args.heldout_sentence_fraction, args.workers, args.seed, not args.no_progress, args.voices)
    except (FileNotFoundError, ValueError, telugu_tts.TTSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = json.loads(paths["corpus"].read_text(encoding="utf-8"))
    for split in SPLITS:
        print(f"{split:5s} {summary['counts'][split]:6d} clips {summary['hours'][split]:7.3f} h  "
              f"{len(summary['voices'][split])} voices  -> {paths[split]}")
    print(f"rejected {summary['rejected']} (see {paths['rejected']}); {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
