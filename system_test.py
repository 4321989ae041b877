"""One-command health check of a telugu-s2s install: a PASS/FAIL table, a one-line fix under each
failure, exit code 0 only when every check passes.

    python system_test.py                          # the checks below
    python system_test.py --gpu                    # + CUDA checks
    python system_test.py --record demo/           # + a recorded demo conversation in headless Chromium
    python system_test.py --checkpoints DIR        # another set of checkpoints (default checkpoints/)

Checks, in order (a check that needs a part that failed earlier fails and says so: it cannot run):
     1  python and packages     Python >= 3.10 and every pin of requirements_new.txt
     2  espeak-ng Telugu        telugu_tts speaks a Telugu word (libespeak-ng and its Telugu data)
     3  checkpoint: codec       codec.safetensors loads into the model its codec.json describes
     4  checkpoint: s2s         s2s.safetensors + s2s.json load; frame, codebooks and vocabulary match
                                the codec and the tokenizer (telugu_spm.model) beside it
     5  checkpoint: speaker     speaker_encoder.safetensors + .json load
     6  checkpoint: voice bank  voice_bank.json: the four agent voices, embeddings of the encoder's and
                                the S2S model's width
     7  codec round trip        STOI of a held-out sentence spoken by a TEST voice after the codec
                                >= STOI_BAR (0.60). Why 0.60: the codec in training measured 0.70
                                (test_shelby) to 0.81 (test_m8) at step 4000 of 40000, Opus at 6 kbps
                                0.88-0.92, and an untrained codec 0.39, as does noise; below 0.6 words
                                are lost. The output prints the measured STOI beside the bar.
     8  speaker encoder         two TEST voices, two held-out sentences each: every same-voice
                                similarity above every different-voice one
     9  the ear                 asr.safetensors + .json load; a held-out sentence spoken by a TEST
                                voice is transcribed with CER <= EAR_CER_BAR (0.25: the shipped ear
                                measures its held-out voices in README "The ear"; an untrained one
                                writes nothing or noise, CER about 1)
    10  checkpoint: brain       brain.safetensors + .json load (the v2 agent's brain, agent_brain.py)
    11  checkpoint: mouth       mouth.safetensors + .json load on the codec its JSON names (agent_mouth.py)
    12  spoken answer offline   a held-out phrasing of a question, spoken by a TEST voice, through the
                                agent's frame loop (voice_agent.converse: ear, brain, mouth; with no
                                brain and mouth shipped, s2s_transformer.converse): the agent's text
                                answers it (dialogue_domain.is_correct) and its audio is audible
    13  server over WebSocket   the same question through streaming_server_advanced.py on a free
                                loopback port (s2s_client.converse)
    --gpu: 14 CUDA device, 15 CUDA streaming (codec streaming on CUDA equals CPU; S2S step faster
           than a frame)
    --record DIR: a scripted multi-turn Telugu conversation (a greeting, a sum, an interruption while
           the agent answers, a capital city) through the real server and the page in headless
           Chromium (Debian's /usr/bin/chromium, the user's turns as the fake microphone); saves
           DIR/conversation.webm (Playwright's page video) and conversation_with_audio.webm (the
           same with the audio muxed in, when ffmpeg is present), conversation.wav (two channels:
           user left, agent right, frame-aligned as the server saw them), transcript.txt/.json,
           latency.json and page.png. Without shipped checkpoints it records with untrained models
           (the agent babbles) and says so.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import inspect
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from config import AudioConfig

ROOT = Path(__file__).resolve().parent
SR, FRAME = AudioConfig().sample_rate, AudioConfig().frame_size  # 24 kHz, 40 ms: the wire format
REQUIREMENTS = ROOT / "requirements_new.txt"
CHROMIUM = Path("/usr/bin/chromium")
TEST_VOICES = ("test_shelby", "test_alicia")  # TEST-role voices (female, the harder pair to tell apart)
QUESTION_VOICE = "test_m8"  # a TEST-role voice for the spoken question
STOI_BAR = 0.60  # see the module docstring for how it was chosen
EAR_CER_BAR = 0.25  # the ear's bar, likewise
QUESTION_INTENT, QUESTION_SEED = "add", 3  # a held-out phrasing and held-out numbers
FAKE_MIC_RATE = 48000  # chromium's fake capture device reads a WAV at its own rate
DEMO_SCRIPT = [  # (intent, silence after it in s): the user's side of the recorded conversation
    ("greet_hello", 4.0),
    ("add", 1.6),  # the agent starts its answer in this pause ...
    ("stop", 3.5),  # ... and the user talks over it: the interruption
    ("capital_of_state", 5.0),
]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


class Failed(Exception):
    """A check's failure: what was found and the one-line fix."""

    def __init__(self, detail: str, fix: str):
        super().__init__(detail)
        self.detail, self.fix = detail, fix


@dataclass
class Env:
    """What the checks share: paths, and the parts that loaded (None when they did not)."""
    checkpoints: Path
    workdir: Path
    codec: object = None
    s2s: object = None
    speaker: object = None
    bank: object = None
    voice: object = None
    voice_name: str | None = None
    question: dict = field(default_factory=dict)
    brain: object = None  # the v2 agent's parts, when shipped
    mouth: object = None

    @property
    def v2(self) -> bool:
        return self.brain is not None and self.mouth is not None

    def path(self, name: str) -> Path:
        return self.checkpoints / name


def need(part, what: str):
    if part is None:
        raise Failed(f"cannot run: {what} did not load (see above)", f"fix the {what} check first")
    return part


# --- 1-2: environment --------------------------------------------------------------------------------

def requirements(path: Path):
    from packaging.requirements import Requirement

    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith(("#", "-")):
            yield Requirement(line)


def check_packages(env: Env) -> str:
    import torch

    if sys.version_info < (3, 10):
        raise Failed(f"Python {platform.python_version()}", "use Python 3.11 (the README's quick start)")
    problems, n = [], 0
    for req in requirements(REQUIREMENTS):
        n += 1
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{req.name} missing")
            continue
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name} {version} (wants {req.specifier})")
    if problems:
        raise Failed("; ".join(problems), f"pip install -r {REQUIREMENTS.name}")
    import numpy
    return (f"Python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}; "
            f"all {n} pins of {REQUIREMENTS.name} hold")


def check_espeak(env: Env) -> str:
    import telugu_tts
    from s2s_transformer import frame_db

    word = "నమస్కారం"
    try:
        pcm, words = telugu_tts.synthesize(word, QUESTION_VOICE)
    except Exception as e:  # noqa: BLE001: TTSError names the library or data path involved
        raise Failed(f"{type(e).__name__}: {e}", "pip install 'espeakng-loader>=0.2.4,<0.3' "
                     "(it ships libespeak-ng with the Telugu data)") from None
    seconds = len(pcm) / SR
    if seconds < 0.2 or frame_db(pcm) < -50:
        raise Failed(f"'{word}' gave {seconds:.2f} s at {frame_db(pcm):.0f} dBFS: no speech",
                     "reinstall espeakng-loader; check its espeak-ng-data has te_dict")
    return f"'{word}' -> {seconds:.2f} s of speech, {len(words)} word(s) timed (voice {QUESTION_VOICE})"


# --- 3-6: checkpoints ----------------------------------------------------------------------------------

def _exists(path: Path, fix: str) -> None:
    if not path.exists():
        raise Failed(f"{path} not found", fix)
    json_path = path.with_suffix(".json")
    if path.suffix == ".safetensors" and not json_path.exists():
        raise Failed(f"{json_path} (its config) not found", "export it with its config beside it "
                     "(checkpoint_io.export_safetensors writes both)")


def _same_config(model_cfg, path: Path, section: str) -> None:
    from dataclasses import asdict

    saved = json.loads(path.with_suffix(".json").read_text(encoding="utf-8")).get(section, {})
    built = asdict(model_cfg)
    diff = [k for k in saved if k in built and saved[k] != built[k]]
    if diff:
        raise Failed(f"{section} config differs from {path.with_suffix('.json').name}: {diff}",
                     "re-export the checkpoint with its own config")


def check_codec_checkpoint(env: Env) -> str:
    import telugu_codec_fixed

    path = env.path("codec.safetensors")
    _exists(path, "train and export it: python train_codec_dac.py --config tiny --data_dir data/synthetic "
                  f"--export {path}  (or pass --checkpoints DIR)")
    try:
        codec = telugu_codec_fixed.load(path)
    except (RuntimeError, KeyError, ValueError) as e:
        raise Failed(f"does not load into the model codec.json describes: {str(e)[:160]}",
                     "re-export codec.safetensors together with its codec.json") from None
    _same_config(codec.cfg, path, "codec")
    env.codec = codec
    kbps = codec.n_codebooks * math.log2(codec.cfg.codebook_size) * codec.sample_rate / codec.frame_size / 1000
    params = sum(p.numel() for p in codec.parameters())
    return (f"{params / 1e6:.1f} M params, {codec.n_codebooks} x {codec.cfg.codebook_size} codes, frame "
            f"{codec.frame_size} samples ({kbps:.1f} kbps); matches codec.json")


def check_s2s_checkpoint(env: Env) -> str:
    import s2s_transformer

    path = env.path("s2s.safetensors")
    _exists(path, "train and export it: python train_s2s.py --codec_path checkpoints/codec.safetensors "
                  "--speaker_path checkpoints/speaker_encoder.safetensors --data_dir data/synthetic (see README)")
    try:
        model = s2s_transformer.load(path)
    except (RuntimeError, KeyError, ValueError) as e:
        raise Failed(f"does not load into the model s2s.json describes: {str(e)[:160]}",
                     "re-export s2s.safetensors together with its s2s.json") from None
    _same_config(model.cfg, path, "s2s")
    if getattr(model, "tokenizer", None) is None:
        raise Failed(f"no tokenizer of {model.text_vocab} pieces beside it ({path.parent / 'telugu_spm.model'})",
                     "ship the tokenizer the model was trained with as telugu_spm.model beside s2s.safetensors")
    codec = env.codec
    if codec is not None and (codec.frame_size != model.frame_size or codec.cfg.codebook_size != model.card
                              or model.n_codebooks > codec.n_codebooks):
        raise Failed(f"the codec (frame {codec.frame_size}, {codec.n_codebooks} x {codec.cfg.codebook_size}) does "
                     f"not match the S2S model (frame {model.frame_size}, {model.n_codebooks} x {model.card})",
                     "ship the codec the S2S model was trained on (train_s2s.py --codec_path)")
    env.s2s = model
    s = model.cfg
    params = sum(p.numel() for p in model.parameters())
    return (f"{params / 1e6:.1f} M params (d{s.d_model}x{s.n_layers} + depth d{s.depth_d_model}x{s.depth_layers}), "
            f"user stream '{s.user_input}', {model.n_codebooks} codebooks, acoustic delay {model.delay}, "
            f"vocab {model.text_vocab}; matches the codec and the tokenizer")


def check_speaker_checkpoint(env: Env) -> str:
    import speaker_embeddings

    path = env.path("speaker_encoder.safetensors")
    _exists(path, f"train and export it: python train_speakers.py --config tiny --data_dir data/synthetic "
                  f"--export {path}")
    try:
        env.speaker = speaker_embeddings.load(path)
    except (RuntimeError, KeyError, ValueError) as e:
        raise Failed(f"does not load: {str(e)[:160]}", "re-export speaker_encoder.safetensors with its .json") from None
    cfg = env.speaker.cfg
    params = sum(p.numel() for p in env.speaker.parameters())
    return f"{params / 1e6:.1f} M params, {cfg.embed_dim}-d embeddings at {cfg.sample_rate} Hz"


def check_voice_bank(env: Env) -> str:
    import telugu_tts
    from speaker_embeddings import VoiceBank

    path = env.path("voice_bank.json")
    if not path.exists():
        raise Failed(f"{path} not found", "train_speakers.py writes it (--voice_bank) after training the encoder")
    try:
        bank = VoiceBank.load(path)
    except (ValueError, KeyError, TypeError) as e:
        raise Failed(f"unreadable: {e}", "rebuild it with train_speakers.py") from None
    wanted = [v.name for v in telugu_tts.voices("agent")]
    if sorted(bank.names()) != sorted(wanted):
        raise Failed(f"voices {bank.names()}, expected the agent voices {wanted}", "rebuild it with train_speakers.py")
    dims = {len(v.embedding) for v in bank.voices.values()}
    expect = {"speaker encoder": env.speaker.cfg.embed_dim if env.speaker else None,
              "S2S model": env.s2s.voice_in.in_features if env.s2s else None}
    for who, dim in expect.items():
        if dim is not None and dims != {dim}:
            raise Failed(f"embeddings of width {sorted(dims)}, the {who} uses {dim}",
                         "rebuild the bank with the shipped encoder (train_speakers.py)")
    norms = [float(np.linalg.norm(v.embedding)) for v in bank.voices.values()]
    if not all(abs(n - 1) < 1e-2 for n in norms):
        raise Failed(f"embeddings are not unit length ({[round(n, 3) for n in norms]})", "rebuild it with train_speakers.py")
    env.bank = bank
    env.voice_name = wanted[0]
    env.voice = bank.embedding(env.voice_name)
    return f"voices {', '.join(bank.names())}, {dims.pop()}-d, encoder {bank.encoder or '?'}"


# --- 7-8: quality of the codec and the speaker encoder ---------------------------------------------------

def heldout_sentences() -> list:
    """The held-out sentences of the synthetic corpus, split with synthetic_corpus.build's defaults."""
    import synthetic_corpus

    defaults = inspect.signature(synthetic_corpus.build).parameters
    _, heldout = synthetic_corpus.split_sentences(synthetic_corpus.read_sentences(synthetic_corpus.DEFAULT_SENTENCES),
                                                  defaults["heldout_sentence_fraction"].default,
                                                  defaults["seed"].default)
    return heldout


def check_codec_roundtrip(env: Env) -> str:
    import codec_eval
    import telugu_tts

    codec = need(env.codec, "codec checkpoint")
    sentence = heldout_sentences()[0]
    pcm, _ = telugu_tts.synthesize(sentence.text, TEST_VOICES[0])
    decoded = codec_eval.codec_roundtrips(codec, pcm, [codec.n_codebooks])[codec.n_codebooks]
    max_lag = int(codec_eval.MAX_LAG_S * codec.sample_rate)
    stoi = codec_eval.stoi(pcm, codec_eval.align(pcm, decoded, max_lag)[0], codec.sample_rate)
    try:
        opus = codec_eval.opus_roundtrip(pcm, codec.sample_rate, 6)
        opus = opus[0] if isinstance(opus, tuple) else opus
        opus_note = f"; Opus 6 kbps {codec_eval.stoi(pcm, codec_eval.align(pcm, opus, max_lag)[0], codec.sample_rate):.2f}"
    except Exception:  # noqa: BLE001: the reference is a courtesy, not part of the check
        opus_note = ""
    detail = (f"STOI {stoi:.2f} (bar {STOI_BAR:.2f}{opus_note}) on held-out sentence {sentence.id} "
              f"spoken by {TEST_VOICES[0]}, {codec.n_codebooks} codebooks")
    if not stoi >= STOI_BAR:
        raise Failed(detail, "the codec garbles speech: train it longer (train_codec_dac.py --resume) and re-export")
    return detail


def check_speakers(env: Env) -> str:
    import telugu_tts
    from speaker_embeddings import similarity

    encoder = need(env.speaker, "speaker checkpoint")
    sentences = heldout_sentences()[1:3]
    emb = {v: [encoder.embed(telugu_tts.synthesize(s.text, v)[0], SR) for s in sentences] for v in TEST_VOICES}
    a, b = (emb[v] for v in TEST_VOICES)
    same = [similarity(a[0], a[1]), similarity(b[0], b[1])]
    diff = [similarity(x, y) for x in a for y in b]
    detail = (f"same voice {min(same):.2f}..{max(same):.2f}, different {min(diff):.2f}..{max(diff):.2f} "
              f"({TEST_VOICES[0]} vs {TEST_VOICES[1]}, held-out sentences)")
    if not min(same) > max(diff):
        raise Failed(detail, "the encoder confuses unseen voices: train it longer (train_speakers.py --resume)")
    return detail


def check_ear(env: Env) -> str:
    import telugu_asr
    import telugu_tts

    path = env.path("asr.safetensors")
    _exists(path, f"train and export it: python train_asr.py --config tiny ... then --export {path} (README \"The ear\")")
    try:
        ear = telugu_asr.load(path)
    except (RuntimeError, KeyError, ValueError) as e:
        raise Failed(f"does not load into the model asr.json describes: {str(e)[:160]}",
                     "re-export asr.safetensors together with its asr.json") from None
    sentence = heldout_sentences()[3]
    pcm, _ = telugu_tts.synthesize(sentence.text, QUESTION_VOICE)
    text, _ = ear.transcribe(pcm)
    cer = telugu_asr.char_error_rate(text, sentence.text)
    detail = f"CER {cer:.3f} (bar {EAR_CER_BAR:.2f}) on held-out sentence {sentence.id} spoken by {QUESTION_VOICE}"
    if not cer <= EAR_CER_BAR:
        raise Failed(detail, "the ear mishears: train it longer (train_asr.py --resume) and re-export")
    return detail


def check_brain_checkpoint(env: Env) -> str:
    import agent_brain

    path = env.path("brain.safetensors")
    _exists(path, "train and export it: python train_brain.py --config tiny ... then --export "
                  f"{path} (README \"The brain\")")
    try:
        env.brain = agent_brain.load(path)
    except (RuntimeError, KeyError, ValueError) as e:
        raise Failed(f"does not load into the model brain.json describes: {str(e)[:160]}",
                     "re-export brain.safetensors together with its brain.json") from None
    n = sum(p.numel() for p in env.brain.parameters())
    return f"{n / 1e6:.2f} M params, vocabulary {env.brain.vocab.size} (pieces and tool tokens)"


def check_mouth_checkpoint(env: Env) -> str:
    import agent_mouth

    path = env.path("mouth.safetensors")
    _exists(path, f"train and export it: python train_mouth.py --config tiny ... then --export {path} "
                  "(README \"The mouth\")")
    try:
        env.mouth = agent_mouth.load(path)
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as e:
        raise Failed(f"does not load (with the codec its mouth.json names): {str(e)[:160]}",
                     "re-export mouth.safetensors together with its mouth.json and the codec it names") from None
    n = sum(p.numel() for p in env.mouth.parameters())
    return f"{n / 1e6:.2f} M params, voices {', '.join(env.mouth.m.voices)}, codec {env.mouth.m.codec_checkpoint}"


# --- 12-13: a spoken question, offline and through the server ------------------------------------------

def question(env: Env) -> dict:
    """The spoken question (cached): a held-out phrasing with held-out numbers, a TEST voice,
    half a second of silence before it and four after it (the agent's turn)."""
    if not env.question:
        import dialogue_domain
        import telugu_tts

        turn = dialogue_domain.sample_turn(random.Random(QUESTION_SEED), "heldout", intent=QUESTION_INTENT)
        speech, _ = telugu_tts.synthesize(turn.user_text, QUESTION_VOICE)
        pcm = np.concatenate([np.zeros(SR // 2, np.float32), speech, np.zeros(4 * SR, np.float32)])
        env.question = {"text": turn.user_text, "intent": turn.intent, "slots": turn.slots, "pcm": pcm,
                        "speech_end_s": 0.5 + len(speech) / SR, "expected": dialogue_domain.answer(turn.intent, turn.slots)}
    return env.question


def judge_answer(env: Env, agent_text: str, agent_pcm: np.ndarray, where: str) -> str:
    import dialogue_domain
    from s2s_transformer import AGENT_ACTIVE_DB, frame_db

    q = question(env)
    fs = FRAME
    start = int(q["speech_end_s"] * SR)
    levels = [frame_db(agent_pcm[i:i + fs]) for i in range(start, len(agent_pcm) - fs + 1, fs)]
    audible = sum(db > AGENT_ACTIVE_DB for db in levels)
    correct = dialogue_domain.is_correct(q["intent"], q["slots"], agent_text)
    detail = (f"'{q['text']}' ({QUESTION_VOICE}) -> '{agent_text[:80]}' (expected '{q['expected']}'), "
              f"{audible * 1000 * fs / SR:.0f} ms of audible answer{where}")
    if not correct:
        raise Failed(detail, "the agent does not answer a held-out question: train the brain further "
                             "(train_brain.py --resume) and check train_brain.py --eval / s2s_eval.py's table")
    if audible < 5:
        raise Failed(detail, "the agent's answer is silent: check the codec/S2S pairing (train_s2s.py --codec_path)")
    return detail


def check_offline_answer(env: Env) -> str:
    import s2s_transformer
    from config import load_config

    q = question(env)
    if env.v2:
        import ear_lm
        import telugu_asr
        import voice_agent

        lm = ear_lm.load(env.path("ear_lm.json")) if env.path("ear_lm.json").exists() else None
        agent = voice_agent.VoiceAgent(telugu_asr.load(env.path("asr.safetensors")), env.brain, env.mouth,
                                       load_config("tiny").context, lm)
        voice = env.voice_name if env.voice_name in env.mouth.m.voices else env.mouth.m.voices[0]
        run = voice_agent.converse(agent, q["pcm"], voice)
        gap = s2s_transformer.response_gap_ms(run["user_loud"], run["agent_db"], run["frame_ms"])
        step = sorted(run["step_ms"])[len(run["step_ms"]) // 2]
        return judge_answer(env, run["agent_text"], run["agent_pcm"],
                            f", response gap {gap} ms, {step:.0f} ms per frame (v2 agent, voice {voice})")
    model, codec = need(env.s2s, "S2S checkpoint"), need(env.codec, "codec checkpoint")
    run = s2s_transformer.converse(model, codec, q["pcm"], env.voice, load_config("tiny").context, seed=0)
    gap = s2s_transformer.response_gap_ms(run["user_loud"], run["agent_db"], run["frame_ms"])
    step = sorted(run["frame_total_ms"])[len(run["frame_total_ms"]) // 2]
    return judge_answer(env, run["agent_text"], run["agent_pcm"],
                        f", response gap {gap} ms, {step:.0f} ms per frame (voice {env.voice_name or 'none'})")


def server_model_args(env: Env) -> list[str]:
    if env.v2:
        args = ["--agent", "v2", "--brain", str(env.path("brain.safetensors")),
                "--mouth", str(env.path("mouth.safetensors")), "--asr", str(env.path("asr.safetensors")),
                "--ear_lm", str(env.path("ear_lm.json")) if env.path("ear_lm.json").exists() else "none"]
        return args + (["--voice_bank", str(env.path("voice_bank.json"))] if env.path("voice_bank.json").exists() else [])
    args = ["--agent", "s2s", "--codec", str(env.path("codec.safetensors")), "--s2s", str(env.path("s2s.safetensors"))]
    if env.path("voice_bank.json").exists():
        args += ["--voice_bank", str(env.path("voice_bank.json"))]
    # The server hears with the ear of the same checkpoint set (not whatever is shipped), or none.
    args += ["--asr", str(env.path("asr.safetensors"))] if env.path("asr.safetensors").exists() else ["--no_asr"]
    return args


def check_server(env: Env) -> str:
    import urllib.request

    import s2s_client
    from benchmark_latency import ServerProcess

    if not env.v2:
        need(env.s2s, "S2S checkpoint"), need(env.codec, "codec checkpoint")
    q = question(env)
    log_path = env.workdir / "server.log"
    try:
        # The client sends as fast as the server answers (this checks answers, not pacing), so the
        # per-connection message rate limit is lifted.
        server = ServerProcess(server_model_args(env) + ["--set", "server.max_messages_per_s=10000"], log_path,
                               workers=1, max_sessions=1).__enter__()
    except RuntimeError as e:
        raise Failed(str(e)[:200], f"run the server by hand to see why: python streaming_server_advanced.py "
                                   f"{' '.join(server_model_args(env))}") from None
    try:
        with urllib.request.urlopen(server.http + "/health", timeout=10) as r:
            health = json.loads(r.read())
        conv = asyncio.run(s2s_client.converse(server.url, q["pcm"], voice=env.voice_name, timeout=60))
    except Exception as e:  # noqa: BLE001: any failure of the round trip is this check's failure
        raise Failed(f"{type(e).__name__}: {e}; server log: {server.tail(3)}"[:300],
                     f"see {log_path} (kept until this run ends) or run the server by hand") from None
    finally:
        server.__exit__(None, None, None)
    lat = conv.latency()
    return judge_answer(env, conv.agent_text, conv.audio,
                        f"; port {server.port}, /health {health.get('status')}, {lat['frames_out']} frames, "
                        f"round trip p50 {lat.get('rtt_ms', {}).get('p50')} ms")


# --- GPU ------------------------------------------------------------------------------------------------

def check_cuda_device(env: Env) -> str:
    import torch

    if not torch.cuda.is_available():
        why = "torch is a CPU build" if torch.version.cuda is None else "no CUDA device visible"
        raise Failed(f"{why} (torch {torch.__version__})", "on a GPU machine install the CUDA build of "
                     "torch==2.13.0 from the PyTorch index (pip picks it there), or run without --gpu")
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def check_cuda_streaming(env: Env) -> str:
    import copy

    import torch

    import telugu_codec_fixed
    from config import load_config

    if not torch.cuda.is_available():
        raise Failed("cannot run: no CUDA device", "see the CUDA device check")
    codec = env.codec
    note = ""
    if codec is None:
        codec, note = telugu_codec_fixed.Codec(load_config("tiny").codec).eval().remove_weight_norm(), " (random codec)"
    fs = codec.frame_size
    pcm = torch.from_numpy(question(env)["pcm"][: 25 * fs].copy()).view(1, 1, -1)
    gpu = copy.deepcopy(codec).cuda()
    outs = {}
    for name, model, dev in (("cpu", codec, "cpu"), ("cuda", gpu, "cuda")):
        es, ds, pieces = model.init_state(1, dev), model.init_state(1, dev), []
        for i in range(25):
            codes, es = model.encode_step(pcm[..., i * fs:(i + 1) * fs].to(dev), es)
            y, ds = model.decode_step(codes, ds)
            pieces.append((codes.cpu(), y.cpu()))
        outs[name] = pieces
    same_codes = np.mean([bool((a[0] == b[0]).all()) for a, b in zip(outs["cpu"], outs["cuda"])])
    err = max(float((a[1] - b[1]).abs().max()) for a, b in zip(outs["cpu"], outs["cuda"]))
    if same_codes < 0.9 or err > 0.05:
        raise Failed(f"CUDA streaming differs from CPU: {same_codes:.0%} frames with equal codes, max error {err:.3f}",
                     "check the torch CUDA install (a kernel computes differently)")
    detail = f"codec streaming on CUDA: {same_codes:.0%} frames with the CPU's codes, max audio difference {err:.4f}{note}"
    if env.s2s is not None:
        s2s = copy.deepcopy(env.s2s).cuda()
        gen = s2s.streaming(voice=env.voice, seed=0)
        frame = torch.zeros(fs, device="cuda")
        times = []
        for _ in range(30):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            gen.step(frame)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1000)
        step = float(np.median(times[5:]))
        frame_ms = 1000 * fs / codec.sample_rate
        if step > frame_ms:
            raise Failed(f"S2S step {step:.1f} ms on CUDA > the {frame_ms:.0f} ms frame", "check the GPU is not shared")
        detail += f"; S2S step {step:.1f} ms per frame on CUDA"
    return detail


# --- the recorded demo --------------------------------------------------------------------------------

def demo_user_audio(sr: int = SR, lead_s: float = 2.0):
    """The user's turns as one signal (held-out phrasings, a TEST voice) and the script's turns
    with their start and end times."""
    import dialogue_domain
    import telugu_tts

    rng = random.Random(7)
    pieces, turns, t = [np.zeros(int(lead_s * sr), np.float32)], [], lead_s
    for intent, pause in DEMO_SCRIPT:
        turn = dialogue_domain.sample_turn(rng, "heldout", intent=intent)
        speech, _ = telugu_tts.synthesize(turn.user_text, QUESTION_VOICE)
        turns.append({"intent": intent, "user_text": turn.user_text, "slots": turn.slots,
                      "expected_answers": dialogue_domain.answers(intent, turn.slots),
                      "start_s": round(t, 2), "end_s": round(t + len(speech) / sr, 2),
                      "interrupts_the_agent": intent == "stop"})
        pieces += [speech, np.zeros(int(pause * sr), np.float32)]
        t += len(speech) / sr + pause
    return np.concatenate(pieces), turns


def video_ffmpeg(workdir: Path) -> str | None:
    """Playwright encodes its page video with its own ffmpeg build (`playwright install ffmpeg`).
    When that is absent and the system has ffmpeg, point Playwright at a folder where the system
    ffmpeg stands in its place. Returns None when no ffmpeg is usable."""
    import playwright

    browsers = json.loads((Path(playwright.__file__).parent / "driver" / "package" / "browsers.json").read_text())
    revision = next(b["revision"] for b in browsers["browsers"] if b["name"] == "ffmpeg")
    registry = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    own = registry / f"ffmpeg-{revision}" / "ffmpeg-linux"
    if own.exists():
        return str(own)
    system = shutil.which("ffmpeg")
    if system is None:
        return None
    shim = workdir / "playwright-registry" / f"ffmpeg-{revision}"
    shim.mkdir(parents=True, exist_ok=True)
    if not (shim / "ffmpeg-linux").exists():
        (shim / "ffmpeg-linux").symlink_to(system)
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = str(shim.parent)  # read by the driver Playwright starts next
    return system


class WireLog:
    """Every WebSocket frame the page sends and receives (Playwright's frame events)."""

    def __init__(self):
        self.user, self.agent, self.control, self.first_audio_at = [], [], [], None

    def attach(self, ws) -> None:
        ws.on("framesent", self.sent)
        ws.on("framereceived", self.received)

    def sent(self, payload) -> None:
        if isinstance(payload, (bytes, bytearray)) and payload[:1] == b"\x01":
            self.first_audio_at = self.first_audio_at or time.monotonic()
            self.user.append(bytes(payload[1:]))
        elif isinstance(payload, str):
            self.control.append({"dir": "sent", **json.loads(payload)})

    def received(self, payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            if payload[:1] == b"\x01":
                self.agent.append(bytes(payload[1:]))
            else:
                side = {2: "agent", 3: "user"}.get(payload[0], "?")
                self.control.append({"dir": "recv", "type": f"{side}_text", "frame": len(self.agent),
                                     "text": payload[1:].decode("utf-8", "replace")})
        else:
            self.control.append({"dir": "recv", "frame": len(self.agent), **json.loads(payload)})

    def samples_sent(self) -> int:
        return sum(len(b) for b in self.user) // 2

    def message(self, kind: str) -> dict | None:
        return next((m for m in reversed(self.control) if m.get("type") == kind), None)


def pcm_of(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32768.0


def record_demo(env: Env, out: Path) -> str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise Failed("Python playwright is not installed", "pip install -r requirements_test.txt") from None

    from audio_io import resample, save_wav
    from benchmark_latency import ServerProcess

    if not CHROMIUM.exists():
        raise Failed(f"{CHROMIUM} is absent", "apt-get install -y chromium")
    out.mkdir(parents=True, exist_ok=True)
    sr = SR
    user_pcm, script = demo_user_audio(sr)
    save_wav(out / "user_turns.wav", user_pcm, sr)
    mic = env.workdir / "fake_mic.wav"
    save_wav(mic, resample(user_pcm, sr, FAKE_MIC_RATE), FAKE_MIC_RATE)
    trained = env.codec is not None and env.s2s is not None
    model_args = server_model_args(env) if trained else ["--random_weights"]
    # A busy machine may fall behind real time; the recording should then lag, not lose the
    # conversation, so the server may queue the whole script (the WAV is in the server's frame time).
    model_args += ["--set", f"server.send_queue_frames={len(user_pcm) // FRAME + 500}",
                   "--set", f"server.max_backlog_s={len(user_pcm) / sr + 20:g}"]
    ffmpeg = video_ffmpeg(env.workdir)
    video_dir = env.workdir / "video"
    wire = WireLog()
    server = ServerProcess(model_args, env.workdir / "record_server.log", workers=1, max_sessions=1).__enter__()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}%noloop"])
            size = {"width": 1280, "height": 800}
            context = browser.new_context(viewport=size, **({"record_video_dir": str(video_dir),
                                                             "record_video_size": size} if ffmpeg else {}))
            video_t0 = time.monotonic()
            page = context.new_page()
            page.on("websocket", wire.attach)
            page.goto(server.http + "/")
            page.wait_for_function("() => document.querySelectorAll('#voice option').length > 0", timeout=15000)
            if env.voice_name:
                page.select_option("#voice", env.voice_name)
            page.click("#start")
            page.wait_for_function("() => window.__stats.streaming", timeout=30000)
            # The fake mic started with the click; the page drops audio until "started", so wait for
            # the rest of the file plus a second, as sent, not by the clock (a busy machine lags).
            deadline = time.monotonic() + len(user_pcm) / sr + 60
            while wire.samples_sent() < len(user_pcm) - 1.5 * sr + sr and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            # The script is over: close the mic (the page's own function) but keep listening, so a
            # server that lags on a busy machine can catch up; the page closes the socket 3 s after "stop".
            page.evaluate("() => closeMic()")
            catch_up = time.monotonic() + 180
            while time.monotonic() < catch_up and page.evaluate(
                    "() => window.__stats.streaming && window.__stats.framesReceived < window.__stats.framesSent - 2"):
                page.wait_for_timeout(250)
            page.screenshot(path=str(out / "page.png"), full_page=True)
            page_stats = page.evaluate("() => ({...window.__stats})")
            readout = {k: page.inner_text(f"#lat-{k}") for k in ("model", "rtt", "compute", "e2e", "gap", "buffer")}
            page.click("#stop")
            stop_deadline = time.monotonic() + 30
            while wire.message("stopped") is None and time.monotonic() < stop_deadline:
                page.wait_for_timeout(200)
            video = page.video
            context.close()
            video_path = None
            if video is not None:
                video_path = out / "conversation.webm"
                shutil.move(video.path(), video_path)
            browser.close()
    finally:
        server.__exit__(None, None, None)
    return save_recording(env, out, wire, script, page_stats, readout, video_path, video_t0, ffmpeg, trained)


def save_recording(env, out, wire: WireLog, script, page_stats, readout, video_path, video_t0, ffmpeg, trained) -> str:
    import subprocess

    from audio_io import save_wav
    from s2s_transformer import AGENT_ACTIVE_DB, frame_db

    sr, fs = SR, FRAME
    user, agent = pcm_of(wire.user), pcm_of(wire.agent)
    n = min(len(user), len(agent)) // fs * fs
    save_wav(out / "conversation.wav", np.stack([user[:n], agent[:n]], axis=1), sr)
    stopped = wire.message("stopped") or {}
    flushes = [m for m in wire.control if m.get("type") == "flush"]
    transcript = stopped.get("transcript", [])
    agent_text = "".join(m["text"] for m in wire.control if m.get("type") == "agent_text").strip()
    (out / "transcript.json").write_text(json.dumps(
        {"models": f"checkpoints in {env.checkpoints}" if trained else "random weights (no checkpoints): the agent babbles",
         "script": script, "server_transcript": transcript, "agent_text": agent_text,
         "user_text": "".join(m["text"] for m in wire.control if m.get("type") == "user_text").strip(),
         "barge_ins_at_frames": [m.get("frame") for m in flushes]}, ensure_ascii=False, indent=1), encoding="utf-8")
    lines = [f"# telugu-s2s demo conversation ({'checkpoints in ' + str(env.checkpoints) if trained else 'untrained models: the agent babbles'})",
             "", "Script (the user's side, fake microphone):"]
    lines += [f"  {t['start_s']:6.2f}-{t['end_s']:6.2f} s  user: {t['user_text']}"
              + ("   <- interrupts the agent" if t["interrupts_the_agent"] else "") for t in script]
    lines += ["", "As the server heard and answered it (times from the first streamed frame):"]
    lines += [f"  {t['start_s']:6.2f}-{t['end_s']:6.2f} s  {t['side']:5s}: {t['text']}"
              + ("   [interrupted]" if t.get("interrupted") else "") for t in transcript]
    (out / "transcript.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "wire_log.json").write_text(json.dumps(wire.control, ensure_ascii=False, indent=0), encoding="utf-8")
    agent_frames = [frame_db(agent[i:i + fs]) > AGENT_ACTIVE_DB for i in range(0, n, fs)]
    latency = {"server": stopped.get("stats", {}), "page": {k: page_stats.get(k) for k in
               ("framesSent", "framesReceived", "underruns", "flushes", "bufferedMs", "targetMs")},
               "page_readout": readout, "frames": n // fs, "agent_audible_frames": int(sum(agent_frames))}
    (out / "latency.json").write_text(json.dumps(latency, ensure_ascii=False, indent=1), encoding="utf-8")
    if video_path is not None and ffmpeg and wire.first_audio_at is not None:
        offset = max(0.0, wire.first_audio_at - video_t0)
        subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(video_path), "-itsoffset", f"{offset:.3f}",
                        "-i", str(out / "conversation.wav"), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                        "-c:a", "libopus", "-b:a", "96k", str(out / "conversation_with_audio.webm")],
                       check=False, timeout=120)
    barge_ins = stopped.get("stats", {}).get("barge_ins", len(flushes))
    errors = [m for m in wire.control if m.get("type") == "error"]
    reconnects = sum(m.get("type") == "ready" for m in wire.control) - 1
    lag_s = (stopped.get("stats", {}).get("e2e_ms") or {}).get("p95", 0.0) / 1000
    compute = (stopped.get("stats", {}).get("compute_ms") or {}).get("p50")
    detail = (f"{n / sr:.1f} s, {len(transcript)} turns, {barge_ins} barge-in(s), agent audible "
              f"{sum(agent_frames) * fs / sr:.1f} s, server lag p95 {lag_s:.1f} s (compute p50 {compute} ms a frame); "
              f"{'checkpoints' if trained else 'untrained models'}; in {out}")
    problems = []
    if video_path is None or not video_path.exists() or video_path.stat().st_size == 0:
        problems.append("no page video")
    if n < 5 * sr or not any(agent_frames):
        problems.append("no conversation audio")
    if reconnects > 0:
        problems.append(f"the page reconnected {reconnects} time(s) ({errors[0]['code'] if errors else 'dropped'}): "
                        "the recording has gaps")
    if not barge_ins:
        problems.append("the scripted interruption caused no barge-in")
    if lag_s > 2.0:
        problems.append("the server fell behind real time (the video lags; the WAV is in frame time)")
    if problems:
        if "no page video" in problems:
            fix = "apt-get install -y ffmpeg (Playwright encodes the page video with it)"
        elif lag_s > 2.0 or reconnects > 0:
            fix = ("record on a machine that keeps up: python benchmark_latency.py --quick shows the real-time "
                   f"factor here (load average {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
        else:
            fix = f"see {out / 'transcript.txt'} and {out / 'wire_log.json'}"
        raise Failed(f"{'; '.join(problems)}: {detail}", fix)
    return detail


# --- runner -----------------------------------------------------------------------------------------

CHECKS = [
    ("python and packages", check_packages),
    ("espeak-ng Telugu", check_espeak),
    ("checkpoint: codec", check_codec_checkpoint),
    ("checkpoint: s2s", check_s2s_checkpoint),
    ("checkpoint: speaker", check_speaker_checkpoint),
    ("checkpoint: voice bank", check_voice_bank),
    ("codec round trip", check_codec_roundtrip),
    ("speaker encoder", check_speakers),
    ("the ear", check_ear),
    ("checkpoint: brain", check_brain_checkpoint),
    ("checkpoint: mouth", check_mouth_checkpoint),
    ("spoken answer offline", check_offline_answer),
    ("server over WebSocket", check_server),
]
GPU_CHECKS = [("CUDA device", check_cuda_device), ("CUDA streaming", check_cuda_streaming)]


def run_check(name: str, fn, env: Env) -> Check:
    try:
        return Check(name, True, fn(env))
    except Failed as f:
        return Check(name, False, f.detail, f.fix)
    except Exception as e:  # noqa: BLE001: a crash is a failure with its cause, not a traceback wall
        where = traceback.extract_tb(e.__traceback__)[-1]
        return Check(name, False, f"{type(e).__name__}: {str(e)[:200]} ({Path(where.filename).name}:{where.lineno})",
                     "an unexpected error: run with --traceback to see it whole")


def format_row(i: int, c: Check, width: int = 24) -> str:
    row = f"{i:3d}  {c.name:<{width}} {'PASS' if c.ok else 'FAIL':<6}  {c.detail}"
    if not c.ok:
        row += f"\n{'':{width + 14}}fix: {c.fix}"
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="telugu-s2s health check: a PASS/FAIL table, exit 0 when all pass",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="checks:" + __doc__.split("Checks, in order")[1])
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="folder of the shipped checkpoints")
    p.add_argument("--gpu", action="store_true", help="add the CUDA checks")
    p.add_argument("--record", metavar="DIR", help="also record a demo conversation in headless Chromium into DIR")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--traceback", action="store_true", help="print the traceback of an unexpected error")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the server)")
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    checks = list(CHECKS) + (GPU_CHECKS if args.gpu else [])
    if args.record:
        checks.append(("recorded demo", lambda env: record_demo(env, Path(args.record).resolve())))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"telugu-s2s system test: checkpoints {args.checkpoints}; {os.cpu_count()} cores, load average {load}\n")
    print(f"{'#':>3}  {'check':<24} result  detail")
    results, t0 = [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="system_test_") as tmp:
        env = Env(Path(args.checkpoints).resolve(), Path(tmp))
        for i, (name, fn) in enumerate(checks, 1):
            if args.traceback:
                try:
                    c = Check(name, True, fn(env))
                except Failed as f:
                    c = Check(name, False, f.detail, f.fix)
            else:
                c = run_check(name, fn, env)
            results.append(c)
            print(format_row(i, c), flush=True)
    failed = [c for c in results if not c.ok]
    summary = (f"all {len(results)} checks passed" if not failed else
               f"{len(failed)} of {len(results)} checks FAILED: {', '.join(c.name for c in failed)}")
    print(f"\n{summary} ({time.monotonic() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"passed": not failed, "load_average": load,
                                               "checks": [c.__dict__ for c in results]}, ensure_ascii=False, indent=1),
                                   encoding="utf-8")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
