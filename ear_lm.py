"""The ear's language model: a character n-gram of what users say, fused into CTC beam search.

Greedy CTC writes each character from the sound alone, so one muffled syllable becomes a word that
does not exist (తారిు for తారీఖు) and the brain has to guess. Every production recogniser
(wav2letter, ESPnet, Whisper's beam) decodes with a language model instead: the ear proposes
characters, the LM says which strings are Telugu, and a prefix beam search keeps the few best
readings (Hannun et al. 2014, "First-pass large vocabulary continuous speech recognition").

    lm = load()                                       # checkpoints/ear_lm.json
    decoder = telugu_asr.lm_decoder(lm)               # BeamDecoder with ContextConfig's ear_lm_*
    beams = decoder.start()                           # one per conversation
    beams = decoder.advance(beams, log_probs)         # [slots, vocab] of the ear, as they stream
    text = decoder.finish(beams)                      # the best reading, with the end of the text scored

The LM is interpolated Witten-Bell over characters (order 7: about a word and a half of Telugu),
counted on the training phrasings of every intent and the training sentences, never on held-out
ones. Characters, not words, so a number or a name it never saw still spells out.

CLI: `python ear_lm.py build [--out checkpoints/ear_lm.json]` counts it from the training text.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from telugu_text import asr_text

SHIPPED = Path(__file__).resolve().parent / "checkpoints" / "ear_lm.json"
BOS, EOS = "\x02", "\x03"  # context padding at the start; the symbol that ends a text
NEG = -1e30


# --- the character n-gram --------------------------------------------------------------------------

class CharLM:
    """Interpolated Witten-Bell: P(c | h) = (n(h, c) + T(h) P(c | h')) / (n(h) + T(h)), where T(h)
    is the number of different characters seen after h and h' is h less its first character."""

    def __init__(self, order: int, counts: dict[str, dict[str, int]]):
        self.order = order
        self.counts = counts  # context (0 .. order-1 characters) -> {next character: count}
        self.totals = {h: (sum(c.values()), len(c)) for h, c in counts.items()}
        self.vocab = sorted({ch for c in counts.values() for ch in c})
        self._cache: dict[tuple[str, str], float] = {}

    @staticmethod
    def count(texts, order: int = 7, min_count: int = 1) -> "CharLM":
        """Counts over texts (asr_text form); contexts of 3+ characters seen fewer than min_count
        times are dropped (their mass goes to the shorter context)."""
        counts: dict[str, Counter] = defaultdict(Counter)
        for text in texts:
            s = BOS * (order - 1) + text + EOS
            for i in range(order - 1, len(s)):
                for k in range(order):
                    counts[s[i - k:i]][s[i]] += 1
        kept = {h: dict(c) for h, c in counts.items() if len(h) < 3 or sum(c.values()) >= min_count}
        return CharLM(order, kept)

    def logprob(self, history: str, ch: str) -> float:
        """log P(ch | the last order-1 characters of history), history padded with BOS."""
        h = (BOS * (self.order - 1) + history)[-(self.order - 1):] if self.order > 1 else ""
        key = (h, ch)
        hit = self._cache.get(key)
        if hit is None:
            p = 1.0 / (len(self.vocab) + 1)
            for k in range(0, len(h) + 1):
                ctx = h[len(h) - k:]
                seen = self.totals.get(ctx)
                if seen is None:
                    break  # a longer context unseen: no longer one is seen either
                n, t = seen
                p = (self.counts[ctx].get(ch, 0) + t * p) / (n + t)
            hit = self._cache[key] = math.log(p)
            if len(self._cache) > 500_000:
                self._cache.clear()
        return hit

    def text_logprob(self, text: str) -> float:
        return sum(self.logprob(text[:i], ch) for i, ch in enumerate(text + EOS))

    def save(self, path, **meta) -> None:
        Path(path).write_text(json.dumps({**meta, "order": self.order, "counts": self.counts},
                                         ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def load_optional(path=None) -> CharLM | None:
    """The LM at path; None for "none", or for no path when none is shipped (greedy reading)."""
    if path == "none" or (path is None and not SHIPPED.exists()):
        return None
    return load(path)


def load(path=None) -> CharLM:
    path = Path(path) if path else SHIPPED
    if not path.exists():
        raise FileNotFoundError(f"no ear LM at {path}: build it with `python ear_lm.py build`")
    d = json.loads(path.read_text(encoding="utf-8"))
    return CharLM(d["order"], d["counts"])


# --- CTC prefix beam search with the LM --------------------------------------------------------------

@dataclass
class Beams:
    """One conversation's readings so far: prefix -> (log p ending in blank, log p ending in a
    character), the LM's score folded in."""
    hyps: dict[str, tuple[float, float]]

    def best(self) -> str:
        return max(self.hyps.items(), key=lambda kv: np.logaddexp(*kv[1]))[0].strip()


class BeamDecoder:
    def __init__(self, lm: CharLM, alphabet: list[str], blank: int = 0, alpha: float = 0.4, beta: float = 2.0,
                 beam: int = 16, prune: float = -8.0, max_candidates: int = 8):
        """alphabet: the character of each CTC id after the blank (telugu_asr.ALPHABET, its space
        " "); alpha: the LM's weight; beta: a bonus per character written (the LM alone would
        prefer short texts); beam: readings kept; prune: characters below this log-prob in a slot
        are not tried, nor more than max_candidates of them (a muddled slot costs the most). The
        defaults were tuned on held-out val requests (docs/ear_lm.json)."""
        self.lm, self.alpha, self.beta, self.beam, self.prune = lm, alpha, beta, beam, prune
        self.max_candidates = max_candidates
        self.chars, self.blank = list(alphabet), blank
        self.chars.insert(blank, None)  # CTC id -> character

    def start(self) -> Beams:
        return Beams({"": (0.0, NEG)})

    def advance(self, beams: Beams, log_probs) -> Beams:
        """log_probs [slots, vocab] (numpy or torch) of one conversation -> its beams after them."""
        lp = np.asarray(log_probs, dtype=np.float64)
        hyps = beams.hyps
        for row in lp:
            cands = [int(i) for i in np.flatnonzero(row > self.prune) if i != self.blank]
            if len(cands) > self.max_candidates:  # a muddled slot: its likeliest characters only
                cands = sorted(cands, key=lambda i: -row[i])[:self.max_candidates]
            blank = row[self.blank]
            if not cands:  # silence (most slots): every reading now ends in a blank
                hyps = {k: (float(np.logaddexp(pb, pnb) + blank), NEG) for k, (pb, pnb) in hyps.items()}
                continue
            new: dict[str, list[float]] = defaultdict(lambda: [NEG, NEG])
            for prefix, (pb, pnb) in hyps.items():
                total = np.logaddexp(pb, pnb)
                e = new[prefix]
                e[0] = np.logaddexp(e[0], blank + total)
                for i in cands:
                    ch = self.chars[i]
                    if ch == " " and (not prefix or prefix[-1] == " "):
                        e[0] = np.logaddexp(e[0], row[i] + total)  # a space where one is already: no change
                        continue
                    if prefix and ch == prefix[-1]:
                        e[1] = np.logaddexp(e[1], row[i] + pnb)  # the same character held
                        source = pb  # a doubled character needs a blank between
                    else:
                        source = total
                    if source <= NEG / 2:
                        continue
                    ext = new[prefix + ch]
                    lm = self.alpha * self.lm.logprob(prefix, ch) + self.beta
                    ext[1] = np.logaddexp(ext[1], row[i] + source + lm)
            ranked = sorted(new.items(), key=lambda kv: -np.logaddexp(*kv[1]))[:self.beam]
            hyps = {k: (v[0], v[1]) for k, v in ranked}
        return Beams(hyps)

    def finish(self, beams: Beams) -> str:
        """The best reading once the text is over: each scored for ending where it does."""
        def final(kv):
            prefix, (pb, pnb) = kv
            return np.logaddexp(pb, pnb) + self.alpha * self.lm.logprob(prefix.rstrip(), EOS)
        return " ".join(max(beams.hyps.items(), key=final)[0].split())

    def decode(self, log_probs) -> str:
        """A whole utterance at once."""
        return self.finish(self.advance(self.start(), log_probs))


# --- the training text ----------------------------------------------------------------------------

def training_texts(requests: int = 60000, seed: int = 0) -> list[str]:
    """What users say in training: sampled training-phrasing requests of every intent (with their
    slot values, over many contexts) and the training sentences of the synthetic corpus. No
    held-out phrasing or sentence."""
    import dialogue_corpus
    import dialogue_domain as domain
    import synthetic_corpus

    rng = random.Random(seed)
    out = []
    names = sorted(domain.INTENTS)
    for i in range(requests):
        ctx = domain.Context(now=dialogue_corpus._random_now(rng), agent_voice=rng.choice(sorted(domain.AGENT_NAMES)))
        out.append(asr_text(domain.sample_turn(rng, "train", ctx, names[i % len(names)]).user_text))
    train, _ = synthetic_corpus.split_sentences(synthetic_corpus.read_sentences(synthetic_corpus.DEFAULT_SENTENCES),
                                                0.1, 0)
    out += [asr_text(s.text) for s in train]
    return [t for t in out if t]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="count the LM on the training text")
    b.add_argument("--out", default=str(SHIPPED))
    b.add_argument("--order", type=int, default=7)
    b.add_argument("--requests", type=int, default=60000)
    b.add_argument("--min_count", type=int, default=2)
    args = p.parse_args(argv)
    texts = training_texts(args.requests)
    lm = CharLM.count(texts, args.order, args.min_count)
    lm.save(args.out, texts=len(texts), chars=sum(map(len, texts)), requests=args.requests,
            command=f"python ear_lm.py build --order {args.order} --requests {args.requests} "
                    f"--min_count {args.min_count}")
    print(f"{len(texts)} texts, {sum(map(len, texts))} characters, {len(lm.counts)} contexts: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
