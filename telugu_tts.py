"""Synthetic Telugu speech from libespeak-ng: the project's embedded, license-free speech source.

espeak-ng is a formant synthesiser: robotic, but it speaks Telugu, runs at hundreds of times real
time on one core, and reports where each word starts. That makes it the corpus generator for the
codec, the speaker encoder and the S2S model (see synthetic_corpus.py), and the voice of the demo
until trained voices exist.

    text -> telugu_text.normalize_text (digits -> words, if that module exists)
         -> espeak_Synth (22050 Hz PCM16 + WORD events) -> resample to 24 kHz
         -> word timings: event starts, ends refined by energy so pauses are not inside a word

The library is driven through ctypes (the PyPI package espeakng-loader ships libespeak-ng and its
data). libespeak-ng keeps global state, so a process holds exactly one instance and synthesises one
utterance at a time; every call sets the voice and all its parameters again, because parameters
persist across voice changes. Parallel work means several processes (synthetic_corpus.py).

Voices are pseudo-speakers: an espeak voice variant (formants, pitch base, voicing; the files in
espeak-ng-data/voices/!v) plus rate, pitch and pitch-range settings. See VOICES for the catalogue.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import re
import sys
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import audio_io

# --- the voice catalogue --------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    name: str
    variant: str  # espeak voice name: "te" or "te+<variant file in voices/!v>"
    gender: str  # "female" | "male"
    pitch: int = 50  # espeak 0-100, relative to the variant's own pitch base
    range: int = 50  # espeak 0-100: pitch movement (flat .. lively)
    rate: int = 175  # words per minute
    role: str = "train"  # "train" | "val" | "test" | "agent" (agent voices are trained on too)


# Chosen by measurement (mean/std of MFCCs over three sentences, z-scored across all 109 variants in
# this espeak-ng data) so that each held-out voice's nearest train voice is at least as far as a
# typical pair of train voices: val/test use variant families (steph*, Diogo/michel, Denis/victor,
# shelby, Alicia, m8, sandro, Andrea) that no train voice uses, so they measure generalisation to
# new timbres, not to new pitch settings. Left out: variants that saturate (iven, antonio, Jacky),
# robots/effects (robosoft*, Demonic, RicishayMax*, UniRobot), whispers (whisper*, caleb) and
# near-duplicates (m5 ~ m4, m6 ~ te, linda ~ f4). The klatt* variants switch to espeak's Klatt
# synthesiser and do sound distinct; one of them (klatt3) is a train voice.
_CATALOGUE = [
    # the agent's four voices: the voice bank enrols them, the S2S model speaks with them
    Voice("lakshmi", "te+f3", "female", pitch=55, range=65, rate=165, role="agent"),
    Voice("priya", "te+f4", "female", pitch=48, range=60, rate=172, role="agent"),
    Voice("ravi", "te+m3", "male", pitch=45, range=60, rate=168, role="agent"),
    Voice("kiran", "te+m7", "male", pitch=52, range=55, rate=175, role="agent"),
    # train
    Voice("train_f1", "te+f1", "female", pitch=50, range=60, rate=160),
    Voice("train_f2", "te+f2", "female", pitch=60, range=50, rate=180),
    Voice("train_f5", "te+f5", "female", pitch=45, range=70, rate=170),
    Voice("train_annie", "te+Annie", "female", pitch=40, range=45, rate=185),
    Voice("train_belinda", "te+belinda", "female", pitch=52, range=55, rate=155),
    Voice("train_anika", "te+anika", "female", pitch=35, range=60, rate=175),
    Voice("train_grandma", "te+grandma", "female", pitch=45, range=40, rate=150),
    Voice("train_aunty", "te+aunty", "female", pitch=58, range=75, rate=190),
    Voice("train_te", "te", "male", pitch=50, range=50, rate=175),
    Voice("train_m1", "te+m1", "male", pitch=40, range=55, rate=160),
    Voice("train_m2", "te+m2", "male", pitch=55, range=45, rate=185),
    Voice("train_m4", "te+m4", "male", pitch=35, range=65, rate=170),
    Voice("train_klatt3", "te+klatt3", "male", pitch=48, range=50, rate=165),
    Voice("train_mario", "te+Mario", "male", pitch=60, range=60, rate=180),
    Voice("train_robert", "te+robert", "male", pitch=45, range=35, rate=150),
    Voice("train_gustave", "te+gustave", "male", pitch=55, range=70, rate=175),
    # val: unseen timbres for model selection
    Voice("val_andrea", "te+Andrea", "female", pitch=50, range=55, rate=170, role="val"),
    Voice("val_steph", "te+steph2", "female", pitch=55, range=60, rate=165, role="val"),
    Voice("val_michel", "te+michel", "male", pitch=50, range=55, rate=170, role="val"),
    Voice("val_denis", "te+Denis", "male", pitch=45, range=50, rate=175, role="val"),
    # test: unseen timbres, reported once
    Voice("test_shelby", "te+shelby", "female", pitch=50, range=55, rate=170, role="test"),
    Voice("test_alicia", "te+Alicia", "female", pitch=45, range=60, rate=165, role="test"),
    Voice("test_m8", "te+m8", "male", pitch=55, range=55, rate=175, role="test"),
    Voice("test_sandro", "te+sandro", "male", pitch=50, range=50, rate=170, role="test"),
]
VOICES: dict[str, Voice] = {v.name: v for v in _CATALOGUE}
ROLES = ("train", "val", "test", "agent")


def voices(role: str | None = None) -> list[Voice]:
    """Catalogue voices of one role, in catalogue order. "train" includes the agent voices: the
    speaker encoder and the S2S model must learn the voices the agent speaks with."""
    if role is None:
        return list(_CATALOGUE)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    wanted = {"train", "agent"} if role == "train" else {role}
    return [v for v in _CATALOGUE if v.role in wanted]


def get_voice(voice: str | Voice) -> Voice:
    if isinstance(voice, Voice):
        return voice
    if voice not in VOICES:
        raise TTSError(f"unknown voice {voice!r}; known voices: {', '.join(VOICES)}")
    return VOICES[voice]


# Variant families the held-out voices use, and variants that sound broken: neither may become a
# training voice (random_train_voices), or held-out scores would measure memory, not hearing.
HELDOUT_FAMILIES = ("Andrea", "steph", "Diogo", "michel", "Denis", "victor", "shelby", "Alicia", "m8", "sandro")
UNUSABLE_VARIANTS = ("iven", "antonio", "Jacky", "robosoft", "Demonic", "RicishayMax", "UniRobot", "whisper",
                     "caleb", "anikaRobot", "Mr serious")


def training_variants(data_path: str | None = None) -> list[str]:
    """Every espeak-ng voice variant (file in voices/!v) usable for training voices."""
    if data_path is None:
        import espeakng_loader
        data_path = espeakng_loader.get_data_path()
    names = sorted(p.name for p in (Path(data_path) / "voices" / "!v").iterdir() if p.is_file())
    return [n for n in names if not n.startswith(HELDOUT_FAMILIES + UNUSABLE_VARIANTS)]


def random_train_voices(n: int, seed: int = 0, data_path: str | None = None) -> list[Voice]:
    """n extra training voices: a usable variant each (cycling through them) with random pitch, pitch
    range and rate, for the ear, which must hear voices it never heard (role "train")."""
    import random

    rng = random.Random(seed)
    variants = training_variants(data_path)
    rng.shuffle(variants)
    return [Voice(f"ear_{i:03d}_{variants[i % len(variants)]}", f"te+{variants[i % len(variants)]}", "unknown",
                  pitch=rng.randint(20, 80), range=rng.randint(25, 85), rate=rng.randint(135, 210))
            for i in range(n)]


# --- libespeak-ng through ctypes ------------------------------------------------------------------

class TTSError(RuntimeError):
    """Synthesis is impossible; the message says why (and which path or name was involved)."""


# speak_lib.h, the parts we use
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # synth returns when done; audio arrives through the callback
_INITIALIZE_DONT_EXIT = 0x8000  # report a bad data path instead of calling exit()
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # a closing pause: without it some variants stop mid-waveform at the very end
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1
_RATE, _VOLUME, _PITCH, _RANGE, _PUNCTUATION, _WORDGAP = 1, 2, 3, 4, 5, 7
# Full-scale espeak output saturates on loud variants; 60 keeps every catalogue voice clear of the
# rails (normalize_loudness sets the final level anyway).
_VOLUME_LEVEL = 60


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters (code points) of the input
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # the same instant in samples: finer than audio_position
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_void_p),  # a union of int / char* / char[8]; unused here
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


class _Espeak:
    """The process's one libespeak-ng instance."""

    def __init__(self, library_path: str | None = None, data_path: str | None = None):
        import espeakng_loader

        self.library_path = library_path or espeakng_loader.get_library_path()
        self.data_path = data_path or espeakng_loader.get_data_path()
        try:
            self.lib = ctypes.CDLL(self.library_path)
        except OSError as e:
            raise TTSError(f"cannot load libespeak-ng from {self.library_path}: {e}") from e
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                                      self.data_path.encode(), _INITIALIZE_DONT_EXIT)
        # A bad data path does not fail here (it returns 0 or -1); the first voice lookup then fails.
        if self.sample_rate <= 0 or self.lib.espeak_SetVoiceByName(b"te") != 0:
            raise TTSError(f"espeak-ng failed to initialise with data path {self.data_path} "
                           f"(library {self.library_path}): no Telugu voice there")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()  # one utterance at a time, whatever the caller does

    def _collect(self, wav, n_samples, events):
        if n_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._events.append((e.text_position - 1, e.length, e.sample))
            i += 1
        return 0  # 0: keep synthesising

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """PCM float32 at self.sample_rate and WORD events (char_start, char_length, sample)."""
        _check_variant(voice.variant, self.data_path)
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.variant.encode()) != 0:
                raise TTSError(f"espeak-ng cannot load voice {voice.variant!r} (data {self.data_path})")
            for param, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.range),
                                 (_VOLUME, _VOLUME_LEVEL), (_PUNCTUATION, 0), (_WORDGAP, 0)):
                self.lib.espeak_SetParameter(param, value, 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0,
                                   _CHARS_UTF8 | _ENDPAUSE, None, None)
            if err != 0:
                raise TTSError(f"espeak_Synth failed with error {err} for voice {voice.variant!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return pcm.astype(np.float32) / 32768.0, self._events


def _check_variant(variant: str, data_path: str) -> None:
    # espeak_SetVoiceByName quietly falls back to the base voice for a missing variant file.
    if "+" in variant and not (Path(data_path) / "voices" / "!v" / variant.split("+", 1)[1]).is_file():
        raise TTSError(f"espeak-ng variant {variant!r} not found in {Path(data_path) / 'voices' / '!v'}")


_engine: _Espeak | None = None


def engine() -> _Espeak:
    global _engine
    if _engine is None:
        _engine = _Espeak()
    return _engine


# --- text and word timings ------------------------------------------------------------------------

def spoken_text(text: str) -> str:
    """The text as spoken: telugu_text.normalize_text (numbers, abbreviations) when that module is
    present, else the raw text (espeak then reads digits with its own Telugu rules)."""
    try:
        normalize = getattr(importlib.import_module("telugu_text"), "normalize_text", None)
    except ImportError:
        normalize = None
    text = normalize(text) if normalize else text
    return " ".join(text.split())


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"  # letters, Telugu vowel signs (M*), digits


def _tokens(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the words: whitespace tokens with their edge punctuation cut."""
    spans = []
    for m in re.finditer(r"\S+", text):
        start, end = m.span()
        while start < end and not _is_word_char(text[start]):
            start += 1
        while end > start and not _is_word_char(text[end - 1]):
            end -= 1
        if start < end:
            spans.append((start, end))
    return spans


def _frame_levels(pcm: np.ndarray, hop: int) -> np.ndarray:
    n = len(pcm) // hop
    frames = pcm[: n * hop].reshape(n, hop)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def word_timings(text: str, events, pcm: np.ndarray, sr: int, silence_db: float = 30.0,
                 margin_s: float = 0.02, max_backfill_s: float = 0.1) -> list[dict]:
    """Words with start/end seconds from espeak WORD events, refined by energy.

    An event marks where espeak starts a word's phonemes: after a pause the sound starts within
    about 10 ms of it (measured over the catalogue), sometimes just before it. The next word's start
    is only an upper bound for a word's end: a comma or sentence pause sits between them. So: a word ends at its last loud frame (+margin), and a word
    that follows a pause starts where its sound starts (at most max_backfill_s before its event).
    "Loud" means within silence_db of the clip's loudest 10 ms frame.
    """
    spans = _tokens(text)
    if not spans:
        return []
    hop = max(1, sr // 100)
    loud = _frame_levels(pcm, hop)
    loud = loud > (loud.max() if loud.size else 0.0) - silence_db
    duration = len(pcm) / sr

    # Each word starts at the first event inside its span; a number read as several words or a
    # hyphenated compound gives several events and stays one word. Words espeak gave no event
    # (rare) are placed by interpolating over character positions.
    starts = []
    for a, b in spans:
        inside = [s for pos, _, s in events if a <= pos < b]
        starts.append(min(inside) / sr if inside else None)
    known = [(a, t) for (a, _), t in zip(spans, starts) if t is not None]
    if not known:
        raise TTSError(f"espeak reported no word events for {text!r}")
    voiced_end = (np.nonzero(loud)[0][-1] + 1) * hop / sr if loud.any() else duration
    xs = [a for a, _ in known] + [len(text)]
    ts = [t for _, t in known] + [voiced_end]
    starts = [t if t is not None else float(np.interp(a, xs, ts)) for (a, _), t in zip(spans, starts)]
    starts = list(np.maximum.accumulate(np.clip(starts, 0.0, duration)))

    words, prev_end = [], 0.0
    for i, (a, b) in enumerate(spans):
        start, end = starts[i], starts[i + 1] if i + 1 < len(spans) else voiced_end
        f0, f1 = int(start * sr) // hop, min(len(loud), int(end * sr) // hop)  # frames before the next word
        voiced = np.nonzero(loud[f0:f1])[0]
        if voiced.size:
            end = min(end, (f0 + voiced[-1] + 1) * hop / sr + margin_s)
            if voiced[0] > 0:  # the event fell in a pause: the word starts where its sound does
                start = (f0 + voiced[0]) * hop / sr - margin_s
            else:  # sound just before the event, after the previous word ended, is this word's onset
                limit, f = max(prev_end, start - max_backfill_s), f0
                while f > 0 and loud[f - 1] and (f - 1) * hop / sr >= limit:
                    f -= 1
                if f < f0:
                    start = max(limit, f * hop / sr - margin_s)
        start = max(start, prev_end)
        end = max(end, start)
        words.append({"word": text[a:b], "start": round(float(start), 3), "end": round(float(end), 3)})
        prev_end = end
    return words


# --- the public entry point -----------------------------------------------------------------------

def synthesize(text: str, voice: str | Voice = "lakshmi") -> tuple[np.ndarray, list[dict]]:
    """Speak `text` with a catalogue voice (name) or any Voice.

    Returns (pcm, words): float32 mono at audio_io.SAMPLE_RATE (24 kHz) and one
    {"word", "start", "end"} (seconds) per word of spoken_text(text), in order.
    """
    voice = get_voice(voice)
    spoken = spoken_text(text)
    if not any(_is_word_char(c) for c in spoken):
        raise TTSError(f"nothing to speak in {text!r}")
    tts = engine()
    pcm, events = tts.synth(spoken, voice)
    words = word_timings(spoken, events, pcm, tts.sample_rate)
    return audio_io.resample(pcm, tts.sample_rate, audio_io.SAMPLE_RATE), words


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Speak Telugu text with an espeak-ng catalogue voice.")
    parser.add_argument("text", nargs="?", help="Telugu text (UTF-8)")
    parser.add_argument("--voice", default="lakshmi", help="catalogue voice name (see --list)")
    parser.add_argument("--out", help="write a PCM16 24 kHz WAV here")
    parser.add_argument("--words", action="store_true", help="print the word timings as JSON")
    parser.add_argument("--list", action="store_true", help="print the voice catalogue and exit")
    args = parser.parse_args(argv)
    if args.list:
        print(f"{'name':15s} {'variant':12s} {'gender':7s} {'role':6s} pitch range rate")
        for v in _CATALOGUE:
            print(f"{v.name:15s} {v.variant:12s} {v.gender:7s} {v.role:6s} {v.pitch:5d} {v.range:5d} {v.rate:4d}")
        return 0
    if args.text is None:
        parser.error("give the text to speak (or --list)")
    if not (args.out or args.words):
        parser.error("nothing to do: give --out FILE.wav and/or --words")
    try:
        pcm, words = synthesize(args.text, args.voice)
    except TTSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        audio_io.save_wav(args.out, pcm)
        print(f"wrote {args.out} ({len(pcm) / audio_io.SAMPLE_RATE:.2f} s, voice {args.voice})", file=sys.stderr)
    if args.words:
        print(json.dumps(words, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
