"""What the brain reads and writes: conversations as one token stream, and the ear's mistakes.

The brain (agent_brain.py) is a causal language model over the conversation's text. A dialogue of
the domain (dialogue_corpus.plan_dialogue) becomes

    BOS  USER ▁ఐదు ▁ప్లస్ ▁మూడు ▁ఎంత  AGENT ▁ఐదు ▁ప్లస్ ▁మూడు ▁సమానం CALL calc ▁ఐదు + ▁మూడు CALL_END
         ▁ఎనిమిది .  END  USER ...

with the SentencePiece pieces of telugu_tokenizer and a few special ids after them (BrainVocab).
The loss counts the agent's side (its words, its calls, END) and whether the user's words so far
make a whole request (AGENT) or not yet (WAIT); the user's words themselves are what the ear
heard, and a tool's result is written by the tool, so neither is predicted.

The user's side is not the clean text but what the ear would hear: EarErrors replays the edit
operations measured between the ear's transcripts and the truth (train_brain.py --measure_ear),
so a wrong character does not derail the answer. Words of the request are also dropped now and
then (never the slot words), so the brain learns every cue of an intent, not whole phrasings.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import agent_tools as tools
import dialogue_corpus
import dialogue_domain as domain
from telugu_text import asr_text
from telugu_tokenizer import BOS_ID, Tokenizer

ROOT = Path(__file__).resolve().parent
EAR_ERRORS = ROOT / "checkpoints" / "ear_errors.json"
SPECIALS = ("USER", "AGENT", "END", "WAIT", "CALL", "CALL_END", *(f"tool:{t}" for t in tools.TOOLS),
            *(f"op:{o}" for o in tools.OPS))


class BrainVocab:
    """The tokenizer's pieces, then SPECIALS: USER opens the user's words, AGENT the agent's, END
    closes the agent's turn; WAIT marks a pause inside the user's request (not over yet: the
    agent waits); CALL <tool> <args> CALL_END is a tool call."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.base = tokenizer.vocab_size
        self.id = {name: self.base + i for i, name in enumerate(SPECIALS)}
        self.size = self.base + len(SPECIALS)
        self.USER, self.AGENT, self.END, self.WAIT = (self.id[k] for k in ("USER", "AGENT", "END", "WAIT"))
        self.CALL, self.CALL_END = self.id["CALL"], self.id["CALL_END"]

    def text(self, s: str) -> list[int]:
        return self.tok.encode(s) if s.strip() else []

    def call(self, call: tools.Call) -> list[int]:
        ids = [self.CALL, self.id[f"tool:{call.tool}"]]
        words: list[str] = []
        for a in call.args + [None]:
            if a is None or a in tools.OPS:
                ids += self.text(" ".join(words))
                words = []
                if a is not None:
                    ids.append(self.id[f"op:{a}"])
            else:
                words.append(a)
        return ids + [self.CALL_END]

    def parse_call(self, ids: list[int]) -> tools.Call:
        """The ids between CALL and CALL_END (tool id first) -> Call; ToolError if malformed."""
        name = {v: k for k, v in self.id.items()}
        if not ids or not name.get(ids[0], "").startswith("tool:"):
            raise tools.ToolError("a call must start with a tool")
        args, piece_ids = [], []
        for i in ids[1:] + [None]:
            if i is None or i >= self.base:
                if piece_ids:
                    args += self.tok.decode(piece_ids).split()
                    piece_ids = []
                if i is not None:
                    if not name.get(i, "").startswith("op:"):
                        raise tools.ToolError(f"{name.get(i)} inside a call")
                    args.append(name[i][3:])
            else:
                piece_ids.append(i)
        return tools.Call(name[ids[0]][5:], args)

    def decode(self, ids) -> str:
        """Readable text of any ids (specials in brackets, calls as ⟦tool args⟧)."""
        out, pieces = [], []
        for i in list(ids) + [None]:
            if i is None or i >= self.base:
                if pieces:
                    out.append(self.tok.decode(pieces))
                    pieces = []
                if i is not None:
                    out.append(f"<{SPECIALS[i - self.base]}>")
            else:
                pieces.append(i)
        return " ".join(out)


# --- the ear's mistakes ---------------------------------------------------------------------------

def align_edits(ref: str, hyp: str) -> list[tuple[str, str]]:
    """Levenshtein alignment of two strings as (ref char or '', hyp char or '') pairs."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), np.int32)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    pairs, i, j = [], n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            pairs.append((ref[i - 1], ""))
            i -= 1
        else:
            pairs.append(("", hyp[j - 1]))
            j -= 1
    return pairs[::-1]


@dataclass
class EarErrors:
    """Per reference character: how often the ear kept it, dropped it or wrote what instead; and
    which characters it inserted. Measured on held-out voices through the augmentation."""
    cer: float
    subs: dict[str, dict[str, int]]  # ref char -> {hyp char ('' = deleted): count}, kept included
    inserts: dict[str, int]  # inserted char -> count
    n_ref: int

    @staticmethod
    def measure(pairs) -> "EarErrors":
        """pairs: (reference, ear transcript) strings."""
        subs, inserts, edits, n = {}, Counter(), 0, 0
        for ref, hyp in pairs:
            for r, h in align_edits(ref, hyp):
                if r:
                    subs.setdefault(r, Counter())[h] += 1
                    n += 1
                else:
                    inserts[h] += 1
                edits += r != h
        return EarErrors(round(edits / max(1, n), 4), {r: dict(c) for r, c in subs.items()}, dict(inserts), n)

    def save(self, path, **meta) -> None:
        Path(path).write_text(json.dumps({**meta, "cer": self.cer, "n_ref": self.n_ref, "subs": self.subs,
                                          "inserts": self.inserts}, ensure_ascii=False, indent=0), encoding="utf-8")

    @staticmethod
    def load(path=EAR_ERRORS) -> "EarErrors":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return EarErrors(d["cer"], d["subs"], d["inserts"], d["n_ref"])

    def corrupt(self, text: str, rng: random.Random, scale: float = 1.0) -> str:
        """The text as the ear might hear it: each character kept, dropped or replaced with the
        measured odds, the error part scaled by `scale` (0 = clean, 1 = as measured)."""
        n_ins = sum(self.inserts.values())
        p_ins = scale * n_ins / max(1, self.n_ref)
        ins_chars, ins_w = list(self.inserts), list(self.inserts.values())
        out = []
        for ch in text:
            if n_ins and rng.random() < p_ins:
                out.append(rng.choices(ins_chars, ins_w)[0])
            row = self.subs.get(ch)
            if not row:
                out.append(ch)
                continue
            total = sum(row.values())
            kept = row.get(ch, 0) / total
            if rng.random() < 1 - scale * (1 - kept):
                out.append(ch)
                continue
            wrong = [(h, c) for h, c in row.items() if h != ch]
            out.append(rng.choices([h for h, _ in wrong], [c for _, c in wrong])[0])
        return " ".join("".join(out).split())


# --- dialogues as token streams ---------------------------------------------------------------------

def request_words(turn: dict, rng: random.Random, dropout: float) -> str:
    """The request less each non-slot word with probability `dropout` (at least half kept)."""
    words = turn["user_text"].split()
    if dropout <= 0 or len(words) < 2:
        return turn["user_text"]
    fields = domain.INTENTS[turn["intent"]].fields(turn["slots"])
    slot_words = {w.strip(".,?!") for v in fields.values() for w in str(v).split()}
    kept = [w for w in words if w.strip(".,?!") in slot_words or rng.random() >= dropout]
    return " ".join(kept) if 2 * len(kept) >= len(words) else turn["user_text"]


def agent_ids(vocab: BrainVocab, turn: dict) -> tuple[list[int], list[float]]:
    """The agent's reply with its tool call: ids and loss weights (0 on the tool's result)."""
    ids, weights = [], []
    for kind, value in tools.reply_segments(turn["intent"], turn["slots"], turn["agent_text"]):
        part = vocab.call(value) if kind == "call" else vocab.text(value)
        ids += part
        weights += [0.0 if kind == "result" else 1.0] * len(part)
    return ids, weights


def dialogue_stream(vocab: BrainVocab, spec: dict, rng: random.Random, ear: EarErrors | None = None,
                    noise_scale: float = 1.0, word_dropout: float = 0.0,
                    wait_share: float = 0.0, readings: list[str] | None = None) -> tuple[list[int], list[float]]:
    """A planned dialogue (dialogue_corpus.plan_dialogue) as (ids, loss weights).

    Where the user's words end, the model predicts AGENT (the request is complete: answer) and,
    in `wait_share` of the requests of two words or more, first WAIT after a cut at a random word
    (a pause inside the request: the words so far do not make a request yet). That is the
    semantic half of turn-taking: silence says the user paused, the brain says whether they
    finished.

    readings: what the agent really read for each turn (the ear and its LM on the request spoken
    by the dialogue's voice, EarReadings) instead of the replayed edit statistics."""
    ids, weights = [BOS_ID], [0.0]
    for k, turn in enumerate(spec["turns"]):
        if readings is not None:
            heard = readings[k]
        else:
            heard = asr_text(request_words(turn, rng, word_dropout))  # as the ear writes: no punctuation
            if ear is not None and noise_scale > 0:
                heard = ear.corrupt(heard, rng, noise_scale)
        words = heard.split()
        user, w_user = [vocab.USER], [0.0]
        if len(words) >= 2 and rng.random() < wait_share:
            cut = rng.randint(1, len(words) - 1)
            first = vocab.text(" ".join(words[:cut]))
            user += first + [vocab.WAIT]
            w_user += [0.0] * len(first) + [1.0]
            words = words[cut:]
        rest = vocab.text(" ".join(words))
        user += rest + [vocab.AGENT]
        w_user += [0.0] * len(rest) + [1.0]
        reply, w = agent_ids(vocab, turn)
        ids += user + reply + [vocab.END]
        weights += w_user + w + [1.0]
    return ids, weights


def fit(ids: list[int], weights: list[float], max_len: int, vocab: BrainVocab):
    """At most max_len ids: whole turns are dropped from the front (a turn starts at USER)."""
    if len(ids) <= max_len:
        return ids, weights
    starts = [i for i, t in enumerate(ids) if t == vocab.USER and len(ids) - i <= max_len - 1]
    cut = starts[0] if starts else len(ids) - (max_len - 1)
    return [BOS_ID] + ids[cut:], [0.0] + weights[cut:]


class EarReadings:
    """What the agent read for the requests of training dialogues: each training voice says each
    turn of plan_dialogue("train", plan) through the augmentation, and the ear with its LM reads it
    (train_brain.py --render_readings). JSON lines {"plan", "seed", "readings": [one per turn]}."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    @staticmethod
    def load(path) -> "EarReadings":
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        return EarReadings(rows)

    def __len__(self) -> int:
        return len(self.rows)


class TrainingDialogues:
    """Endless training dialogues: item (epoch, i) is plan_dialogue("train", ...) of a fresh
    index, its user side as the ear would hear it (noise scale drawn per dialogue up to
    max_noise_scale, and a share of clean ones); with `readings`, a `readings_share` of the items
    are rendered dialogues with what the agent really read."""

    def __init__(self, vocab: BrainVocab, ear: EarErrors | None, seed: int, max_len: int,
                 max_noise_scale: float = 2.0, clean_share: float = 0.2, word_dropout: float = 0.15,
                 wait_share: float = 0.3, readings: EarReadings | None = None, readings_share: float = 0.0):
        self.vocab, self.ear, self.seed, self.max_len = vocab, ear, seed, max_len
        self.max_noise, self.clean_share, self.word_dropout = max_noise_scale, clean_share, word_dropout
        self.wait_share = wait_share
        self.readings, self.readings_share = readings, readings_share if readings else 0.0

    def item(self, index: int) -> tuple[list[int], list[float]]:
        rng = random.Random(f"{self.seed}:{index}")
        if self.readings_share and rng.random() < self.readings_share:
            row = self.readings.rows[rng.randrange(len(self.readings))]
            spec = dialogue_corpus.plan_dialogue("train", row["plan"], seed=row["seed"], augment=False)
            ids, w = dialogue_stream(self.vocab, spec, rng, wait_share=self.wait_share, readings=row["readings"])
            return fit(ids, w, self.max_len, self.vocab)
        spec = dialogue_corpus.plan_dialogue("train", rng.randrange(1 << 30), seed=self.seed, augment=False)
        scale = 0.0 if rng.random() < self.clean_share else rng.uniform(0.0, self.max_noise)
        ids, w = dialogue_stream(self.vocab, spec, rng, self.ear, scale, self.word_dropout, self.wait_share)
        return fit(ids, w, self.max_len, self.vocab)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """-> ids [B, T] (padded with 0) and weights [B, T] (0 on padding)."""
        items = [self.item(i) for i in indices]
        T = max(len(ids) for ids, _ in items)
        ids = np.zeros((len(items), T), np.int64)
        w = np.zeros((len(items), T), np.float32)
        for b, (x, y) in enumerate(items):
            ids[b, :len(x)], w[b, :len(y)] = x, y
        return ids, w


def heldout_turns(split: str, n: int, seed: int = 0) -> list[dict]:
    """n held-out single turns (held-out phrasings and slot values; split "heldout_val" or
    "heldout_test" only seeds them apart), each with its context, as plan_dialogue would set it."""
    rng = random.Random(f"brain-eval:{split}:{seed}")
    out = []
    names = sorted(domain.INTENTS)
    for i in range(n):
        now = dialogue_corpus._random_now(rng)
        voice = rng.choice(sorted(domain.AGENT_NAMES))
        intent = names[i % len(names)]  # every intent equally
        previous = None
        if domain.INTENTS[intent].needs_previous:
            previous = domain.sample_turn(rng, "train", domain.Context(now=now, agent_voice=voice)).agent_text
        ctx = domain.Context(now=now, agent_voice=voice, previous_answer=previous)
        t = domain.sample_turn(rng, "heldout", ctx, intent)
        out.append({"intent": t.intent, "user_text": t.user_text, "agent_text": t.agent_text, "slots": t.slots,
                    "group": domain.INTENTS[t.intent].group, "now": now.isoformat(timespec="minutes"),
                    "agent_voice": voice, "previous_answer": previous})
    return out
