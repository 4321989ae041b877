"""What the S2S trainer and its evaluation both read: the stage settings, the frame-aligned text
streams (`align`), the dialogue corpus's WAVs and words, text-only dialogues (`TextDialogues`),
`collate` and the user-side input the model reads (`user_input`, `batch_user_input`).

Data layer: below the model and the trainer, so s2s_eval.py need not import train_s2s.py. The
trainer's own datasets (Sentences, Dialogues, Mixed, the code cache) stay in train_s2s.py.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import dialogue_corpus
import dialogue_domain as domain
from audio_io import resample
from data_order import item_rng
from s2s_clock import CLOCK_DIM, clock_features
from telugu_tokenizer import PAD_ID


@dataclass
class StageSettings:
    """What differs between the stages; saved in every checkpoint. train_s2s.py has flags of the same names."""
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


# --- text streams --------------------------------------------------------------------------------

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


# --- the dialogue corpus ---------------------------------------------------------------------------

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


def read_channel(path, channel: int, start: int = 0, frames: int = -1, sample_rate: int = 24000) -> np.ndarray:
    """One channel of a dialogue WAV (0 user, 1 agent); only the requested samples are read."""
    info = sf.info(path)
    if info.samplerate == sample_rate:
        pcm, _ = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
        return pcm[:, channel]
    pcm, sr = sf.read(path, dtype="float32", always_2d=True)
    pcm = resample(pcm[:, channel], sr, sample_rate)
    return pcm[start:] if frames < 0 else pcm[start:start + frames]


# --- text-only dialogues ---------------------------------------------------------------------------

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
        return self.item(i, item_rng(self.seed, self.epoch, i))


# --- batches -------------------------------------------------------------------------------------

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
