"""Render the dialogue domain (dialogue_domain.py) into two-channel Telugu dialogues.

    plan (text only, deterministic from seed, split, index)
      -> agent answers: every distinct answer text x the four agent voices, synthesised once and
         cached as agent_answers/<voice>/<key>.wav (+ .json with word timings)
      -> per dialogue, grouped by user voice (libespeak-ng: one voice per process at a time):
         synthesise the user's requests and backchannels, lay both sides out in time, augment
         the user's side, write <split>/<id>.wav (user left, agent right), <id>.json, and
         <id>.user_dry.wav (the user's side before augmentation)
      -> dialogues_<split>.jsonl, agent_answers_<split>.jsonl, rejected_<split>.jsonl, corpus_<split>.json

Timing (seconds of dialogue time, 24 kHz):
  - the agent starts RESPONSE_GAP after the user's last word ends, never while the user speaks;
  - P_HESITATE of the longer requests pause for HESITATION between two of their words ("ఈ రోజు ...
    తేదీ ఎంత?"); the agent waits the pause out, so it learns to tell a pause from an end;
  - TURN_PAUSE separates an answer from the next request;
  - a backchannel ("ఊ", "అవును", ...) falls in a pause of the agent's answer and does not stop it;
  - an interruption: the user's next request starts while the agent speaks (onset = the request's
    first word); the agent's channel is silent from onset + YIELD_DELAY (80-120 ms: two to three
    40 ms frames) on, its words are cut there, and the agent answers the interrupting request.

Splits: "train" (user voices of role train, training phrasings and slot values), "heldout_val"
(val voices) and "heldout_test" (test voices), both with held-out phrasings and slot values
(dialogue_domain). Agent voices: the four of role "agent" in every split.

Augmentation (augment.py) of the user's side, params stored in the JSON under "augment":
tempo is applied to each user utterance before the layout (the JSON's timings include it); pitch,
formant and the channel effects are applied to the laid-out user channel, which keeps every
timing. The WAV's left channel is the augmented user; <id>.user_dry.wav is the same user channel
with tempo only, so a trainer can augment on the fly instead. augment.apply(dry, sr, params
without tempo) gives the stored left channel again with the same spectra; the waveform differs by
about 1-6 % rms where pitch is shifted (the phase vocoder is sensitive to the PCM16 rounding of dry).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import random
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf

import audio_io
import augment as augment_lib
import dialogue_domain as domain
import telugu_tts
from config import ROOT, AudioConfig

FORMAT_VERSION = 4  # bump when the rendering changes: old dialogues are then rebuilt
SPLITS = {"train": ("train", "train"), "heldout_val": ("heldout", "val"), "heldout_test": ("heldout", "test")}
FRAME_S = AudioConfig().frame_ms / 1000

LEAD = (0.3, 1.0)  # silence before the first request
RESPONSE_GAP = (0.1, 0.4)  # end of the user's last word -> the agent's first word (v2: 0.2-0.6)
HESITATION = (0.25, 0.7)  # a pause inside a request: longer than the early endpoint's 80 ms of quiet
P_HESITATE = 0.2  # share of requests of 3+ words with one such pause
TURN_PAUSE = (0.4, 1.5)  # end of an answer -> the next request
TAIL = (0.5, 1.0)  # silence after the last utterance
YIELD_DELAY = (0.08, 0.12)  # interruption onset -> agent silent: 2-3 frames of 40 ms
P_INTERRUPT = 0.15  # share of answers the user interrupts
P_STOP = 0.3  # share of interruptions that are "stop" rather than a new request
P_BACKCHANNEL = 0.25  # share of (uninterrupted) answers with a backchannel
MIN_INTERRUPTIBLE_S = 1.2  # shorter answers are not interrupted (nothing to cut)
MIN_BACKCHANNEL_ANSWER_S = 1.5
TURN_COUNTS, TURN_WEIGHTS = (1, 2, 3, 4), (0.2, 0.3, 0.3, 0.2)
OPENERS = ("greet_hello", "greet_morning", "greet_afternoon", "greet_evening", "can_you_hear", "how_are_you")
CLOSERS = ("thanks", "goodbye", "greet_night")
_FADE_S = 0.005
_TASK_DIALOGUES = 10


def user_voices(split: str) -> list[telugu_tts.Voice]:
    """Voices that speak the user's side: train voices (never the agent's own voices) for train,
    val or test voices for the held-out splits."""
    role = SPLITS[split][1]
    return [v for v in telugu_tts.voices(role) if v.role == role]


def agent_voices() -> list[telugu_tts.Voice]:
    return telugu_tts.voices("agent")


# --- planning: text and choices, no audio ---------------------------------------------------------

NOW_START, NOW_SPAN_MIN = dt.datetime(2020, 1, 1), 11 * 365 * 24 * 60  # the moments dialogues are set at


def _random_now(rng: random.Random) -> dt.datetime:
    return NOW_START + dt.timedelta(minutes=rng.randrange(NOW_SPAN_MIN))


def plan_dialogue(split: str, index: int, seed: int = 0, augment: bool = True, strength: float = 1.0) -> dict:
    """The text and every random choice of one dialogue, JSON-able. Depends only on its arguments,
    so dialogue i is the same whatever the corpus size."""
    domain_split, _ = SPLITS[split]
    key = f"{seed}:{split}:{index}"
    rng = random.Random(key)
    dialogue_seed = zlib.crc32(key.encode())
    user_voice = rng.choice(user_voices(split)).name
    agent_voice = rng.choice(agent_voices()).name
    now = _random_now(rng)
    context = domain.Context(now=now, agent_voice=agent_voice)
    n_turns = rng.choices(TURN_COUNTS, TURN_WEIGHTS)[0]
    turns, forced = [], None
    k = 0
    while k < n_turns or forced:
        intent = forced
        if intent is None and k == 0 and rng.random() < 0.3:
            intent = rng.choice(OPENERS)
        elif intent is None and k == n_turns - 1 and k > 0 and rng.random() < 0.25:
            intent = rng.choice(CLOSERS)
        elif intent is None and turns and turns[-1]["interrupted"]:  # an interrupting request
            intent = rng.choice([n for n, it in domain.INTENTS.items() if not it.needs_previous])
        turn = domain.sample_turn(rng, domain_split, context, intent)
        forced = None
        interrupted = rng.random() < P_INTERRUPT and turn.intent != "stop"
        if interrupted and (k == n_turns - 1 or rng.random() < P_STOP):
            forced = "stop"  # the last answer can only be interrupted by "stop"
        turns.append({"intent": turn.intent, "user_text": turn.user_text, "agent_text": turn.agent_text,
                      "slots": turn.slots, "phrasing": turn.phrasing, "heldout": turn.heldout,
                      "interrupted": interrupted,
                      "backchannel": rng.choice(domain.BACKCHANNELS)
                      if not interrupted and rng.random() < P_BACKCHANNEL else None})
        if turn.intent not in ("stop", "repeat", "didnt_understand"):
            context.previous_answer = turn.agent_text
        k += 1
    # Pauses inside requests come from their own stream, so the rest of the plan (intents,
    # phrasings, slot values) is what it was before they existed.
    hrng = random.Random(f"hesitate:{key}")
    for turn in turns:
        n_words = len(turn["user_text"].split())
        turn["hesitation"] = None
        if n_words >= 3 and hrng.random() < P_HESITATE:
            turn["hesitation"] = {"after_words": hrng.randint(1, n_words - 1),
                                  "pause_s": round(hrng.uniform(*HESITATION), 3)}
    params = augment_lib.sample_params(np.random.default_rng(dialogue_seed), strength) if augment else None
    spec = {"id": f"{split}_{index:06d}", "split": split, "seed": dialogue_seed, "user_voice": user_voice,
            "agent_voice": agent_voice, "agent_name": domain.AGENT_NAMES.get(agent_voice, agent_voice),
            "now": now.isoformat(timespec="minutes"), "turns": turns, "augment": params,
            "format_version": FORMAT_VERSION}
    spec["spec_hash"] = hashlib.sha1(json.dumps(spec, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]
    return spec


# --- clips ----------------------------------------------------------------------------------------

def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _fade(pcm: np.ndarray, sr: int) -> np.ndarray:
    n = min(len(pcm) // 2, int(_FADE_S * sr))
    if n > 0:
        ramp = np.linspace(0, 1, n, dtype=np.float32)
        pcm = pcm.copy()
        pcm[:n] *= ramp
        pcm[-n:] *= ramp[::-1]
    return pcm


def speak(text: str, voice) -> tuple[np.ndarray, list[dict]]:
    """Synthesise, trim to the speech (30 ms margins), normalise, fade the edges. Word times are
    relative to the clip's first sample."""
    pcm, words = telugu_tts.synthesize(text, voice)
    pcm, offset = audio_io.trim_silence(pcm, margin_s=0.03)
    duration = len(pcm) / audio_io.SAMPLE_RATE
    words = [{"word": w["word"], "start": round(min(max(w["start"] - offset, 0.0), duration), 3),
              "end": round(min(max(w["end"] - offset, 0.0), duration), 3)} for w in words]
    pcm = _fade(audio_io.normalize_loudness(pcm), audio_io.SAMPLE_RATE)
    if not words or not np.all(np.isfinite(pcm)) or float(np.sqrt(np.mean(pcm**2))) < 1e-4:
        raise telugu_tts.TTSError(f"no usable speech for {text!r} in voice {getattr(voice, 'name', voice)}")
    return pcm, words


def _answer_paths(out_dir: Path, voice: str, text: str) -> tuple[Path, Path]:
    key = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    wav = out_dir / "agent_answers" / voice / f"{key}.wav"
    return wav, wav.with_suffix(".json")


def agent_answer(out_dir: Path, voice: telugu_tts.Voice, text: str) -> dict:
    """The cached clip of `text` in an agent voice, synthesised on first use. Returns its sidecar
    (text as spoken, words, duration) or raises TTSError."""
    wav, sidecar = _answer_paths(out_dir, voice.name, text)
    source = {"text": text, "voice": asdict(voice)}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta["source"] == source and sf.info(str(wav)).frames > 0:
            return meta
    except (OSError, ValueError, KeyError, RuntimeError):
        pass
    pcm, words = speak(text, voice)
    audio_io.save_wav(wav, pcm)
    meta = {"source": source, "text": telugu_tts.spoken_text(text), "words": words,
            "duration": round(len(pcm) / audio_io.SAMPLE_RATE, 3)}
    _write_json(sidecar, meta)  # written last: a sidecar means the clip is complete
    return meta


def hesitate(pcm: np.ndarray, words: list[dict], after_words: int, pause_s: float, sr: int):
    """Insert pause_s of silence between word after_words-1 and word after_words (midway in the
    gap between them, with short fades so the cut does not click). Returns (pcm, words)."""
    if len(words) < 2:
        return pcm, words
    k = min(max(1, after_words), len(words) - 1)
    cut = int(round(0.5 * (words[k - 1]["end"] + words[k]["start"]) * sr))
    n, f = int(round(pause_s * sr)), int(_FADE_S * sr)
    head, tail = pcm[:cut].copy(), pcm[cut:].copy()
    head[-f:] *= np.linspace(1, 0, len(head[-f:]), dtype=np.float32)
    tail[:f] *= np.linspace(0, 1, len(tail[:f]), dtype=np.float32)
    return np.concatenate([head, np.zeros(n, np.float32), tail]), pause_words(words, k, n / sr)


def pause_words(words: list[dict], k: int, pause_s: float) -> list[dict]:
    """The word timings with words k.. moved pause_s later (a pause after the k-th word)."""
    return [dict(w) for w in words[:k]] + _shift(words[k:], pause_s)


def _run_answers(task):
    out_dir, voice, texts = task
    out = []
    for text in texts:
        try:
            out.append((voice.name, text, agent_answer(out_dir, voice, text), None))
        except telugu_tts.TTSError as e:
            out.append((voice.name, text, None, str(e)))
    return out


# --- layout ---------------------------------------------------------------------------------------

class _Timeline:
    """Two channels that grow as clips are placed."""

    def __init__(self, sr: int):
        self.sr = sr
        self.channels = [np.zeros(0, np.float32), np.zeros(0, np.float32)]  # user, agent

    def place(self, side: int, pcm: np.ndarray, start_s: float) -> None:
        i = int(round(start_s * self.sr))
        if i < 0:
            raise ValueError("clip placed before the dialogue starts")
        ch = self.channels[side]
        if len(ch) < i + len(pcm):
            ch = np.pad(ch, (0, i + len(pcm) - len(ch)))
        ch[i:i + len(pcm)] += pcm
        self.channels[side] = ch

    def silence_from(self, side: int, t_s: float) -> None:
        """Everything on `side` from t on is silent, with a short fade that ends at t."""
        ch = self.channels[side]
        end = int(t_s * self.sr)  # floor: the stored (rounded) time is at or after the first zero
        n = int(_FADE_S * self.sr)
        start = max(0, end - n)
        if start < len(ch):
            ch[start:end] *= np.linspace(1, 0, end - start, dtype=np.float32)[: len(ch[start:end])]
            ch[end:] = 0

    def finish(self, total_s: float) -> np.ndarray:
        n = int(round(total_s * self.sr))
        return np.stack([np.pad(c, (0, max(0, n - len(c))))[:n] for c in self.channels], axis=1)


def _shift(words, offset):
    return [{"word": w["word"], "start": round(w["start"] + offset, 3), "end": round(w["end"] + offset, 3)}
            for w in words]


def _utterance(side, kind, turn_index, text, words, turn=None, **extra):
    out = {"side": side, "kind": kind, "turn": turn_index, "text": text,
           "start": words[0]["start"], "end": words[-1]["end"], "words": words}
    if turn is not None:
        out.update(intent=turn["intent"], slots=turn["slots"])
    out.update(extra)
    return out


def _backchannel_time(words, rng) -> float:
    """A pause between two words of the answer's middle half, else a point inside it."""
    t0, t1 = words[0]["start"], words[-1]["end"]
    lo, hi = t0 + 0.25 * (t1 - t0), t0 + 0.75 * (t1 - t0)
    gaps = [a["end"] for a, b in zip(words, words[1:]) if lo <= a["end"] <= hi and b["start"] - a["end"] > 0.05]
    return rng.choice(gaps) if gaps else rng.uniform(lo, hi)


def _cut_answer(tl: _Timeline, a_words, turn, k, rng):
    """The user interrupts answer k: their next request starts inside it, the agent falls silent
    YIELD_DELAY later and its words stop there. Returns (agent utterance, interruption, onset)."""
    a_dur = a_words[-1]["end"] - a_words[0]["start"]
    onset = round(a_words[0]["start"] + rng.uniform(max(0.5, 0.3 * a_dur), a_dur - 0.3), 3)
    cut = round(onset + rng.uniform(*YIELD_DELAY), 3)
    tl.silence_from(1, cut)
    kept = [dict(w) for w in a_words if w["start"] < cut]
    if kept[-1]["end"] > cut:
        kept[-1]["end"] = cut
        kept[-1]["truncated"] = True
    utt = _utterance("agent", "answer", k, " ".join(w["word"] for w in kept), kept, turn,
                     interrupted=True, full_text=turn["agent_text"], silent_from=cut)
    return utt, {"turn": k, "by_turn": k + 1, "onset": onset, "agent_silent_from": cut}, onset


def _add_backchannel(tl: _Timeline, a_words, clip, k, rng):
    """The user says "ఊ" or the like in a pause of answer k; the agent goes on. Returns the utterance."""
    b_pcm, b_words, b_text = clip
    b_onset = _backchannel_time(a_words, rng) + rng.uniform(0.0, 0.15)
    tl.place(0, b_pcm, b_onset - b_words[0]["start"])
    return _utterance("user", "backchannel", k, b_text, _shift(b_words, b_onset - b_words[0]["start"]))


def layout(spec: dict, user_clips: list, backchannel_clips: dict, agent_clips: list, sr: int):
    """Place every clip in time. user_clips[k] / agent_clips[k]: (pcm, words) of turn k;
    backchannel_clips[k]: (pcm, words, text). Returns (stereo pcm, utterances, turns, interruptions)."""
    rng = random.Random(f"layout:{spec['seed']}")
    tl = _Timeline(sr)
    utterances, turns_out, interruptions = [], [], []
    t = rng.uniform(*LEAD)  # where the next request starts, unless it interrupts
    pending_onset = None  # ... in which case it starts here, inside the previous answer
    turns = spec["turns"]
    for k, turn in enumerate(turns):
        u_pcm, u_words = user_clips[k]
        onset = pending_onset if pending_onset is not None else t
        tl.place(0, u_pcm, onset - u_words[0]["start"])
        user_utt = _utterance("user", "request", k, turn["user_text"], _shift(u_words, onset - u_words[0]["start"]),
                              turn, interrupts=pending_onset is not None, phrasing=turn["phrasing"],
                              heldout=turn["heldout"], hesitation=turn.get("hesitation"))
        utterances.append(user_utt)
        pending_onset = None

        a_pcm, a_words = agent_clips[k]
        a_offset = user_utt["end"] + rng.uniform(*RESPONSE_GAP) - a_words[0]["start"]
        tl.place(1, a_pcm, a_offset)
        a_words = _shift(a_words, a_offset)
        a_dur = a_words[-1]["end"] - a_words[0]["start"]
        if turn["interrupted"] and k + 1 < len(turns) and a_dur >= MIN_INTERRUPTIBLE_S:
            agent_utt, interruption, pending_onset = _cut_answer(tl, a_words, turn, k, rng)
            interruptions.append(interruption)
        else:
            agent_utt = _utterance("agent", "answer", k, turn["agent_text"], a_words, turn, interrupted=False)
            end = agent_utt["end"]
            if k in backchannel_clips and a_dur >= MIN_BACKCHANNEL_ANSWER_S:
                utterances.append(_add_backchannel(tl, a_words, backchannel_clips[k], k, rng))
                end = max(end, utterances[-1]["end"])
            t = end + rng.uniform(*TURN_PAUSE)
        utterances.append(agent_utt)
        turns_out.append({"turn": k, "intent": turn["intent"], "slots": turn["slots"], "phrasing": turn["phrasing"],
                          "heldout": turn["heldout"], "user_text": turn["user_text"],
                          "agent_text": turn["agent_text"], "interrupted": agent_utt["interrupted"]})
    utterances.sort(key=lambda u: (u["start"], u["side"]))
    for i, u in enumerate(utterances):  # the turns point at their utterances in time order
        if u["kind"] in ("request", "answer"):
            turns_out[u["turn"]]["user_utterance" if u["kind"] == "request" else "agent_utterance"] = i
    stereo = tl.finish(max(u["end"] for u in utterances) + rng.uniform(*TAIL))
    return stereo, utterances, turns_out, interruptions


# --- one dialogue ---------------------------------------------------------------------------------

def _dialogue_paths(out_dir: Path, spec: dict) -> dict[str, Path]:
    base = out_dir / spec["split"] / spec["id"]
    return {"wav": base.with_suffix(".wav"), "json": base.with_suffix(".json"),
            "dry": base.with_name(base.name + ".user_dry.wav")}


def _cached_dialogue(paths, spec):
    try:
        meta = json.loads(paths["json"].read_text(encoding="utf-8"))
        if meta["spec_hash"] != spec["spec_hash"]:
            return None
        if sf.info(str(paths["wav"])).frames == 0:
            return None
        if meta.get("user_dry") and not paths["dry"].exists():
            return None
        return meta
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def render_dialogue(out_dir: Path, spec: dict, store_dry: bool = True) -> dict:
    """Synthesise, lay out, augment and write one dialogue (or reuse it). Returns its JSON."""
    paths = _dialogue_paths(out_dir, spec)
    meta = _cached_dialogue(paths, spec)
    if meta is not None:
        return meta
    sr = audio_io.SAMPLE_RATE
    user_voice = telugu_tts.get_voice(spec["user_voice"])
    agent_voice = telugu_tts.get_voice(spec["agent_voice"])
    params = spec["augment"] or {}
    tempo = {"tempo": params["tempo"]} if "tempo" in params else {}

    def user_clip(text, hesitation=None):
        pcm, words = speak(text, user_voice)
        pcm, words = augment_lib.apply(pcm, sr, tempo, words) if tempo else (pcm, words)
        if hesitation:
            pcm, words = hesitate(pcm, words, hesitation["after_words"], hesitation["pause_s"], sr)
        return pcm, words

    user_clips = [user_clip(t["user_text"], t.get("hesitation")) for t in spec["turns"]]
    backchannels = {k: (*user_clip(t["backchannel"]), t["backchannel"])
                    for k, t in enumerate(spec["turns"]) if t["backchannel"]}
    agent_clips = []
    for t in spec["turns"]:
        wav, _ = _answer_paths(out_dir, agent_voice.name, t["agent_text"])
        meta_a = agent_answer(out_dir, agent_voice, t["agent_text"])
        agent_clips.append((audio_io.load_audio(wav), meta_a["words"]))

    stereo, utterances, turns, interruptions = layout(spec, user_clips, backchannels, agent_clips, sr)
    dry = stereo[:, 0].copy()
    channel_params = {k: v for k, v in params.items() if k != "tempo"}
    if channel_params:
        stereo[:, 0], _ = augment_lib.apply(dry, sr, channel_params)
    paths["wav"].parent.mkdir(parents=True, exist_ok=True)
    tmp = paths["wav"].with_name(paths["wav"].name + ".tmp")
    sf.write(tmp, np.clip(stereo, -1, 1), sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, paths["wav"])
    if spec["augment"] is not None and store_dry:
        audio_io.save_wav(paths["dry"], dry)
    meta = {
        "id": spec["id"], "split": spec["split"], "format_version": FORMAT_VERSION, "spec_hash": spec["spec_hash"],
        "audio": paths["wav"].name, "channels": ["user", "agent"], "sample_rate": sr,
        "duration": round(len(stereo) / sr, 3), "frame_s": FRAME_S,
        "user_voice": spec["user_voice"], "agent_voice": spec["agent_voice"], "agent_name": spec["agent_name"],
        "now": spec["now"], "now_text": domain.now_text(dt.datetime.fromisoformat(spec["now"])),
        "augment": None if spec["augment"] is None else {
            "params": params, "user_dry": paths["dry"].name if store_dry else None,
            "note": "tempo is applied per user utterance before layout (timings include it); the other "
                    "effects to the whole user channel: augment.apply(user_dry, sr, params minus tempo)"},
        "turns": turns, "utterances": utterances, "interruptions": interruptions,
    }
    _write_json(paths["json"], meta)  # written last: a JSON means the dialogue is complete
    return meta


def _init_worker():
    try:
        os.nice(5)  # share the two cores politely with training jobs
    except OSError:
        pass


def _run_dialogues(task):
    out_dir, specs, store_dry = task
    out = []
    for spec in specs:
        try:
            out.append((spec["id"], render_dialogue(out_dir, spec, store_dry), None))
        except (telugu_tts.TTSError, ValueError, audio_io.AudioError) as e:
            out.append((spec["id"], None, f"{type(e).__name__}: {e}"))
    return out


def _run_pool(fn, tasks, workers, bar):
    results = []
    if workers > 1 and len(tasks) > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for result in pool.imap_unordered(fn, tasks):
                results += result
                bar.update(len(result))
    else:
        for task in tasks:
            result = fn(task)
            results += result
            bar.update(len(result))
    return results


def _round_robin(groups: dict, size: int) -> list:
    """Chunks of each group, interleaved so that all workers stay busy to the end."""
    chunks = {k: [v[i:i + size] for i in range(0, len(v), size)] for k, v in groups.items()}
    out = []
    for i in range(max((len(c) for c in chunks.values()), default=0)):
        out += [(k, c[i]) for k, c in sorted(chunks.items()) if i < len(c)]
    return out


# --- the build ------------------------------------------------------------------------------------

def build(out_dir, n_dialogues: int, split: str = "train", workers: int = 2, seed: int = 0, augment: bool = True,
          strength: float = 1.0, store_dry: bool = True, progress: bool = True) -> dict[str, Path]:
    """Build (or complete) one split in out_dir; returns the paths of its manifests and summary."""
    from tqdm import tqdm

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    specs = [plan_dialogue(split, i, seed, augment, strength) for i in range(n_dialogues)]

    # 1. every distinct answer in every agent voice (the dialogues read their agent side from here)
    texts = sorted({t["agent_text"] for s in specs for t in s["turns"]})
    voices = agent_voices()
    tasks = [(out_dir, telugu_tts.get_voice(v), chunk)
             for v, chunk in _round_robin({v.name: texts for v in voices}, 50)]
    bar = tqdm(total=len(texts) * len(voices), unit="answer", disable=not progress, desc=f"agent answers {split}")
    answer_results = _run_pool(_run_answers, tasks, workers, bar)
    bar.close()
    bad_answers = {(v, t): reason for v, t, _, reason in answer_results if reason}
    answer_rows = []
    for voice, text, meta, reason in sorted(answer_results, key=lambda r: (r[0], r[1])):
        if meta is not None:
            wav, _ = _answer_paths(out_dir, voice, text)
            answer_rows.append({"audio": str(wav.relative_to(out_dir)), "text": meta["text"], "speaker": voice,
                                "lang": "te", "duration": meta["duration"], "split": split, "words": meta["words"]})

    # 2. dialogues, grouped by user voice
    ok_specs, rejected = [], []
    for s in specs:
        missing = [t["agent_text"] for t in s["turns"] if (s["agent_voice"], t["agent_text"]) in bad_answers]
        if missing:
            rejected.append({"id": s["id"], "reason": f"agent answer could not be synthesised: {missing[0]!r}"})
        else:
            ok_specs.append(s)
    by_voice = defaultdict(list)
    for s in ok_specs:
        by_voice[s["user_voice"]].append(s)
    tasks = [(out_dir, chunk, store_dry) for _, chunk in _round_robin(by_voice, _TASK_DIALOGUES)]
    bar = tqdm(total=len(ok_specs), unit="dialogue", disable=not progress, desc=f"dialogues {split}")
    results = _run_pool(_run_dialogues, tasks, workers, bar)
    bar.close()

    rows, metas = [], []
    for did, meta, reason in sorted(results, key=lambda r: r[0]):
        if meta is None:
            rejected.append({"id": did, "reason": reason})
            continue
        metas.append(meta)
        rows.append({
            "audio": f"{split}/{meta['audio']}", "json": f"{split}/{did}.json", "duration": meta["duration"],
            "user_voice": meta["user_voice"], "agent_voice": meta["agent_voice"], "split": split,
            "n_turns": len(meta["turns"]),
            # generic manifest fields (audio_io.read_manifest): the user's requests, the user's voice
            "text": " ".join(t["user_text"] for t in meta["turns"]), "speaker": meta["user_voice"], "lang": "te",
            "user_dry": f"{split}/{meta['augment']['user_dry']}" if meta["augment"] and meta["augment"]["user_dry"]
            else None,
            "intents": [t["intent"] for t in meta["turns"]], "n_interruptions": len(meta["interruptions"]),
        })
    paths = {"dialogues": out_dir / f"dialogues_{split}.jsonl", "answers": out_dir / f"agent_answers_{split}.jsonl",
             "rejected": out_dir / f"rejected_{split}.jsonl", "summary": out_dir / f"corpus_{split}.json"}
    audio_io.write_manifest(paths["dialogues"], rows)
    audio_io.write_manifest(paths["answers"], answer_rows)
    rejected += [{"id": f"answer:{v}", "text": t, "reason": r} for (v, t), r in sorted(bad_answers.items())]
    tmp = paths["rejected"].with_name(paths["rejected"].name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected), encoding="utf-8")
    os.replace(tmp, paths["rejected"])

    turns = [t for m in metas for t in m["turns"]]
    summary = {
        "split": split, "seed": seed, "augment": augment, "strength": strength, "store_dry": store_dry,
        "dialogues": len(rows), "rejected": len(rejected), "turns": len(turns),
        "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
        "interruptions": sum(r["n_interruptions"] for r in rows),
        "backchannels": sum(u["kind"] == "backchannel" for m in metas for u in m["utterances"]),
        "hesitations": sum(bool(u.get("hesitation")) for m in metas for u in m["utterances"]),
        "intents": dict(sorted(Counter(t["intent"] for t in turns).items())),
        "distinct_user_texts": len({t["user_text"] for t in turns}),
        "distinct_agent_texts": len(texts), "agent_answer_clips": len(answer_rows),
        "agent_answer_hours": round(sum(r["duration"] for r in answer_rows) / 3600, 4),
        "user_voices": sorted({r["user_voice"] for r in rows}), "agent_voices": [v.name for v in voices],
        "build_seconds": round(time.time() - t0, 1),
    }
    _write_json(paths["summary"], summary)
    return paths


# --- for the trainer ------------------------------------------------------------------------------

def read_dialogue(json_path) -> tuple[np.ndarray, dict]:
    """(pcm (samples, 2) float32: user, agent; metadata) of one dialogue."""
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    pcm, sr = sf.read(str(json_path.with_name(meta["audio"])), dtype="float32", always_2d=True)
    if sr != audio_io.SAMPLE_RATE or pcm.shape[1] != 2:
        raise audio_io.AudioError(f"{json_path}: expected 2 channels at {audio_io.SAMPLE_RATE} Hz, got {pcm.shape[1]} at {sr}")
    return pcm, meta


def frame_words(meta: dict, side: str, frame_s: float = FRAME_S) -> list[tuple[int, int, str]]:
    """(first frame, last frame, word) for every word one side speaks (truncated answers included
    only up to where the agent fell silent). A frame f covers [f * frame_s, (f + 1) * frame_s)."""
    out = []
    for u in meta["utterances"]:
        if u["side"] == side:
            for w in u["words"]:
                first = int(w["start"] / frame_s)
                out.append((first, max(first, int(np.ceil(w["end"] / frame_s)) - 1), w["word"]))
    return sorted(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build the synthetic two-channel Telugu dialogue corpus.")
    parser.add_argument("--out", default=str(ROOT / "data" / "dialogues"))
    parser.add_argument("--train", type=int, default=1500, help="dialogues in the train split")
    parser.add_argument("--heldout", type=int, default=150, help="dialogues in each of heldout_val, heldout_test")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_augment", action="store_true")
    parser.add_argument("--strength", type=float, default=1.0, help="augmentation strength (0..1)")
    parser.add_argument("--no_dry", action="store_true", help="do not store the un-augmented user channel")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--extra_phrasings", metavar="JSON", help="also draw these train-only phrasings "
                        "(data/extra_phrasings.json; dialogue_domain.use_extra_phrasings)")
    args = parser.parse_args(argv)
    t0 = time.time()
    if args.extra_phrasings:
        domain.use_extra_phrasings(args.extra_phrasings)
    for split in args.splits:
        n = args.train if split == "train" else args.heldout
        try:
            paths = build(args.out, n, split, args.workers, args.seed, not args.no_augment, args.strength,
                          not args.no_dry, not args.no_progress)
        except (ValueError, telugu_tts.TTSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        s = json.loads(paths["summary"].read_text(encoding="utf-8"))
        print(f"{split:13s} {s['dialogues']:5d} dialogues {s['hours']:6.2f} h, {s['turns']} turns, "
              f"{s['interruptions']} interruptions, {s['distinct_agent_texts']} distinct answers "
              f"({s['agent_answer_clips']} clips, {s['agent_answer_hours']:.2f} h), rejected {s['rejected']}, "
              f"{s['build_seconds']:.0f} s -> {paths['dialogues']}")
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
