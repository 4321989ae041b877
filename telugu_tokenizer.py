"""The Telugu text tokenizer of the S2S model: a SentencePiece BPE model (~1000 pieces) trained
on the project's sentences, and the frame alignment that turns timed words into the dense,
one-token-per-frame text streams the model reads and writes (Moshi's "inner monologue").

Special ids are fixed by construction, so the model and the data pipeline can rely on them:

    PAD_ID = 0   "no new text this frame": fills the frames between words (Moshi's padding)
    UNK_ID = 1   a character the training text never showed
    BOS_ID = 2   reserved (start of a text), never produced by encode()
    EOS_ID = 3   reserved (end of a text), never produced by encode()

BPE rather than unigram, measured on the project's 2,700 sentences (2,400 train / 300 held out,
vocab 1000): BPE takes 2.05 tokens per word on held-out text against unigram's 2.52, since unigram
often splits a word's "▁" off as a token of its own. Fewer tokens per word mean a shorter text
stream per second of speech and less spill in align_words. Neither met an unknown character.

No separate start-of-word token: SentencePiece marks the first piece of every word with "▁"
(U+2581), so the piece stream already says where words begin and decode() restores the spaces.
An extra WORD token would cost one frame per word of a stream that has to keep pace with speech.

Text is NFC-normalised and its whitespace collapsed before encoding (SentencePiece itself runs with
the identity rule), so decode(encode(s)) == normalize(s) for any text made of known characters.

    python telugu_tokenizer.py train --out checkpoints/telugu_spm.model [--vocab 1000]
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHIPPED = ROOT / "checkpoints" / "telugu_spm.model"
DEFAULT_SENTENCES = ROOT / "data" / "telugu_sentences.tsv"

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
WORD_MARK = "\u2581"  # SentencePiece's word-start marker


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


class Tokenizer:
    def __init__(self, processor, path=None):
        self.sp = processor
        self.path = Path(path) if path else None
        ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(f"{path}: special ids (pad, unk, bos, eos) are {ids}, "
                             f"expected {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}: train it with Tokenizer.train")
        # The text each id adds to a running transcript: "▁" becomes a space, specials add nothing.
        self._pieces = [self._display(i) for i in range(self.vocab_size)]

    # --- loading and training -------------------------------------------------------------------
    @classmethod
    def load(cls, path=None) -> "Tokenizer":
        import sentencepiece as spm

        path = Path(path) if path else SHIPPED
        if not path.exists():
            raise FileNotFoundError(f"tokenizer not found: {path} "
                                    f"(train one: python telugu_tokenizer.py train --out {path})")
        return cls(spm.SentencePieceProcessor(model_file=str(path)), path)

    @classmethod
    def train(cls, texts, out_path, vocab_size: int = 1000, model_type: str = "bpe") -> "Tokenizer":
        """Train on an iterable of texts; writes OUT.model and OUT.vocab. A corpus too small for
        `vocab_size` gets a smaller vocabulary rather than an error (hard_vocab_limit off)."""
        import sentencepiece as spm

        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        texts = sorted({normalize(t) for t in texts if t and t.strip()})
        if not texts:
            raise ValueError("no text to train the tokenizer on")
        prefix = out_path.with_suffix("")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=str(prefix), vocab_size=vocab_size,
            model_type=model_type, character_coverage=1.0, normalization_rule_name="identity",
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            hard_vocab_limit=False, num_threads=1, minloglevel=2)
        written = prefix.with_suffix(".model")
        if written != out_path:
            written.replace(out_path)
        return cls.load(out_path)

    # --- ids and text ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(normalize(text), out_type=int)

    def decode(self, ids) -> str:
        """Ids -> text, skipping PAD (and BOS/EOS): a frame-aligned stream decodes to its words."""
        keep = [int(i) for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID)]
        return self.sp.decode(keep)

    def piece(self, token_id: int) -> str:
        """The text one id appends to a live transcript: "▁తె" -> " తె", PAD -> ""."""
        return self._pieces[token_id] if 0 <= token_id < self.vocab_size else ""

    def _display(self, token_id: int) -> str:
        if token_id in (PAD_ID, BOS_ID, EOS_ID):
            return ""
        if token_id == UNK_ID:
            return "\u2047"  # "⁇", as SentencePiece decodes an unknown piece
        return self.sp.id_to_piece(token_id).replace(WORD_MARK, " ")

    # --- frame alignment ------------------------------------------------------------------------
    def align_words(self, words, n_frames: int, frame_rate: float, lag_frames: int = 2,
                    anchor: str = "end") -> list[int]:
        """Timed words -> a dense stream of `n_frames` token ids, one per frame, PAD between words.

        words: [{"word", "start", "end"}] in seconds (telugu_tts.synthesize, manifests' `words`).
        anchor="end" (the user's transcript): a word's first token goes on frame
            ceil(end * frame_rate) + lag_frames, the first frame after the word was fully heard,
            plus a lag; the model can only transcribe what it has heard.
        anchor="start" (the agent's inner monologue): on frame floor(start * frame_rate) +
            lag_frames, with a negative lag_frames as the lead of text over speech (Moshi).
        A word's tokens go one per frame. When a word has more tokens than there are frames
        before the next word's slot, the rest spill into the following frames and push the next
        word later: tokens are never dropped or overwritten, and order is kept, so
        decode(stream) gives the words back. A stream that would run past `n_frames` raises
        ValueError naming how many frames it needs (pad the audio with silence frames).
        """
        if anchor not in ("end", "start"):
            raise ValueError(f"anchor must be 'end' or 'start', got {anchor!r}")
        stream = [PAD_ID] * n_frames
        cursor = 0  # first frame not yet taken
        for w in words:
            ids = self.encode(w["word"])
            if not ids:
                continue
            if anchor == "end":
                want = math.ceil(float(w["end"]) * frame_rate - 1e-6) + lag_frames
            else:
                want = math.floor(float(w["start"]) * frame_rate + 1e-6) + lag_frames
            first = max(want, cursor, 0)
            if first + len(ids) > n_frames:
                raise ValueError(f"word {w['word']!r}: its {len(ids)} tokens from frame {first} run past "
                                 f"the {n_frames} frames; give at least {first + len(ids)} frames")
            stream[first:first + len(ids)] = ids
            cursor = first + len(ids)
        return stream


# --- training data and CLI ------------------------------------------------------------------------

def read_sentences(path) -> list[str]:
    """The `sentence` column of a TSV with a category/sentence header (data/telugu_sentences.tsv)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or "sentence" not in reader.fieldnames:
            raise ValueError(f"{path}: header must name a `sentence` column, got {reader.fieldnames}")
        return [row["sentence"] for row in reader if (row.get("sentence") or "").strip()]


def read_lines(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def training_texts(sentences_tsv, extra_files=()) -> list[str]:
    """Each sentence as written and as spoken (telugu_tts.spoken_text spells numbers out), so the
    pieces cover the words of the synthesis word timings too."""
    texts = read_sentences(sentences_tsv)
    try:
        from telugu_tts import spoken_text
        texts += [spoken_text(t) for t in texts]
    except ImportError:
        pass
    for p in extra_files:
        texts += read_lines(p)
    return texts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Telugu SentencePiece tokenizer of the S2S model")
    sub = p.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train on the project's sentences (+ extra text files)")
    tr.add_argument("--out", default=str(SHIPPED), help="OUT.model (OUT.vocab is written beside it)")
    tr.add_argument("--vocab", type=int, default=1000)
    tr.add_argument("--sentences", default=str(DEFAULT_SENTENCES), help="TSV with a `sentence` column")
    tr.add_argument("--text", action="append", default=[], help="extra text file, one text a line (repeatable)")
    tr.add_argument("--model_type", default="bpe", choices=["bpe", "unigram"])
    enc = sub.add_parser("encode", help="print the pieces and ids of a text")
    enc.add_argument("text")
    enc.add_argument("--model", default=str(SHIPPED))
    args = p.parse_args(argv)
    try:
        if args.cmd == "train":
            texts = training_texts(args.sentences, args.text)
            tok = Tokenizer.train(texts, args.out, args.vocab, args.model_type)
            print(f"{args.out}: {tok.vocab_size} pieces from {len(set(texts))} texts")
        else:
            tok = Tokenizer.load(args.model)
            ids = tok.encode(args.text)
            print(" ".join(f"{tok.sp.id_to_piece(i)}:{i}" for i in ids))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
