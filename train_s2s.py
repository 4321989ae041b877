"""Train the S2S model in two stages (DESIGN.md, S2S_PROBE.md): first streaming transcription of the
user over the whole sentence corpus, then two-channel dialogues.

    python train_s2s.py --codec_path C --speaker_path S --data_dir data/synthetic --epochs 50
    python train_s2s.py ... --stage transcribe --max_steps 3000     # stage 1 only
    python train_s2s.py ... --stage dialogue                        # stage 2 from OUT/transcribe
    python train_s2s.py ... --resume                                # continue both stages exactly
    torchrun --nproc_per_node 4 train_s2s.py --config a6000 ...

Stage 1 ("transcribe"): the user stream is a sentence clip (augmented on the fly), the target is
its frame-aligned transcript (align_words, anchor "end", a lag of 2 frames); the agent's streams
are silence codes and PAD text, so the model also learns to stay quiet while it listens. Thousands
of distinct sentences and a dense target per word: an answer-only loss over a few hundred
questions memorises voices instead (S2S_PROBE.md).

Stage 2 ("dialogue"): random crops of the synthetic dialogues. User channel augmented on the fly
(length-preserving effects: the agent's channel is timed against it), agent channel as codec codes
pre-tokenised once, agent text aligned to the agent's audio with a small lead, the agent voice's
embedding from the voice bank as conditioning; a share of stage-1 sentences is mixed in so the
transcription is not forgotten, and `--text_share` mixes in text-only dialogues (TextDialogues:
fresh plans of the dialogue domain, no audio), because with the true transcript forced, the
rendered corpus alone taught the agent to answer 11 % of held-out requests: answering, not
hearing, was the first limit.

Each stage is a run folder of its own (OUT/transcribe, OUT/dialogue) with checkpoints, TensorBoard
and val.jsonl (the validation curve); the final weights go to OUT/s2s.safetensors (fp16) with the
JSON config and the tokenizer beside them, which is what s2s_transformer.load() reads.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import dialogue_corpus
import dialogue_domain as domain
import train_utils as tu
from audio_io import load_audio, read_manifest
from config import ConfigError, add_train_args, config_from_args, from_dict, to_dict
from s2s_transformer import CLOCK_DIM, S2SModel, _shift_right, clock_features, fill_missing_clock
from telugu_tokenizer import PAD_ID, Tokenizer

STAGES = ("transcribe", "dialogue")
ROOT = Path(__file__).resolve().parent


@dataclass
class StageSettings:
    """What differs between the stages; saved in every checkpoint. Flags of the same names."""
    stage1_steps: int = 0  # 0: train.max_steps, else train.epochs over the sentence corpus
    stage2_steps: int = 0  # 0: train.max_steps, else train.epochs over the dialogues
    stage1_minutes: float = 0.0  # >0: stage 1 also stops after this much wall-clock time (LR decays over it)
    stage2_minutes: float = 0.0  # >0: likewise for stage 2
    user_lag_frames: int = 2  # user transcript: a word's tokens start 2 frames after it was heard
    agent_lead_frames: int = 1  # agent text: a word's tokens start 1 frame before its audio
    crop_s: float = 16.0  # stage 2: random crops of whole dialogues of this length
    sentence_share: float = 0.25  # stage 2: share of each epoch's items that are stage-1 sentences
    sentence_voice_share: float = 1.0  # share of sentence items given an agent voice; the rest get none
    # (zero vector, "listening only"), so the agent's silence there is tied to that condition, not to
    # speech that sounds like a request (many sentences are greetings and questions)
    lead_silence_s: float = 1.0  # stage 1: up to this much silence before a clip (no fixed onset)
    tail_silence_s: float = 0.8  # stage 1: silence after it, for the lagging transcript
    augment_strength: float = 1.0  # 0 disables augment.py
    stage1_agent_text_weight: float = 0.1  # stage 1 also learns "PAD while listening"
    stage1_code_weight: float = 0.0  # >0 trains the depth transformer on silence codes too (3-4x cost)
    echo: int = 1  # data echoing (Choi et al. 2019): train on each loaded batch this many times when the loader is the bottleneck
    stage2_code_weight: float = -1.0  # <0: the model's loss weights; 0: text streams only (no depth pass, 3-4x cheaper)
    depth_fraction: float = 1.0  # <1: the depth transformer trains on this random share of each batch's frames (Sesame CSM)
    val_clips: int = 32  # stage 1 validation: val-voice clips transcribed greedily
    val_dialogues: int = 6  # stage 2 validation: held-out dialogues answered greedily
    max_dialogues: int = 0  # stage 2: the first N training dialogues only (0: all; smoke tests)
    text_share: float = 0.0  # stage 2: share of items that are text-only dialogues (TextDialogues)
    text_word_dropout: float = 0.0  # TextDialogues: each non-slot word of a request dropped with this chance
    extra_phrasings: str = ""  # TextDialogues: also draw the train-only extras in this JSON (dialogue_domain)


def window_note(crop_s: float, frame_rate: float, context_frames: int) -> str | None:
    """Streaming attends over context_frames; training sees crop_s at most. A model that never saw
    that much context hears worse past it (shipped model J, held-out dialogues: user CER 0.61 with
    a 30 s window against 0.57 with its 10 s crops' length; docs/experiments.md, "The attention window")."""
    crop = int(round(crop_s * frame_rate))
    if crop >= context_frames:
        return None
    return (f"stage-2 crops of {crop_s:g} s ({crop} frames) are shorter than s2s.context_frames={context_frames}: "
            f"the model will stream with more context than it trained on; use --crop_s "
            f"{context_frames / frame_rate:g} or more, or --set s2s.context_frames={crop}")


# --- text and CER ----------------------------------------------------------------------------------

def cer_text(text: str) -> str:
    """The form both sides of a CER are compared in: NFC, letters, marks and digits only, single
    spaces (punctuation is not spoken, so neither transcript carries it)."""
    text = unicodedata.normalize("NFC", text).replace("\u200c", "").replace("\u200d", "")
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in text)
    return " ".join(kept.split())


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(refs, hyps) -> float:
    """Character error rate over a set: total edits / total reference characters."""
    refs, hyps = [cer_text(r) for r in refs], [cer_text(h) for h in hyps]
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))


def words_text(words) -> str:
    return " ".join(w["word"] for w in words)


# --- stage 1 data: the sentence corpus -------------------------------------------------------------

def frames_for(n_samples: int, frame_size: int) -> int:
    return -(-n_samples // frame_size)


def align(tokenizer, words, n_frames, frame_rate, lag, anchor):
    """align_words, growing the stream by whole frames when the last word's tokens spill past it.
    Returns (ids, n_frames)."""
    while True:
        try:
            return tokenizer.align_words(words, n_frames, frame_rate, lag, anchor), n_frames
        except ValueError:
            n_frames += 4


class Sentences(torch.utils.data.Dataset):
    """Stage 1 items: one clip (augmented, after a random lead of silence, followed by silence) as
    the user's side, its transcript as the user-text target, the agent silent. Item i of epoch e
    is fixed by (seed, e, i): a resumed run sees exactly the audio an unbroken one would."""

    def __init__(self, manifest, tokenizer, sample_rate, frame_size, settings: StageSettings, seed: int,
                 voices: np.ndarray | None):
        self.rows = [dict(audio=r["audio"], words=r["words"], speaker=r["speaker"])
                     for r in read_manifest(manifest) if r.get("words")]
        if not self.rows:
            raise SystemExit(f"{manifest}: no utterances with word timings")
        self.tok, self.sr, self.fs, self.s = tokenizer, sample_rate, frame_size, settings
        self.frame_rate = sample_rate / frame_size
        self.seed, self.epoch, self.voices = seed, 0, voices

    def __len__(self):
        return len(self.rows)

    def item(self, i, rng):
        row = self.rows[i]
        pcm = load_audio(row["audio"], self.sr)
        words = [dict(w) for w in row["words"]]
        if self.s.augment_strength > 0:
            pcm, words, _ = augment.augment(pcm, self.sr, rng, words, strength=self.s.augment_strength)
        lead = int(rng.uniform(0, self.s.lead_silence_s) * self.sr)
        for w in words:
            w["start"], w["end"] = w["start"] + lead / self.sr, w["end"] + lead / self.sr
        n = frames_for(lead + len(pcm) + int(self.s.tail_silence_s * self.sr), self.fs)
        user_text, n = align(self.tok, words, n, self.frame_rate, self.s.user_lag_frames, "end")
        user = np.zeros(n * self.fs, np.float32)
        user[lead:lead + len(pcm)] = pcm
        voice = self.voices[int(rng.integers(len(self.voices)))] if self.voices is not None else None
        if self.s.sentence_voice_share < 1 and rng.random() >= self.s.sentence_voice_share:
            voice = None  # drawn after everything else, so the default (1.0) keeps every item as it was
        # Some moment, as the agent always knows one (drawn last, so the items stay as they were).
        clock = clock_features(dialogue_corpus.NOW_START +
                               dt.timedelta(minutes=int(rng.integers(dialogue_corpus.NOW_SPAN_MIN))))
        return dict(user=user, user_text=np.asarray(user_text), agent_text=np.full(n, PAD_ID),
                    agent_codes=None, voice=voice, clock=clock)

    def __getitem__(self, i):
        return self.item(i, tu.item_rng(self.seed, self.epoch, i))


# --- stage 2 data: dialogues -----------------------------------------------------------------------

def file_key(path) -> str:
    st = os.stat(path)
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def codec_hash(codec_path) -> str:
    """What the S2S model depends on in a codec: the encoder and quantizer weights (the user
    latents and the agent codes), as fp16, so the fp32 and fp16 exports of one codec agree and a
    decoder fine-tuned with `train_codec_dac.py --decoder_only` keeps the hash (and the model)."""
    from safetensors import safe_open
    h = hashlib.sha256()
    with safe_open(str(codec_path), "pt") as f:
        for name in sorted(f.keys()):
            if name.startswith(("encoder.", "quantizer.")) and not name.endswith(".usage"):
                h.update(name.encode())
                h.update(f.get_tensor(name).to(torch.float16).numpy().tobytes())
    return h.hexdigest()[:16]


class CodeCache:
    """The agent channel of every dialogue as codec codes, encoded once by the frozen codec:
    int16 shards [n_codebooks, frames] (numpy .npy, memory-mapped, so a corpus bigger than memory
    streams from disk) and index.json {file key: [shard, offset, frames]}, in a folder named by
    the codec checkpoint's hash. A re-run, or another stage, encodes nothing it already has."""

    def __init__(self, root, codec_path, shard_frames: int = 1 << 17):  # 87 min of audio a shard
        self.dir = Path(root) / codec_hash(codec_path)
        self.shard_frames = shard_frames
        index = self.dir / "index.json"
        self.index = json.loads(index.read_text()) if index.exists() else {}
        self._shards: dict[int, np.ndarray] = {}

    def missing(self, keys) -> list[str]:
        return [k for k in keys if k not in self.index]

    def build(self, jobs, encode) -> tuple[int, int]:
        """jobs: [(key, load_pcm)]; encode(pcm) -> int codes [K, frames]. Returns (reused, encoded)."""
        jobs = list(dict(jobs).items())  # a dialogue listed twice is encoded once
        todo = [(k, load) for k, load in jobs if k not in self.index]
        if not todo:
            return len(jobs), 0
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir.parent / ".gitignore").write_text("*\n")  # derived data: never committed
        shard = 1 + max((v[0] for v in self.index.values()), default=-1)
        parts, offset = [], 0

        def flush():
            nonlocal parts, offset, shard
            if not parts:
                return
            path = self.dir / f"shard_{shard:05d}.npy"
            tmp = path.with_name(path.name + ".tmp.npy")
            np.save(tmp, np.concatenate([p for _, p in parts], axis=1).astype(np.int16))
            os.replace(tmp, path)
            for key, codes in parts:
                self.index[key][0] = shard
            tmp_index = self.dir / "index.json.tmp"
            tmp_index.write_text(json.dumps(self.index))
            os.replace(tmp_index, self.dir / "index.json")  # only after the shard it points into
            parts, offset, shard = [], 0, shard + 1

        pending = {}
        for key, load in tqdm(todo, desc="pre-tokenising agent audio", dynamic_ncols=True):
            codes = np.asarray(encode(load()))
            pending[key] = [shard, offset, codes.shape[1]]
            parts.append((key, codes))
            offset += codes.shape[1]
            if offset >= self.shard_frames:
                self.index.update({k: pending.pop(k) for k, _ in parts})
                flush()
        self.index.update(pending)
        flush()
        return len(jobs) - len(todo), len(todo)

    def get(self, key) -> np.ndarray:
        shard, offset, n = self.index[key]
        if shard not in self._shards:
            self._shards[shard] = np.load(self.dir / f"shard_{shard:05d}.npy", mmap_mode="r")
        return self._shards[shard][:, offset:offset + n]


def read_dialogues(dialogue_dir, split: str, limit: int | None = None) -> list[dict]:
    """The dialogues of one split of dialogue_corpus.py's output (dialogues_<split>.jsonl, one
    <id>.json per dialogue): the WAV (user left, agent right), the un-augmented user channel when
    stored, the agent voice, and every timed word of each side, with the JSON itself as `meta`."""
    path = Path(dialogue_dir) / f"dialogues_{split}.jsonl"
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            meta = json.loads((path.parent / row["json"]).read_text(encoding="utf-8"))
            words = {side: sorted((w for u in meta["utterances"] if u["side"] == side for w in u["words"]),
                                  key=lambda w: w["start"]) for side in ("user", "agent")}
            out.append(dict(audio=str(path.parent / row["audio"]),
                            user_dry=str(path.parent / row["user_dry"]) if row.get("user_dry") else None,
                            agent_voice=meta["agent_voice"], user_voice=meta["user_voice"],
                            user_words=words["user"], agent_words=words["agent"], meta=meta))
            if limit and len(out) >= limit:
                break
    return out


def dialogue_words(d: dict, side: str) -> list[dict]:
    return d[f"{side}_words"]


def read_channel(path, channel: int, start: int = 0, frames: int = -1, sample_rate: int = 24000) -> np.ndarray:
    """One channel of a dialogue WAV (0 user, 1 agent); only the requested samples are read."""
    info = sf.info(path)
    if info.samplerate == sample_rate:
        pcm, _ = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
        return pcm[:, channel]
    pcm, sr = sf.read(path, dtype="float32", always_2d=True)
    from audio_io import resample
    pcm = resample(pcm[:, channel], sr, sample_rate)
    return pcm[start:] if frames < 0 else pcm[start:start + frames]


class Dialogues(torch.utils.data.Dataset):
    """Stage 2 items: a random crop of `crop_s` of one dialogue (the whole one when shorter), user
    channel augmented with length-preserving effects, agent codes from the CodeCache, both text
    streams aligned over the whole dialogue then cropped, the agent voice's embedding."""

    def __init__(self, dialogues, cache: CodeCache, tokenizer, sample_rate, frame_size,
                 settings: StageSettings, seed: int, voice_bank):
        self.dialogues, self.cache, self.tok = dialogues, cache, tokenizer
        self.sr, self.fs, self.s, self.seed, self.epoch = sample_rate, frame_size, settings, seed, 0
        rate = sample_rate / frame_size
        self.crop = max(1, int(round(settings.crop_s * rate)))
        self.texts = []  # per dialogue: (user_text, agent_text) over its whole length, int32
        for d in dialogues:
            n = cache.get(file_key(d["audio"])).shape[1]
            user, nu = align(tokenizer, dialogue_words(d, "user"), n, rate, settings.user_lag_frames, "end")
            agent, na = align(tokenizer, dialogue_words(d, "agent"), n, rate, -settings.agent_lead_frames, "start")
            self.texts.append((np.asarray(user[:n], np.int32), np.asarray(agent[:n], np.int32)))
        self.voices = {d["agent_voice"]: voice_bank.embedding(d["agent_voice"]).numpy() for d in dialogues}

    def __len__(self):
        return len(self.dialogues)

    def item(self, i, rng):
        d = self.dialogues[i]
        codes = self.cache.get(file_key(d["audio"]))
        n_total = codes.shape[1]
        n = min(self.crop, n_total)
        start = int(rng.integers(0, n_total - n + 1))
        # The dry user channel (tempo only) augmented afresh each epoch; else the stored augmented one.
        dry = d["user_dry"] is not None and self.s.augment_strength > 0
        user = read_channel(d["user_dry"], 0, start * self.fs, n * self.fs, self.sr) if dry else \
            read_channel(d["audio"], 0, start * self.fs, n * self.fs, self.sr)
        user = np.pad(user, (0, n * self.fs - len(user)))
        if dry:
            user, _, _ = augment.augment(user, self.sr, rng, strength=self.s.augment_strength,
                                         effects=augment.LENGTH_PRESERVING)
        user_text, agent_text = self.texts[i]
        return dict(user=user, user_text=user_text[start:start + n].astype(np.int64),
                    agent_text=agent_text[start:start + n].astype(np.int64),
                    agent_codes=np.asarray(codes[:, start:start + n], np.int64), voice=self.voices[d["agent_voice"]],
                    clock=clock_features(d["meta"].get("now")))

    def __getitem__(self, i):
        return self.item(i, tu.item_rng(self.seed, self.epoch, i))


# Word durations of the rendered dialogues (eSpeak NG, Telugu): least squares over 4,488 words of
# 200 training dialogues gives 0.123 s + 0.068 s per character (residual sd 0.11 s); words follow
# each other without a gap except after punctuation (p95 of the gaps: 0.18 s).
WORD_S, CHAR_S, PUNCT_PAUSE_S = 0.123, 0.068, (0.1, 0.35)
_PUNCT = ".,!?;:'\"“”‘’…।-"


class TextDialogues(torch.utils.data.Dataset):
    """Text-only dialogues, Moshi's text pretraining at the scale of our domain: the agent learns
    *what* to answer from the transcript stream it reads back, on far more distinct requests and
    slot values than the rendered corpus holds (2,000 dialogues hold a few hundred sums; the
    answers are arithmetic over them). Item i is a fresh dialogue_corpus.plan_dialogue of the
    training split (no held-out phrasings or slot values), its words timed by the duration model
    above at a random tempo and laid out with the rendered corpus's gaps, the user's audio silent,
    the agent's codes silence. Only the agent-text loss counts (`text_only`: a silent user has no
    transcript to learn, and silence codes under speech-time text would teach muteness).
    Interruptions and backchannels are left to the rendered dialogues: here the user never
    talks over the agent."""

    def __init__(self, tokenizer, sample_rate, frame_size, settings: StageSettings, seed: int, voice_bank,
                 size: int = 0):  # size: items of an epoch when used alone (Mixed sets its own count)
        self.tok, self.s, self.seed, self.epoch = tokenizer, settings, seed, 0
        self.sr, self.fs, self.size = sample_rate, frame_size, size
        self.rate = sample_rate / frame_size
        self.crop = max(1, int(round(settings.crop_s * self.rate)))
        self.voices = {n: voice_bank.embedding(n).numpy() for n in voice_bank.names()}
        if settings.extra_phrasings:
            domain.use_extra_phrasings(settings.extra_phrasings)

    def __len__(self):
        return self.size

    def timed_words(self, text: str, t: float, tempo: float, rng) -> list[dict]:
        words = []
        for raw in text.split():
            word = raw.strip(_PUNCT)
            if not word:
                continue
            dur = (WORD_S + CHAR_S * len(word)) * tempo * float(np.clip(rng.normal(1.0, 0.12), 0.7, 1.3))
            words.append({"word": word, "start": round(t, 3), "end": round(t + dur, 3)})
            t += dur
            if raw[-1] in _PUNCT:
                t += rng.uniform(*PUNCT_PAUSE_S)
        return words

    def request_words(self, turn: dict, rng) -> str:
        """The request as said, less each non-slot word with probability text_word_dropout: the
        agent learns every cue of an intent rather than whole phrasings (held-out phrasings share
        some of a training phrasing's words, rarely all), and to bear a transcript that missed a
        word. Slot words (numbers, places, ...) stay: without them there is no right answer."""
        p = self.s.text_word_dropout
        words = turn["user_text"].split()
        if p <= 0 or len(words) < 2:
            return turn["user_text"]
        fields = domain.INTENTS[turn["intent"]].fields(turn["slots"])
        slot_words = {w.strip(_PUNCT) for v in fields.values() for w in str(v).split()}
        kept = [w for w in words if w.strip(_PUNCT) in slot_words or rng.random() >= p]
        return " ".join(kept) if 2 * len(kept) >= len(words) else turn["user_text"]  # a cue, not a guess

    def timeline(self, spec: dict, rng) -> dict:
        """A dialogue plan laid out in frames: both text streams over its whole length and, per
        turn, its intent, slots and the frames where the request starts and ends."""
        c = dialogue_corpus
        user, agent, turns = [], [], []
        t = rng.uniform(*c.LEAD)
        for turn in spec["turns"]:
            u = self.timed_words(self.request_words(turn, rng), t, rng.uniform(0.85, 1.2), rng)
            if not u:
                continue
            h = turn.get("hesitation")  # a pause inside the request, as the rendered corpus has it
            if h and len(u) > 1:
                u = c.pause_words(u, min(h["after_words"], len(u) - 1), h["pause_s"])
            a = self.timed_words(turn["agent_text"], u[-1]["end"] + rng.uniform(*c.RESPONSE_GAP),
                                 rng.uniform(0.95, 1.05), rng)
            turns.append({"intent": turn["intent"], "slots": turn["slots"], "agent_text": turn["agent_text"],
                          "start": int(u[0]["start"] * self.rate), "end": math.ceil(u[-1]["end"] * self.rate)})
            user, agent = user + u, agent + a
            t = (a or u)[-1]["end"] + rng.uniform(*c.TURN_PAUSE)
        n = frames_for(int((t + rng.uniform(*c.TAIL)) * self.sr), self.fs)
        user_text, n = align(self.tok, user, n, self.rate, self.s.user_lag_frames, "end")
        agent_text, n = align(self.tok, agent, n, self.rate, -self.s.agent_lead_frames, "start")
        if len(user_text) < n:  # the agent's stream grew the dialogue: realign the user's to it
            user_text, _ = align(self.tok, user, n, self.rate, self.s.user_lag_frames, "end")
        return {"user_text": np.asarray(user_text, np.int64), "agent_text": np.asarray(agent_text, np.int64),
                "turns": turns, "now": spec["now"],
                "voice": spec["agent_voice"] if spec["agent_voice"] in self.voices else sorted(self.voices)[0]}

    def item(self, i, rng):
        spec = dialogue_corpus.plan_dialogue("train", int(rng.integers(1 << 30)), seed=self.seed, augment=False)
        line = self.timeline(spec, rng)
        n_total = len(line["user_text"])
        n = min(self.crop, n_total)
        return self.line_item(line, int(rng.integers(0, n_total - n + 1)), n)

    def line_item(self, line: dict, start: int = 0, n: int | None = None) -> dict:
        """Frames [start, start + n) of a timeline (all of it by default) as a training item."""
        n = len(line["user_text"]) - start if n is None else n
        return dict(user=np.zeros(n * self.fs, np.float32), user_text=line["user_text"][start:start + n],
                    agent_text=line["agent_text"][start:start + n], agent_codes=None,
                    voice=self.voices[line["voice"]], clock=clock_features(line["now"]), text_only=True)

    def __getitem__(self, i):
        return self.item(i, tu.item_rng(self.seed, self.epoch, i))


class Mixed(torch.utils.data.Dataset):
    """Stage 2's epoch: every dialogue once, plus sentences as `sentence_share` of the items and
    text-only dialogues as `text_share` (which one is drawn per item from (seed, epoch, index), so
    resumes stay exact)."""

    def __init__(self, dialogues: Dialogues, sentences: Sentences | None, share: float, seed: int,
                 texts: TextDialogues | None = None, text_share: float = 0.0):
        self.dialogues, self.sentences, self.texts, self.seed, self.epoch = dialogues, sentences, texts, seed, 0
        share = min(max(share, 0.0), 0.9) if sentences is not None else 0.0
        text_share = min(max(text_share, 0.0), 0.9) if texts is not None else 0.0
        if share + text_share > 0.95:
            raise ValueError(f"sentence_share {share} + text_share {text_share} leave no room for the dialogues")
        rest = 1 - share - text_share
        self.n_sentences = int(round(len(dialogues) * share / rest))
        self.n_texts = int(round(len(dialogues) * text_share / rest))

    def __len__(self):
        return len(self.dialogues) + self.n_sentences + self.n_texts

    def __getitem__(self, i):
        rng = tu.item_rng(self.seed, self.epoch, i)
        if i < len(self.dialogues):
            return self.dialogues.item(i, rng)
        if i < len(self.dialogues) + self.n_sentences:
            return self.sentences.item(int(rng.integers(len(self.sentences))), rng)
        self.texts.epoch = self.epoch
        return self.texts.item(i, rng)


def collate(items, silence_codes: np.ndarray, voice_dim: int):
    """Pad a list of items to the longest: silence for the user, PAD text, silence codes for the
    agent, zeros (unknown) for a missing clock; `mask` marks the real frames (padding adds no
    loss); `text_only` [B] marks the TextDialogues items, when the batch has any (agent-text loss
    only)."""
    T = max(len(it["user_text"]) for it in items)
    B, fs = len(items), len(items[0]["user"]) // len(items[0]["user_text"])
    K = len(silence_codes)
    user = torch.zeros(B, 1, T * fs)
    user_text = torch.full((B, T), PAD_ID, dtype=torch.long)
    agent_text = torch.full((B, T), PAD_ID, dtype=torch.long)
    agent_codes = torch.from_numpy(np.asarray(silence_codes, np.int64))[None, :, None].repeat(B, 1, T)
    voice = torch.zeros(B, voice_dim)
    mask = torch.zeros(B, T, dtype=torch.bool)
    text_only = torch.tensor([bool(it.get("text_only", False)) for it in items])
    clock = torch.stack([torch.as_tensor(it["clock"]) if it.get("clock") is not None else torch.zeros(CLOCK_DIM)
                         for it in items])
    for b, it in enumerate(items):
        n = len(it["user_text"])
        user[b, 0, :n * fs] = torch.from_numpy(np.asarray(it["user"][:n * fs], np.float32))
        user_text[b, :n] = torch.as_tensor(it["user_text"])
        agent_text[b, :n] = torch.as_tensor(it["agent_text"])
        if it["agent_codes"] is not None:
            agent_codes[b, :, :n] = torch.as_tensor(it["agent_codes"][:K])
        if it["voice"] is not None:
            voice[b] = torch.as_tensor(it["voice"])
        mask[b, :n] = True
    batch = dict(user=user, user_text=user_text, agent_text=agent_text, agent_codes=agent_codes, voice=voice,
                 clock=clock, mask=mask)
    if text_only.any():  # only then: a batch without it trains exactly as before
        batch["text_only"] = text_only
    return batch


# --- the user's side: the input the model reads ------------------------------------------------------

def user_input(pcm, kind: str, codec, n_codebooks: int):
    """pcm [B, 1, T * frame_size] -> what S2SModel.embed_user takes for cfg.s2s.user_input."""
    if kind == "mel":
        return pcm
    with torch.no_grad():
        latent = codec.latent(pcm)
        return latent if kind == "latent" else codec.quantizer.encode(latent, n_codebooks)


def batch_user_input(batch, kind: str, codec, n_codebooks: int):
    """user_input for a collated batch. Text-only rows all hold the same silence, so the codec
    runs once on one such row instead of on each (it is most of a text row's cost)."""
    pcm, text_only = batch["user"], batch.get("text_only")
    if kind == "mel" or text_only is None or not text_only.any():
        return user_input(pcm, kind, codec, n_codebooks)
    silent = user_input(torch.zeros_like(pcm[:1]), kind, codec, n_codebooks)
    out = silent.expand(pcm.shape[0], *silent.shape[1:]).clone()
    audio = ~text_only.bool()
    if audio.any():
        out[audio] = user_input(pcm[audio], kind, codec, n_codebooks)
    return out


class LossOf(torch.nn.Module):
    """model.loss as a forward(), so DDP's hooks see it."""

    def __init__(self, model, depth_fraction: float = 1.0):
        super().__init__()
        self.model, self.depth_fraction = model, depth_fraction

    def forward(self, batch, weights):
        return self.model.loss(batch, weights, depth_fraction=self.depth_fraction)


# --- validation ----------------------------------------------------------------------------------

@torch.no_grad()
def transcribe(model, user, voice, silence_codes, n_frames=None, pad_bias: float = 0.0) -> torch.Tensor:
    """Greedy streaming transcript of a batch while the agent stays silent (stage 1's setting):
    the temporal transformer stepped frame by frame with its KV cache, each step reading the user
    text it chose the step before. user: S2SModel.embed_user's input; -> ids [B, T]. pad_bias > 0
    lowers PAD's logit by that much (a young model's PAD wins most argmaxes)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    B = user.shape[0]
    T = n_frames or (user.shape[-1] // model.frame_size if model.cfg.user_input == "mel" else user.shape[-1])
    codes = torch.as_tensor(silence_codes, device=dev)[:model.n_codebooks].long()[None, :, None].expand(B, -1, T)
    delayed = _shift_right(model.apply_delay(codes), model.empty_code)
    agent_text = _shift_right(torch.full((B, T), PAD_ID, device=dev), model.text_start)
    base = model.embed_user(user.to(dev), T) + model.voice_bias(voice, B, dev) + \
        model.agent_code_emb(delayed + model.agent_code_offsets[:, None]).sum(dim=1) + model.agent_text_emb(agent_text)
    caches = model.temporal.new_caches(B, model.cfg.context_frames, dev)
    prev = torch.full((B,), model.text_start, dtype=torch.long, device=dev)
    from s2s_transformer import rope
    out = torch.empty(B, T, dtype=torch.long, device=dev)
    for t in range(T):
        cos, sin = rope(torch.tensor([t], device=dev), model.temporal.head_dim)
        x = base[:, t:t + 1] + model.user_text_emb(prev)[:, None]
        h = model.temporal.step(x, cos, sin, caches)
        logits = model.user_text_head(h)[:, 0]
        logits[:, PAD_ID] -= pad_bias
        prev = out[:, t] = logits.argmax(-1)
    model.train(was_training)
    return out


def validation_clips(manifest, n: int, sample_rate: int) -> list[dict]:
    """`n` clips spread over the manifest (every k-th row, so every val voice is in)."""
    rows = [r for r in read_manifest(manifest) if r.get("words")]
    step = max(1, len(rows) // max(1, n))
    return [dict(pcm=load_audio(r["audio"], sample_rate), ref=words_text(r["words"]), words=r["words"],
                 speaker=r["speaker"]) for r in rows[::step][:n]]


def validate_transcription(model, clips, tokenizer, codec, silence_codes, voice, tail_s=1.0, batch=16,
                           lag_frames=2, pad_bias=0.0) -> dict:
    """User-transcript quality on held-out voices, with the agent silent:
        cer        greedy streaming decode of each clip + tail silence (what the page would show)
        token_loss teacher-forced cross-entropy on the frames that carry a word's token, and
        token_acc  how often the argmax there is that token: smooth measures that move long before
                   a young model's greedy decode stops choosing PAD."""
    dev = next(model.parameters()).device
    fs, sr = model.frame_size, model.config.codec.sample_rate
    rate = sr / fs
    hyps, losses, hits, n_tokens = [], 0.0, 0, 0
    for i in range(0, len(clips), batch):
        group = clips[i:i + batch]
        T = max(frames_for(len(c["pcm"]) + int(tail_s * sr), fs) for c in group)
        targets = [align(tokenizer, c["words"], T, rate, lag_frames, "end") for c in group]
        T = max(n for _, n in targets)
        pcm = torch.zeros(len(group), 1, T * fs)
        text = torch.full((len(group), T), PAD_ID, dtype=torch.long)
        for b, (c, (ids, n)) in enumerate(zip(group, targets)):
            pcm[b, 0, :len(c["pcm"])] = torch.from_numpy(c["pcm"])
            text[b, :n] = torch.as_tensor(ids)
        user = user_input(pcm.to(dev), model.cfg.user_input, codec, model.n_codebooks)
        v = None if voice is None else torch.as_tensor(voice)[None].expand(len(group), -1).to(dev)
        ids = transcribe(model, user, v, silence_codes, T, pad_bias)
        hyps += [tokenizer.decode(row.tolist()) for row in ids.cpu()]
        with torch.no_grad():
            codes = torch.as_tensor(silence_codes, device=dev)[None, :, None].expand(len(group), -1, T).long()
            batch_tf = dict(user=user, agent_codes=codes, agent_text=torch.full_like(text, PAD_ID).to(dev),
                            user_text=text.to(dev), voice=v)
            logits = model(batch_tf, depth=False)["user_text"].float()
            word = text.to(dev) != PAD_ID
            losses += torch.nn.functional.cross_entropy(logits[word], text.to(dev)[word], reduction="sum").item()
            hits += (logits[word].argmax(-1) == text.to(dev)[word]).sum().item()
            n_tokens += int(word.sum())
    refs = [c["ref"] for c in clips]
    return {"cer": cer(refs, hyps), "token_loss": losses / max(1, n_tokens), "token_acc": hits / max(1, n_tokens),
            "examples": list(zip(refs[:3], hyps[:3]))}


# --- setup helpers -------------------------------------------------------------------------------

def load_codec(path, device):
    import telugu_codec_fixed
    codec = telugu_codec_fixed.load(path, device)
    for p in codec.parameters():
        p.requires_grad_(False)
    return codec


def silence_codes_of(codec) -> np.ndarray:
    """The codec's answer to steady silence, all codebooks (as the streaming generator forces it)."""
    from s2s_transformer import steady_silence_codes
    return steady_silence_codes(codec).cpu().numpy()


def load_voice_bank(args):
    from speaker_embeddings import VoiceBank
    path = Path(args.voice_bank) if args.voice_bank else (Path(args.speaker_path).parent / "voice_bank.json"
                                                          if args.speaker_path else None)
    if path is None or not path.exists():
        return None
    return VoiceBank.load(path)


def build_config(args):
    """The Config of this run: preset + --set + flags, with the codec's, the speaker encoder's and
    the tokenizer's facts filled in (one place for each fact: the checkpoints that define them)."""
    cfg = config_from_args(args, "train_s2s")
    if args.out_dir is None and cfg.train_s2s.out_dir == "runs/codec":
        cfg.train_s2s.out_dir = "runs/s2s"
    codec_cfg = from_dict(json.loads(Path(args.codec_path).with_suffix(".json").read_text(encoding="utf-8")))
    cfg.codec = codec_cfg.codec
    if args.speaker_path and Path(args.speaker_path).with_suffix(".json").exists():
        saved = json.loads(Path(args.speaker_path).with_suffix(".json").read_text(encoding="utf-8"))
        cfg.speaker = from_dict({"speaker": saved["speaker"]}).speaker
    return cfg


def export(model, cfg, path, tokenizer_path, codec_path, fp16=True, metadata=None):
    """Weights + config + tokenizer; the metadata names the codec the model was trained with (its
    agent codes, and the user latents or codes, mean something only to that codec)."""
    metadata = {**(metadata or {}), "codec_sha": codec_hash(codec_path)}
    tu.export_safetensors(model.state_dict(), path, cfg, fp16=fp16, metadata=metadata)
    dst = Path(path).parent / "telugu_spm.model"
    if Path(tokenizer_path).resolve() != dst.resolve():
        shutil.copyfile(tokenizer_path, dst)


def append_jsonl(path, row):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --- one stage: the training loop ----------------------------------------------------------------

def run_stage(stage, cfg, args, st: StageSettings, rt, model, dataset, weights, total_steps, validate, run_dir,
              collate_fn, minutes: float = 0.0):
    """The loop of either stage (train_codec_dac.py's structure): resume, schedule, step, validate,
    checkpoint. Returns the model's final step count in this stage."""
    train = cfg.train_s2s
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay)
    ckpts = tu.Checkpoints(run_dir, train.keep_checkpoints)
    step, epoch, batch_in_epoch, elapsed = 0, 0, 0, 0.0
    state, path = tu.resolve_resume(args.resume, ckpts)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        elapsed = state.get("elapsed_s", 0.0)
        tu.set_rng_state(state["rng"], rt.rank)  # each rank's own stream (dropout differs per rank)
        if rt.is_main:
            print(f"{stage}: resumed from {path} at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    final = Path(run_dir) / "s2s.safetensors"
    if step >= total_steps and final.exists():
        if rt.is_main:
            print(f"{stage}: already done ({step} steps), weights in {final}")
        return step

    net = LossOf(model, st.depth_fraction)
    if rt.ddp:  # stage 1 with no codebook weight leaves the depth transformer unused
        unused = weights is not None and not any(weights.get(k) for k in ("codebook_0", "codebooks"))
        net = DDP(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                  find_unused_parameters=unused)
    if train.compile:
        net = torch.compile(net)
    writer = tu.tensorboard(rt, run_dir)

    def save():
        rng = tu.rng_state(rt)  # every rank's: a collective, so every rank calls save()
        if rt.is_main:
            ckpts.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch,
                        "batch_in_epoch": batch_in_epoch, "elapsed_s": elapsed, "rng": rng,
                        "config": to_dict(cfg), "stage": stage, "settings": asdict(st)}, step, cfg)

    def run_validation():
        model.eval()  # no dropout while the generator steps
        try:
            metrics = validate(model)
        except Exception as e:  # a broken validation must not cost the training run its weights
            import traceback
            traceback.print_exc()
            tqdm.write(f"{stage} step {step}: validation failed ({type(e).__name__}: {e}); training goes on")
            metrics = {}
        model.train()
        tqdm.write(f"{stage} step {step} ({elapsed / 60:.1f} min) val " +
                   " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        for ref, hyp in metrics.get("examples", [])[:2]:
            tqdm.write(f"  ref: {ref}\n  hyp: {hyp}")
        append_jsonl(Path(run_dir) / "val.jsonl", {"step": step, "elapsed_s": round(elapsed, 1),
                                                    **{k: v for k, v in metrics.items() if isinstance(v, float)}})
        if writer:
            for k, v in metrics.items():
                if isinstance(v, float):
                    writer.add_scalar(f"val/{k}", v, step)

    if rt.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{stage}: {n_params / 1e6:.2f} M params, {len(dataset)} items/epoch, {total_steps} steps, "
              f"user_input {cfg.s2s.user_input}, device {rt.device}, world {rt.world_size}")
    bar = tqdm(total=total_steps, initial=step, disable=not rt.is_main, desc=stage, dynamic_ncols=True)
    accum = max(1, train.grad_accum)
    echo = max(1, st.echo)
    if echo > 1 and accum > 1:
        raise SystemExit("--echo > 1 needs train_s2s.grad_accum 1 (an echoed batch is one optimizer step)")
    done = step >= total_steps
    deadline = tu.Deadline(minutes or train.max_minutes)  # the stage's own box, else train_s2s.max_minutes
    while not done and epoch < train.epochs:
        dataset.epoch = epoch
        batches = tu.epoch_batches(len(dataset), train.batch_size, epoch, train.seed, rt.rank, rt.world_size)
        batches = batches[:max(accum, len(batches) // accum * accum)]
        loader = tu.make_loader(dataset, batches[batch_in_epoch:], train, rt, collate_fn)
        micro, t0 = 0, time.time()
        for batch in loader:
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            batch["user"] = batch_user_input(batch, cfg.s2s.user_input, args.codec, model.n_codebooks)
            batch_in_epoch += 1
            due_eval = due_save = False
            for _ in range(echo):  # data echoing: a loader-bound GPU trains on each batch `echo` times
                lr = tu.lr_at(step, train, total_steps, deadline.progress())
                tu.set_lr(opt, lr)
                micro += 1
                last = micro % accum == 0
                with tu.sync_gradients(net, last):  # DDP averages on the last micro-batch only
                    with rt.autocast():
                        loss, parts = net(batch, weights)
                    (loss / accum).backward()
                if not last:
                    break
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip).item()
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                elapsed += time.time() - t0
                t0 = time.time()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", user=f"{parts['user_text'].item():.3f}")
                if writer and step % train.log_every_steps == 0:
                    writer.add_scalar("train/loss", loss.item(), step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/grad_norm", grad_norm, step)
                    for k, v in parts.items():
                        writer.add_scalar(f"train/{k}", v.item(), step)
                due_eval |= bool(train.eval_every_steps) and step % train.eval_every_steps == 0
                due_save |= step % train.save_every_steps == 0
                if step >= total_steps:
                    break
            # Validation and checkpoints fall between batches, so a resume replays whole batches.
            if rt.is_main and due_eval:
                run_validation()
                t0 = time.time()  # validation is not training time
            if due_save:
                save()
            if step >= total_steps or deadline.passed(rt):
                done = True
                break
        else:
            epoch += 1
            batch_in_epoch = 0
            if train.save_every and epoch % train.save_every == 0:
                save()
    bar.close()
    if rt.is_main and not (train.eval_every_steps and step % train.eval_every_steps == 0):
        run_validation()
    save()
    if rt.is_main:
        export(model, cfg, final, args.tokenizer, args.codec_path, fp16=False, metadata={"step": step, "stage": stage})
        print(f"{stage}: done at step {step} ({elapsed / 60:.1f} min of training): {final}")
        if writer:
            writer.close()
    if rt.ddp:
        dist.barrier()
    return step


def stage_steps(explicit: int, train, n_items: int, world: int) -> int:
    if explicit:
        return explicit
    if train.max_steps:
        return train.max_steps
    n_batches = len(tu.epoch_batches(n_items, train.batch_size, 0, train.seed, 0, world))
    return max(1, n_batches * train.epochs // max(1, train.grad_accum))


# --- main ----------------------------------------------------------------------------------------

def main(argv=None):
    parser = add_train_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--codec_path", required=True, help="the frozen codec (.safetensors + .json)")
    parser.add_argument("--speaker_path", help="speaker encoder .safetensors; its voice bank is voice_bank.json beside it")
    parser.add_argument("--voice_bank", help="voice bank JSON (default: beside --speaker_path)")
    parser.add_argument("--tokenizer", default=str(ROOT / "checkpoints" / "telugu_spm.model"))
    parser.add_argument("--stage", choices=STAGES, help="run one stage (default: transcribe, then dialogue)")
    parser.add_argument("--dialogue_dir", help="dialogue corpus (default: DATA_DIR/../dialogues)")
    parser.add_argument("--cache_dir", help="pre-tokenised codes (default: DATA_DIR/../s2s_cache)")
    parser.add_argument("--init", help="weights to start from (.safetensors or a .pt checkpoint); stage 2 "
                                       "defaults to OUT/transcribe/s2s.safetensors")
    parser.add_argument("--no_fp16", action="store_true", help="export OUT/s2s.safetensors in fp32")
    parser.add_argument("--export_from", metavar="STEP_PT", help="only export this training checkpoint "
                        "(fp16, config, tokenizer, codec hash) to --export_to, e.g. checkpoints/s2s.safetensors")
    parser.add_argument("--export_to", metavar="PATH")
    for f in StageSettings.__dataclass_fields__.values():
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    if args.export_from:
        if not args.export_to:
            parser.error("--export_from needs --export_to")
        state = tu.load_checkpoint(args.export_from)
        cfg = from_dict(state["config"])
        model = S2SModel(cfg)
        model.load_state_dict(state["model"])
        export(model, cfg, args.export_to, args.tokenizer, args.codec_path, fp16=not args.no_fp16,
               metadata={"step": state["step"], "stage": state.get("stage", "")})
        print(f"exported {args.export_from} (step {state['step']}) to {args.export_to}")
        return 0
    try:
        cfg = build_config(args)
    except ConfigError as e:
        parser.error(str(e))
    st = StageSettings(**{k: getattr(args, k) for k in StageSettings.__dataclass_fields__})
    train = cfg.train_s2s
    rt = tu.setup_runtime(train)
    out_dir = Path(train.out_dir)
    data_dir = Path(cfg.data.data_dir)
    train_manifest = data_dir / cfg.data.train_manifest
    if not train_manifest.exists():
        raise SystemExit(f"no sentence manifest at {train_manifest}: build one with synthetic_corpus.py")
    tokenizer = Tokenizer.load(args.tokenizer)
    cfg.s2s.text_vocab_size = tokenizer.vocab_size
    note = window_note(st.crop_s, cfg.codec.sample_rate / cfg.codec.frame_size, cfg.s2s.context_frames)
    if note and rt.is_main:
        print(f"warning: {note}")
    codec = args.codec = load_codec(args.codec_path, rt.device)
    silence = silence_codes_of(codec)
    bank = load_voice_bank(args)
    if bank is not None and bank.names():
        cfg.speaker.embed_dim = len(bank.embedding(bank.names()[0]))
    voices = np.stack([bank.embedding(n).numpy() for n in bank.names()]) if bank is not None and bank.names() else None
    stages = [args.stage] if args.stage else list(STAGES)
    sr, fs = cfg.codec.sample_rate, cfg.codec.frame_size
    sentences = Sentences(train_manifest, tokenizer, sr, fs, st, train.seed, voices)
    collate_fn = lambda items: collate(items, silence, cfg.speaker.embed_dim)
    val_manifest = data_dir / cfg.data.val_manifest
    clips = validation_clips(val_manifest, st.val_clips, sr) if rt.is_main and val_manifest.exists() else []
    # stage-1 validation transcribes as the sentence items were trained: with a voice unless none had one
    val_voice = voices[0] if voices is not None and st.sentence_voice_share > 0 else None

    def validate_stage1(model):
        return validate_transcription(model, clips, tokenizer, codec, silence, val_voice,
                                      lag_frames=st.user_lag_frames) if clips else {}

    model = S2SModel(cfg).to(rt.device)
    if args.init:
        model.load_state_dict(fill_missing_clock(model, load_weights(args.init)), strict=True)
        if rt.is_main:
            print(f"initialised from {args.init} (a checkpoint in the run folder, with --resume, overrides it)")
    for stage in stages:
        run_dir = out_dir / stage
        if stage == "transcribe":
            total = stage_steps(st.stage1_steps, train, len(sentences), rt.world_size)
            weights = {"user_text": 1.0, "agent_text": st.stage1_agent_text_weight,
                       "codebook_0": st.stage1_code_weight, "codebooks": st.stage1_code_weight}
            run_stage(stage, cfg, args, st, rt, model, sentences, weights, total, validate_stage1, run_dir, collate_fn,
                      st.stage1_minutes)
            continue
        # stage 2: dialogues
        dialogue_dir = Path(args.dialogue_dir) if args.dialogue_dir else data_dir.parent / "dialogues"
        dialogues = read_dialogues(dialogue_dir, "train", st.max_dialogues or None)
        if not dialogues:
            raise SystemExit(f"stage dialogue: no dialogues in {dialogue_dir}/dialogues_train.jsonl (dialogue_corpus.py)")
        if bank is None:
            raise SystemExit("stage dialogue needs the voice bank: --speaker_path S (voice_bank.json beside it)")
        if not args.init and "transcribe" not in stages:  # alone, stage 2 starts from stage 1's weights
            init = out_dir / "transcribe" / "s2s.safetensors"
            if init.exists():
                model.load_state_dict(fill_missing_clock(model, load_weights(init)), strict=True)
                if rt.is_main:
                    print(f"dialogue: starting from {init}")
            elif rt.is_main:
                print(f"dialogue: warning: no stage-1 weights at {init}; starting from scratch")
        cache = CodeCache(Path(args.cache_dir) if args.cache_dir else data_dir.parent / "s2s_cache", args.codec_path)
        heldout = read_dialogues(dialogue_dir, "heldout_val", st.val_dialogues) if rt.is_main and st.val_dialogues > 0 else []
        if rt.is_main:
            jobs = [(file_key(d["audio"]), (lambda p=d["audio"]: read_channel(p, 1, sample_rate=sr)))
                    for d in dialogues + heldout]
            encode = lambda pcm: codec.encode(torch.from_numpy(pcm).to(rt.device)[None, None])[0].cpu().numpy()
            reused, encoded = cache.build(jobs, encode)
            print(f"code cache {cache.dir}: {reused} reused, {encoded} encoded")
        if rt.ddp:
            # Pre-tokenising a real corpus can take longer than a collective's timeout (30 min), so
            # the other ranks wait on the cache's index on disk, then meet rank 0 in a barrier.
            index, keys = cache.dir / "index.json", [file_key(d["audio"]) for d in dialogues]
            while not rt.is_main and not (index.exists() and all(k in json.loads(index.read_text()) for k in keys)):
                time.sleep(5)
            dist.barrier()
            cache = CodeCache(cache.dir.parent, args.codec_path)
        dset = Dialogues(dialogues, cache, tokenizer, sr, fs, st, train.seed, bank)
        texts = TextDialogues(tokenizer, sr, fs, st, train.seed, bank) if st.text_share > 0 else None
        mixed = Mixed(dset, sentences, st.sentence_share, train.seed, texts, st.text_share)
        total = stage_steps(st.stage2_steps, train, len(mixed), rt.world_size)

        def validate_stage2(model):
            out = validate_stage1(model)
            if heldout:
                out.update(validate_dialogues(model, heldout, codec, bank, tokenizer, cfg))
            if texts is not None and st.val_dialogues > 0:  # answering alone, on held-out text dialogues
                import s2s_eval
                report = s2s_eval.text_answers(model, codec, bank, tokenizer, 4 * st.val_dialogues)
                out["text_answer_accuracy"] = float(report["text_answer_accuracy"])
                report = s2s_eval.text_forced(model, codec, bank, tokenizer, 16 * st.val_dialogues)
                out.update({k: float(v) for k, v in report.items() if k != "forced_turns"})
            return out

        weights = None if st.stage2_code_weight < 0 else \
            {"codebook_0": st.stage2_code_weight, "codebooks": st.stage2_code_weight}
        run_stage(stage, cfg, args, st, rt, model, mixed, weights, total, validate_stage2, run_dir, collate_fn,
                  st.stage2_minutes)
    if rt.is_main:
        final = out_dir / "s2s.safetensors"
        export(model, cfg, final, args.tokenizer, args.codec_path, fp16=not args.no_fp16,
               metadata={"stages": ",".join(stages)})
        print(f"exported {final} ({final.stat().st_size / 1e6:.1f} MB)")
    tu.cleanup(rt)


def load_weights(path) -> dict:
    path = Path(path)
    if path.suffix == ".pt":
        return tu.load_checkpoint(path)["model"]
    return tu.load_safetensors(path)


def validate_dialogues(model, dialogues, codec, bank, tokenizer, cfg) -> dict:
    """Answer accuracy on a few held-out dialogues, the agent free-running (greedy)."""
    import s2s_eval
    results = [s2s_eval.run_dialogue(model, codec, bank, tokenizer, d, cfg.context, temperature=0.0)
               for d in dialogues]
    turns = [t for r in results for t in r["turns"]]
    return {"answer_accuracy": float(np.mean([t["correct"] for t in turns])) if turns else 0.0}


import augment  # noqa: E402  (user-channel augmentation; after the definitions it does not need)

if __name__ == "__main__":
    sys.exit(main())
