"""How fast the Telugu voice agent answers on this machine: part by part, then end to end through
the real server, with the latency budget against the 400 ms target and Moshi's published figures.

    python benchmark_latency.py                                   # the full run (README's table)
    python benchmark_latency.py --quick --json out.json --plot docs/latency.png
    python benchmark_latency.py --quick --tiny                    # tiny random models (tests)
    python benchmark_latency.py --peers_dir DIR                   # Mimi/EnCodec installed in DIR

Models: the shipped checkpoints (checkpoints/codec.safetensors, s2s.safetensors, voice_bank.json)
where present; otherwise untrained models of the config's size (`--config`, default tiny: the
size the demo checkpoints are trained at). Compute does not depend on the weights' values, so
speed figures hold; quality does not, and the report says which models ran.

Parts (p50/p95/p99 of wall time per 40 ms frame, and the median CPU time of this process), each
with 1 torch thread and with all cores (CUDA as well when available):
    codec_encode    codec.encode_step on one frame of the user's audio
    codec_decode    codec.decode_step on one frame of codes
    s2s_step        StreamingGenerator.step with the KV cache full (an hour-long conversation's
                    steady state), fed the user stream it reads (pcm for "mel", else codes/latent)
    asr_step        the ear (telugu_asr.Ear.step) on one frame, its window full: the shipped ear, or
                    one of the config's size with random weights (its cost is the same)
    pipeline        the server's per-frame work for one conversation, a frame scheduler tick
                    (frame_scheduler.ConversationBatch.step): the ear when the server hears with
                    one (`server_hears_with_asr`), the S2S model's user front end (log-mel, or the
                    codec encoder for "latent"/"codes") + S2S step + codec decode + context manager
                    + PCM16. The codec encoder is on this path only when the model reads codes or
                    latents (`pipeline_has_encoder`).
Real-time factor (RTF) = time per frame / frame duration; below 1 keeps up.

End to end: streaming_server_advanced.py in a subprocess on a free loopback port, N clients at once
(1, 2, 4, ... until real time breaks), each streaming a spoken Telugu question and silence in real
time (20 ms chunks, s2s_client.converse). Real time holds when every client's round trip has p95
under 3 frames and does not drift (the criterion of `s2s_client.py bench`). The server runs one
torch thread per conversation: "1 thread" = --workers 1, "all" = one worker per core.
    per-frame delay  input frame i leaves the client (its last chunk is sent) -> output message
                     i + d arrives, d = the acoustic delay: step s emits codebook 0 of agent frame s
                     and codebooks 1.. of frame s - d, so agent frame i, the first one conditioned on
                     user frame i, is complete and decoded at step i + d. Inside that message its
                     audio starts `codec.delay` samples in (the iSTFT hop the decoder lags by), which
                     the budget adds as algorithmic delay.
    response gap     the user's last speech frame (energy VAD of context_manager) leaves the client
                     -> the first agent frame louder than -45 dBFS arrives (before the user speaks
                     again). Meaningful with trained models only: untrained ones babble throughout.
    rtf              the server's compute per frame (its stats, worst client) / frame duration.

Budget: frame (the server waits for a whole frame) + acoustic delay + iSTFT hop = algorithmic,
+ compute + transport/queueing (measured: per-frame delay - acoustic delay - compute) + the page's
jitter buffer (its start target, static/worklets.js) = mouth to ear; against our 400 ms target and
Moshi's 160 ms theoretical (80 ms frame + 80 ms acoustic delay) / 200 ms practical (on an L4 GPU).

Peers (optional; `pip install --no-deps --target DIR moshi==0.2.13 encodec==0.1.1 einops` then
--peers_dir DIR: a plain `pip install moshi` replaces torch 2.13 with 2.9): Kyutai's Mimi (12.5 Hz,
8 codebooks, built from moshi's config with random weights, streaming API) and Meta's EnCodec 24 kHz
(6 kbps = 8 codebooks, random weights; it has no streaming state, so each 40 ms chunk is coded on
its own: the same compute a stateful version would do) code the same audio; ratios are our cost
per second of audio over theirs (below 1: ours is cheaper).

JSON (--json):
    machine      {cpu_count, loadavg_start, loadavg_end, torch, python, platform, cuda}
    models       {source, codec, s2s, voice_bank, config, codec_params, s2s_params, frame_ms,
                  acoustic_delay, codec_delay_ms, user_input, pipeline_has_encoder}
    components   {<device>: {threads_<n>: {codec_encode, codec_decode, s2s_step, pipeline:
                  {p50, p95, p99, mean, n, cpu_p50, rtf_p50, rtf_p95, rtf_p99, samples_ms}}}}
    end_to_end   {workers_<n>: {max_realtime_clients, runs: [{clients, ok, realtime,
                  per_frame_delay_ms, rtt_ms, response_gap_ms, server_response_gap_ms, rtf,
                  server_compute_ms, server_e2e_ms, drift_ms, agent_over_user, errors,
                  delay_samples_ms}]}}
    peers        {available, audio_s, ours, mimi, encodec, ratios}
    budget       {rows, algorithmic_ms, total_p50_ms, total_p95_ms, target_ms,
                  moshi_theoretical_ms, moshi_practical_ms, ...}
    notes, command, elapsed_s
Percentile dicts are {p50, p95, p99, mean, n}.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from config import Config, load_config

ROOT = Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"
TEST_VOICE = "test_shelby"  # a TEST-role voice: no model was trained on it
TARGET_MS = 400.0
MOSHI_THEORETICAL_MS = 160.0  # Défossez et al. 2024: 80 ms Mimi frame + 80 ms acoustic delay
MOSHI_PRACTICAL_MS = 200.0  # the same paper, measured on an L4 GPU
SERVER_START_TIMEOUT_S = 180.0
COMPONENTS = ("codec_encode", "codec_decode", "s2s_step", "asr_step", "pipeline")


# --- small helpers --------------------------------------------------------------------------------

def pct(values) -> dict:
    """p50/p95/p99/mean/n of a list of numbers (empty -> n = 0 only)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return {"n": 0}
    return {"p50": round(float(np.percentile(v, 50)), 2), "p95": round(float(np.percentile(v, 95)), 2),
            "p99": round(float(np.percentile(v, 99)), 2), "mean": round(float(v.mean()), 2), "n": int(len(v))}


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def frame_db(pcm: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(pcm, dtype=np.float64))) + 1e-10) if len(pcm) else -100.0


def time_frames(step, n: int, warmup: int, sync=lambda: None, max_s: float = math.inf) -> dict:
    """Call step() warmup + n times (fewer once max_s has passed, at least 5); percentiles of the
    timed calls (wall ms) and the median CPU ms of this process (all its threads: on a shared
    machine wall time also counts waiting for a core)."""
    start = time.perf_counter()  # the warm-up counts against max_s: on a busy machine it crawls too
    for i in range(warmup):
        if i >= 1 and time.perf_counter() - start > max_s / 2:
            break
        step()
    sync()
    wall, cpu = [], []
    for i in range(n):
        if i >= 5 and time.perf_counter() - start > max_s:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return {**pct(wall), "cpu_p50": round(float(np.median(cpu)), 2), "samples_ms": [round(x, 3) for x in wall]}


def with_rtf(stats: dict, frame_ms: float) -> dict:
    for q in ("p50", "p95", "p99"):
        if q in stats:
            stats[f"rtf_{q}"] = round(stats[q] / frame_ms, 3)
    return stats


# --- models ---------------------------------------------------------------------------------------

def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def tiny_config() -> Config:
    """Tiny random models (the tests' size): a quick run in seconds, figures of no interest."""
    cfg = Config()
    c = cfg.codec
    c.channels, c.res_units, c.n_codebooks, c.codebook_size = [16, 32], 1, 2, 32
    s = cfg.s2s
    s.d_model, s.n_layers, s.n_heads, s.depth_d_model, s.depth_layers, s.depth_heads = 32, 2, 2, 32, 1, 2
    s.n_codebooks, s.context_frames, s.text_vocab_size, s.dropout = 2, 64, 1000, 0.0
    a = cfg.asr
    a.d_model, a.n_layers, a.n_heads, a.context_frames = 64, 2, 2, 50
    cfg.preset = "tiny-test"
    return cfg


class BenchModels:
    """The codec and S2S model every part of the benchmark uses, and checkpoint files of exactly
    them for the server: the shipped ones, or random weights exported to a temporary folder."""

    def __init__(self, args, workdir: Path):
        self.cfg = tiny_config() if args.tiny else load_config(args.config)
        # The server's own settings (context manager, limits) come from this preset, as in the server.
        self.preset = "tiny" if args.tiny else args.config
        # The server's agent: the S2S model (the codec and S2S measured here), or the shipped v2 agent
        # (ear, brain, mouth; only the end-to-end and capacity runs use it)
        self.agent = getattr(args, "agent", "s2s")
        self.use_shipped = not (args.random_weights or args.tiny)
        self.workdir, self.notes = workdir, []
        torch.manual_seed(0)
        self._codec(Path(args.codec) if args.codec else CHECKPOINTS / "codec.safetensors")
        self._s2s(Path(args.s2s) if args.s2s else CHECKPOINTS / "s2s.safetensors")
        bank_path = Path(args.voice_bank) if args.voice_bank else CHECKPOINTS / "voice_bank.json"
        self.voice_bank_path = bank_path if self.use_shipped and bank_path.exists() else None
        self.voice = None
        if self.voice_bank_path is not None:
            from speaker_embeddings import VoiceBank
            bank = VoiceBank.load(self.voice_bank_path)
            self.voice = bank.embedding(bank.names()[0])
        self._ear(args)
        randoms = ["random" in src for src in (self.codec_source, self.s2s_source)]
        self.source = "random" if all(randoms) else ("mixed" if any(randoms) else "shipped")

    def _codec(self, path: Path) -> None:
        import telugu_codec_fixed
        from checkpoint_io import export_safetensors

        if self.use_shipped and path.exists():
            self.codec, self.codec_path, self.codec_source = telugu_codec_fixed.load(path), path, _rel(path)
            self.cfg.codec = self.codec.cfg  # a random S2S model must fit the shipped codec
            return
        self.codec = telugu_codec_fixed.Codec(self.cfg.codec).eval()
        self.codec_path = self.workdir / "codec.safetensors"
        export_safetensors(self.codec.state_dict(), self.codec_path, self.cfg, fp16=False)  # weight-normed, as trained
        self.codec.remove_weight_norm()  # as load() serves it
        self.codec_source = f"random weights (config {self.cfg.preset})"
        if self.use_shipped:
            self.notes.append(f"{_rel(path)} is absent: the codec has random weights")

    def _s2s(self, path: Path) -> None:
        import s2s_transformer
        from telugu_tokenizer import Tokenizer
        from checkpoint_io import export_safetensors

        if self.use_shipped and path.exists():
            self.s2s, self.s2s_path, self.s2s_source = s2s_transformer.load(path), path, _rel(path)
            self.tokenizer = getattr(self.s2s, "tokenizer", None)
            return
        try:
            tokenizer = Tokenizer.load()
        except FileNotFoundError:
            tokenizer = None
        if self.cfg.s2s.text_vocab_size <= 0:
            self.cfg.s2s.text_vocab_size = tokenizer.vocab_size if tokenizer is not None else 1000
        self.s2s = s2s_transformer.S2SModel(self.cfg).eval()
        self.tokenizer = None
        if tokenizer is not None and tokenizer.vocab_size == self.s2s.text_vocab:
            self.s2s.tokenizer = self.tokenizer = tokenizer
            shutil.copy(tokenizer.path, self.workdir / "telugu_spm.model")  # load() attaches it beside
        self.s2s_path = self.workdir / "s2s.safetensors"
        export_safetensors(self.s2s.state_dict(), self.s2s_path, self.cfg, fp16=False)
        self.s2s_source = f"random weights (config {self.cfg.preset})"
        if self.use_shipped:
            self.notes.append(f"{_rel(path)} is absent: the S2S model has random weights (speed figures hold; "
                              "the response gap and any answer are meaningless)")

    def _ear(self, args) -> None:
        """The ear the server hears with: the shipped one when it exists (--ear auto), else none;
        --ear on serves a random one of the config's size when none is shipped (its cost is the
        same). The asr_step part always times one."""
        import telugu_asr
        from checkpoint_io import export_safetensors

        path = Path(args.asr) if getattr(args, "asr", None) else telugu_asr.SHIPPED
        choice = getattr(args, "ear", "auto")
        if self.use_shipped and path.exists() and choice != "off":
            self.ear, self.ear_path, self.ear_source = telugu_asr.load(path), path, _rel(path)
            return
        torch.manual_seed(0)
        self.ear = telugu_asr.Ear(self.cfg).eval()
        self.ear_source = f"random weights (config {self.cfg.preset})"
        self.ear_path = None
        if choice == "on":
            self.ear_path = self.workdir / "asr.safetensors"
            export_safetensors(self.ear.state_dict(), self.ear_path, self.cfg, fp16=False)

    @property
    def server_ear_args(self) -> list[str]:
        return ["--asr", str(self.ear_path)] if self.ear_path is not None else ["--no_asr"]

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.codec.frame_size / self.codec.sample_rate

    @property
    def codec_delay_ms(self) -> float:
        return 1000.0 * self.codec.delay / self.codec.sample_rate

    def info(self) -> dict:
        count = lambda m: sum(p.numel() for p in m.parameters())
        user_input = self.s2s.cfg.user_input
        return {"source": self.source, "codec": self.codec_source, "s2s": self.s2s_source,
                "voice_bank": str(self.voice_bank_path) if self.voice_bank_path else None,
                "config": self.cfg.preset, "agent": self.agent, "codec_params": count(self.codec), "s2s_params": count(self.s2s),
                "frame_ms": self.frame_ms, "acoustic_delay": self.s2s.delay, "codec_delay_ms": self.codec_delay_ms,
                "user_input": user_input, "pipeline_has_encoder": user_input != "mel",
                "asr": self.ear_source, "asr_params": count(self.ear), "server_hears_with_asr": self.ear_path is not None}


def user_audio(seconds: float, sr: int) -> tuple[np.ndarray, str]:
    """A held-out spoken Telugu question from a TEST voice, then 1.5 s of silence (the agent's
    turn), repeated to `seconds`; a tone-burst signal when espeak-ng is unavailable."""
    try:
        import dialogue_domain
        import telugu_tts

        turn = dialogue_domain.sample_turn(random.Random(0), "heldout", intent="add")
        speech, _ = telugu_tts.synthesize(turn.user_text, TEST_VOICE)
        source = f"'{turn.user_text}' spoken by {TEST_VOICE} (espeak-ng), 1.5 s pauses"
    except Exception as e:  # noqa: BLE001: any TTS failure falls back to a signal that needs none
        import s2s_client
        return s2s_client.bench_input(seconds), f"tone bursts (telugu_tts failed: {e})"
    pause = int(1.5 * sr)
    n = int(seconds * sr)
    speech = speech[:max(int(0.5 * sr), n - pause)]
    unit = np.concatenate([speech, np.zeros(pause, np.float32)])
    return np.tile(unit, -(-n // len(unit)))[:n].astype(np.float32), source


def frames_of(pcm: np.ndarray, frame_size: int) -> list[np.ndarray]:
    n = len(pcm) // frame_size
    return [pcm[i * frame_size:(i + 1) * frame_size] for i in range(n)]


def fill_kv_cache(gen, frames: int) -> None:
    """The cost of a step depends on how many keys are cached, not on which: fill the caches
    cheaply to the sliding window, the steady state of a long conversation."""
    for c in gen.caches:
        c.k.normal_(), c.v.normal_()
        c.count = frames
    gen.step_index = frames


def fill_ear_window(state, frames: int) -> None:
    """The ear's steady state: every slot of its window holds a key (attention over all of them)."""
    state.keys.normal_(), state.values.normal_()
    state.valid.fill_(True)
    state.position.fill_(frames)


# --- parts ------------------------------------------------------------------------------------------

def bench_components(bm: BenchModels, audio: np.ndarray, n: int, warmup: int, device: str = "cpu",
                     max_s: float = math.inf) -> dict:
    """Per-frame time of each part on `device` with the current torch threads (each part stops
    after max_s seconds, at least 5 frames)."""
    import frame_scheduler
    import streaming_server_advanced as server_mod

    codec, s2s = bm.codec, bm.s2s
    if device != "cpu":
        codec, s2s = copy.deepcopy(codec).to(device), copy.deepcopy(s2s).to(device)
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    fs, frame_ms = codec.frame_size, bm.frame_ms
    frames = frames_of(audio, fs)
    frame_tensors = [torch.from_numpy(f).to(device).view(1, 1, -1) for f in frames]
    out, it = {}, {"i": 0}

    def next_index():
        it["i"] = (it["i"] + 1) % len(frames)
        return it["i"]

    with torch.inference_mode():
        state = {"enc": codec.init_state(1, device)}

        def encode():
            _, state["enc"] = codec.encode_step(frame_tensors[next_index()], state["enc"])
        out["codec_encode"] = time_frames(encode, n, warmup, sync, max_s)

        codes = codec.encode(torch.from_numpy(audio).to(device))  # [1, K, T]
        state["dec"] = codec.init_state(1, device)

        def decode():
            i = next_index() % codes.shape[-1]
            _, state["dec"] = codec.decode_step(codes[:, :, i:i + 1], state["dec"])
        out["codec_decode"] = time_frames(decode, n, warmup, sync, max_s)

        kind = s2s.cfg.user_input
        user_stream = [torch.from_numpy(f).to(device) for f in frames] if kind == "mel" else (
            list(codec.latent(torch.from_numpy(audio).to(device))[0].T) if kind == "latent" else list(codes[0].T))
        gen = s2s.streaming(voice=bm.voice, seed=0)
        fill_kv_cache(gen, s2s.cfg.context_frames)
        out["s2s_step"] = time_frames(lambda: gen.step(user_stream[next_index() % len(user_stream)]), n, warmup, sync,
                                      max_s)

        ear = bm.ear if device == "cpu" else copy.deepcopy(bm.ear).to(device)
        ear_state = {"s": ear.init_state(1, device)}
        fill_ear_window(ear_state["s"], ear.cfg.asr.context_frames)

        def hear():
            _, _, _, ear_state["s"] = ear.step(frame_tensors[next_index()].view(1, -1), ear_state["s"])
        out["asr_step"] = time_frames(hear, n, warmup, sync, max_s)

        # The server's tick for one conversation: the ear (when the server hears with one), the S2S
        # step with its codec encoder, the codec decoder, the context manager, PCM16.
        models = server_mod.Models(codec, s2s, bm.tokenizer, {"bench": {"gender": "", "embedding": bm.voice}},
                                   ear=ear if bm.ear_path is not None else None)
        batch = frame_scheduler.ConversationBatch(models)
        conv = frame_scheduler.Conversation(models, bm.cfg, "bench", seed=0)
        batch.add(conv)
        fill_kv_cache(conv.gen, s2s.cfg.context_frames)
        if batch.ear is not None:
            fill_ear_window(batch.ear_state, ear.cfg.asr.context_frames)
        out["pipeline"] = time_frames(lambda: batch.step([(conv, frames[next_index()])]), n, warmup, sync, max_s)
    return {k: with_rtf(v, frame_ms) for k, v in out.items()}


# --- peers: Mimi and EnCodec -------------------------------------------------------------------------

def import_peers(peers_dir: str | None) -> dict:
    """The peer codec packages that import here (moshi, encodec), by name -> module or error."""
    if peers_dir:
        sys.path.insert(0, str(Path(peers_dir).resolve()))
    found = {}
    try:
        from moshi.models import loaders
        found["mimi"] = loaders
    except Exception as e:  # noqa: BLE001: absent or broken, the report says which
        found["mimi"] = f"not available: {type(e).__name__}: {e}"
    stub = None
    try:
        import importlib.util
        if importlib.util.find_spec("torchaudio") is None:
            # encodec imports torchaudio for its file helpers only; the model does not need it.
            import types
            stub = sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        from encodec import EncodecModel
        found["encodec"] = EncodecModel
    except Exception as e:  # noqa: BLE001
        found["encodec"] = f"not available: {type(e).__name__}: {e}"
    finally:
        if stub is not None and sys.modules.get("torchaudio") is stub:
            del sys.modules["torchaudio"]
    return found


def bench_peers(bm: BenchModels, audio: np.ndarray, n: int, warmup: int, peers_dir: str | None,
                max_s: float = math.inf) -> dict:
    """Our codec, Mimi and EnCodec coding the same audio frame by frame (one thread, CPU):
    ms per frame and per second of audio, and our cost over theirs."""
    found = import_peers(peers_dir)
    result = {"available": {k: not isinstance(v, str) for k, v in found.items()},
              "audio_s": round(len(audio) / bm.codec.sample_rate, 2)}

    def per_second(enc, dec, frame_s):
        return {"encode_ms": enc, "decode_ms": dec, "frame_ms": round(1000 * frame_s, 1),
                "ms_per_audio_s": round((enc["p50"] + dec["p50"]) / frame_s, 1)}

    with torch.inference_mode():
        codec = bm.codec
        fs = codec.frame_size
        frames = [torch.from_numpy(f).view(1, 1, -1) for f in frames_of(audio, fs)]
        st = {"enc": codec.init_state(1), "dec": codec.init_state(1), "i": 0, "codes": None}

        def ours_enc():
            st["i"] = (st["i"] + 1) % len(frames)
            st["codes"], st["enc"] = codec.encode_step(frames[st["i"]], st["enc"])

        def ours_dec():
            _, st["dec"] = codec.decode_step(st["codes"], st["dec"])
        enc = time_frames(ours_enc, n, warmup, max_s=max_s)
        dec = time_frames(ours_dec, n, warmup, max_s=max_s)
        result["ours"] = per_second(enc, dec, fs / codec.sample_rate)

        loaders = found["mimi"]
        if isinstance(loaders, str):
            result["mimi"] = {"error": loaders}
        else:
            try:
                mimi = loaders.get_mimi(None, device="cpu", num_codebooks=8)  # random weights, no download
                mfs = int(mimi.frame_size)
                mframes = [torch.from_numpy(f).view(1, 1, -1) for f in frames_of(np.tile(audio, 2), mfs)]
                ms = {"i": 0, "codes": None}

                def mimi_enc():
                    ms["i"] = (ms["i"] + 1) % len(mframes)
                    ms["codes"] = mimi.encode(mframes[ms["i"]])

                with mimi.streaming(1):
                    m_enc = time_frames(mimi_enc, max(4, n // 3), max(2, warmup // 2), max_s=max_s)
                    m_dec = time_frames(lambda: mimi.decode(ms["codes"]), max(4, n // 3), max(2, warmup // 2), max_s=max_s)
                result["mimi"] = {**per_second(m_enc, m_dec, mfs / mimi.sample_rate),
                                  "params": sum(p.numel() for p in mimi.parameters()), "weights": "random",
                                  "codebooks": 8}
                del mimi
            except Exception as e:  # noqa: BLE001
                result["mimi"] = {"error": f"{type(e).__name__}: {e}"}

        model_cls = found["encodec"]
        if isinstance(model_cls, str):
            result["encodec"] = {"error": model_cls}
        else:
            try:
                model = model_cls.encodec_model_24khz(pretrained=False)  # random weights, no download
                model.set_target_bandwidth(6.0)  # 8 codebooks of 1024 at 75 Hz
                es = {"i": 0, "coded": None}

                def encodec_enc():
                    es["i"] = (es["i"] + 1) % len(frames)
                    es["coded"] = model.encode(frames[es["i"]])

                e_enc = time_frames(encodec_enc, max(4, n // 2), max(2, warmup // 2), max_s=max_s)
                e_dec = time_frames(lambda: model.decode(es["coded"]), max(4, n // 2), max(2, warmup // 2), max_s=max_s)
                result["encodec"] = {**per_second(e_enc, e_dec, fs / codec.sample_rate),
                                     "params": sum(p.numel() for p in model.parameters()), "weights": "random",
                                     "codebooks": 8, "stateless_chunks": True}
            except Exception as e:  # noqa: BLE001
                result["encodec"] = {"error": f"{type(e).__name__}: {e}"}

    result["ratios"] = {}
    for name in ("mimi", "encodec"):
        peer = result.get(name, {})
        if "ms_per_audio_s" in peer:
            o, p = result["ours"], peer
            result["ratios"][name] = {
                "encode": round((o["encode_ms"]["p50"] / o["frame_ms"]) / (p["encode_ms"]["p50"] / p["frame_ms"]), 3),
                "decode": round((o["decode_ms"]["p50"] / o["frame_ms"]) / (p["decode_ms"]["p50"] / p["frame_ms"]), 3),
                "total": round(o["ms_per_audio_s"] / p["ms_per_audio_s"], 3)}
    for name in ("ours", "mimi", "encodec"):  # keep the JSON small: no raw samples for peers
        for part in ("encode_ms", "decode_ms"):
            result.get(name, {}).get(part, {}).pop("samples_ms", None)
    return result


# --- end to end through the real server ------------------------------------------------------------------

class ServerProcess:
    """streaming_server_advanced.py in a subprocess on a free loopback port (port 0: the server
    picks one and logs it), stopped with SIGTERM on exit."""

    def __init__(self, model_args: list[str], log_path: Path, workers: int | None = None, max_sessions: int = 2,
                 device: str = "cpu", preset: str = "tiny"):
        cmd = [sys.executable, str(ROOT / "streaming_server_advanced.py"), "--host", "127.0.0.1", "--port", "0",
               *model_args, "--device", device, "--config", preset,
               "--set", f"server.max_sessions={max_sessions}", "--set", "server.idle_timeout_s=60"]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        self.cmd, self.log_path = cmd, Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def __enter__(self) -> "ServerProcess":
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.tail()}")
            for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "listening":
                    self.port = int(event["port"])
                    return self
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the server did not start in {SERVER_START_TIMEOUT_S:.0f} s: {self.tail()}")

    def tail(self, n: int = 5) -> str:
        return " | ".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def speech_ends(audio: np.ndarray, frame_size: int, cfg) -> tuple[list[int], list[int], list[bool]]:
    """(ends, starts, loud): the last loud frame of each user turn and each turn's first frame,
    by the server's own VAD (context_manager.VoiceActivity), and per-frame raw loudness."""
    from context_manager import VoiceActivity

    vad = VoiceActivity(cfg.context)
    ends, starts, loud, last_loud, active = [], [], [], None, False
    for i, f in enumerate(frames_of(audio, frame_size)):
        now = vad.update(f)
        loud.append(bool(vad.loud))
        if vad.loud:
            last_loud = i
        if now and not active:
            starts.append(i)
        if active and not now and last_loud is not None:
            ends.append(last_loud)
        active = now
    return ends, starts, loud


def analyse_conversation(conv, audio: np.ndarray, bm: BenchModels) -> dict:
    from s2s_transformer import AGENT_ACTIVE_DB

    fs, d, frame_ms = bm.codec.frame_size, bm.s2s.delay, bm.frame_ms
    send, recv = np.array(conv.send_times), np.array(conv.recv_times)
    n = min(len(send), len(recv))
    rtt = (recv[:n] - send[:n]) * 1000
    delay = (recv[d:n] - send[:n - d]) * 1000
    agent_db = [frame_db(f) for f in frames_of(conv.audio, fs)][:n]
    ends, starts, user_loud = speech_ends(audio, fs, bm.cfg)
    gaps = []
    for e in ends:
        nxt = next((s for s in starts if s > e), n)
        onset = next((j for j in range(e + 1, min(nxt, n)) if agent_db[j] > AGENT_ACTIVE_DB), None)
        if onset is not None:
            gaps.append((recv[onset] - send[e]) * 1000)
    over = [agent_db[i] > AGENT_ACTIVE_DB for i in range(min(n, len(user_loud))) if user_loud[i]]
    per_s = max(1, int(round(1000 / frame_ms)))
    drift = float(np.median(rtt[-per_s:]) - np.median(rtt[per_s:2 * per_s])) if n >= 3 * per_s else 0.0
    stats = (conv.stopped or {}).get("stats", {})
    return {"delay": delay.tolist(), "rtt": rtt.tolist(), "gaps": gaps, "drift_ms": round(drift, 1),
            "frames_in": len(send), "frames_out": len(recv),
            "rtt_p95": float(np.percentile(rtt, 95)) if n else math.inf,
            "agent_over_user": (sum(over) / len(over)) if over else None,
            "compute_ms": stats.get("compute_ms", {}), "e2e_ms": stats.get("e2e_ms", {}),
            "server_gap_ms": stats.get("response_gap_ms", {})}


async def _run_clients(url: str, audio: np.ndarray, n: int, frame_s: float = 0.04):
    """n real-time conversations at once. Each starts at a random moment within a frame, as clients
    that never met do: frames that all arrive together would flatter a batching server."""
    import s2s_client

    rng = random.Random(n)

    async def one(offset):
        await asyncio.sleep(offset)
        return await s2s_client.converse(url, audio, realtime=True, timeout=60)
    return await asyncio.gather(*(one(rng.uniform(0, frame_s)) for _ in range(n)), return_exceptions=True)


def e2e_run(url: str, audio: np.ndarray, clients: int, bm: BenchModels) -> dict:
    results = asyncio.run(_run_clients(url, audio, clients))
    frame_ms = bm.frame_ms
    parts, errors = [], []
    for r in results:
        if isinstance(r, BaseException):
            errors.append(f"{type(r).__name__}: {r}")
        else:
            parts.append(analyse_conversation(r, audio, bm))
    worst = lambda key, q: max((p[key].get(q, 0.0) for p in parts), default=None)
    realtime = not errors and all(p["rtt_p95"] <= 3 * frame_ms and p["drift_ms"] <= frame_ms for p in parts)
    over = [p["agent_over_user"] for p in parts if p["agent_over_user"] is not None]
    return {
        "clients": clients, "ok": len(parts), "realtime": realtime,
        "per_frame_delay_ms": pct([x for p in parts for x in p["delay"]]),
        "rtt_ms": pct([x for p in parts for x in p["rtt"]]),
        "response_gap_ms": pct([x for p in parts for x in p["gaps"]]),
        "server_response_gap_ms": [p["server_gap_ms"] for p in parts],
        "rtf": {q: (round(worst("compute_ms", q) / frame_ms, 3) if worst("compute_ms", q) is not None else None)
                for q in ("p50", "p95", "p99")},
        "server_compute_ms": {q: worst("compute_ms", q) for q in ("p50", "p95", "p99")},
        "server_e2e_ms": {q: worst("e2e_ms", q) for q in ("p50", "p95")},
        "drift_ms": max((p["drift_ms"] for p in parts), default=None),
        "agent_over_user": round(float(np.mean(over)), 3) if over else None,
        "errors": errors[:5],
        # frames a client sent and never got an answer to; a conversation that failed lost them all
        "dropped_frames": sum(max(0, p["frames_in"] - p["frames_out"]) for p in parts)
                          + len(errors) * (len(audio) // bm.codec.frame_size),
        "delay_samples_ms": [round(x, 2) for p in parts for x in p["delay"]],
    }


def server_args(bm: BenchModels, queue_frames: int) -> list[str]:
    """The server on the benchmark's models, queueing up to `queue_frames` frames of a conversation
    each way (its input backlog, server.max_backlog_s, and its send queue)."""
    backlog_s = queue_frames * bm.codec.frame_size / bm.codec.sample_rate
    models = ["--codec", str(bm.codec_path), "--s2s", str(bm.s2s_path)] if bm.agent != "v2" else ["--agent", "v2"]
    args = [*models, *bm.server_ear_args,
            "--set", f"server.send_queue_frames={queue_frames}", "--set", f"server.max_backlog_s={backlog_s:g}"]
    if bm.voice_bank_path is not None:
        args += ["--voice_bank", str(bm.voice_bank_path)]
    return args


def bench_end_to_end(bm: BenchModels, audio: np.ndarray, workers: int, max_clients: int, workdir: Path,
                     device: str = "cpu", log=print) -> dict:
    runs = []
    # A server that falls behind lags and does not drop the conversation (up to server.max_backlog_s;
    # here the whole clip), so that the benchmark measures how far behind it falls.
    queue = len(audio) // bm.codec.frame_size + 100
    model_args = server_args(bm, queue) + ["--set", f"server.capacity={max_clients}"]  # no admission: how far behind
    log_path = workdir / f"server_w{workers}_{device}.log"
    with ServerProcess(model_args, log_path, workers, max_clients, device, bm.preset) as server:
        clients = 1
        while clients <= max_clients:
            run = e2e_run(server.url, audio, clients, bm)
            runs.append(run)
            d = run["per_frame_delay_ms"]
            log(f"  end to end, {workers} worker(s), {clients} client(s): per-frame delay p50 {d.get('p50')} ms, "
                f"p95 {d.get('p95')} ms, rtf p50 {run['rtf']['p50']}, real time: {run['realtime']}"
                + (f", errors: {run['errors'][0]}" if run["errors"] else ""))
            if not run["realtime"]:
                break
            clients *= 2
    held = [r["clients"] for r in runs if r["realtime"]]
    return {"max_realtime_clients": max(held) if held else 0, "runs": runs}


# --- capacity: how many conversations a server holds in real time ------------------------------------------

CAPACITY_COUNTS = (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32, 48, 64)
REALTIME_P95_MS = 100.0  # a conversation is real time when its per-frame delay p95 is under this


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_health(http: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(http + "/health", timeout=10) as r:
        return json.loads(r.read())


def capacity_run(server: "ServerProcess", audio: np.ndarray, clients: int, bm: BenchModels) -> dict:
    """`clients` real-time loopback conversations at once; real time = per-frame delay p95 under
    REALTIME_P95_MS and no frame dropped. Server CPU is % of one core over the run."""
    cpu0, t0 = process_cpu_s(server.proc.pid), time.monotonic()
    r = e2e_run(server.url, audio, clients, bm)
    cpu_pct = 100 * (process_cpu_s(server.proc.pid) - cpu0) / (time.monotonic() - t0)
    health = server_health(server.http)
    workers = health.get("worker_stats", [])
    p95 = r["per_frame_delay_ms"].get("p95", math.inf)
    return {"clients": clients, "ok": r["ok"], "per_frame_delay_ms": r["per_frame_delay_ms"],
            "response_gap_ms": r["response_gap_ms"], "dropped_frames": r["dropped_frames"],
            "server_cpu_pct": round(cpu_pct, 1), "tick_ms": health.get("tick_ms", {}),
            "batch_mean": [w["batch_mean"] for w in workers], "loadavg": loadavg(),
            "realtime": r["ok"] == clients and r["dropped_frames"] == 0 and p95 < REALTIME_P95_MS,
            "errors": r["errors"]}


def bench_capacity(bm: BenchModels, audio: np.ndarray, workers: int, batching: bool, max_clients: int,
                   workdir: Path, log=print) -> dict:
    """1, 2, 4, 6, 8, ... clients until real time breaks, admission off (capacity = max_clients),
    so that the sweep finds the limit the admission control should sit under."""
    queue = len(audio) // bm.codec.frame_size + 100  # lag is measured, not cut off
    args = server_args(bm, queue) + ["--set", f"server.capacity={max_clients}",
                                     "--set", f"server.batching={'true' if batching else 'false'}"]
    runs = []
    log_path = workdir / f"capacity_w{workers}_{'batched' if batching else 'unbatched'}.log"
    with ServerProcess(args, log_path, workers, max_clients, "cpu", bm.preset) as server:
        for clients in (n for n in CAPACITY_COUNTS if n <= max_clients):
            run = capacity_run(server, audio, clients, bm)
            runs.append(run)
            d = run["per_frame_delay_ms"]
            log(f"  capacity, {workers} worker(s), batching {'on' if batching else 'off'}, {clients} client(s): "
                f"delay p50 {d.get('p50')} p95 {d.get('p95')} ms, dropped {run['dropped_frames']}, "
                f"server CPU {run['server_cpu_pct']} %, tick p50 {run['tick_ms'].get('p50')} ms, "
                f"batch {run['batch_mean']}, real time: {run['realtime']}; load {run['loadavg']}")
            if len(runs) >= 2 and not runs[-1]["realtime"] and not runs[-2]["realtime"]:
                break  # two counts in a row past real time (one may be a noisy neighbour's moment)
    held = [r["clients"] for r in runs if r["realtime"]]
    return {"workers": workers, "batching": batching, "max_realtime_clients": max(held) if held else 0, "runs": runs}


async def _timed_clients(url: str, audio: np.ndarray, n: int) -> list:
    """n real-time conversations at once: (seconds until it ended or was refused, result or exception)."""
    import s2s_client

    rng = random.Random(n)

    async def one(offset):
        await asyncio.sleep(offset)  # clients that never met: each at its own phase of the frame
        t0 = time.perf_counter()
        try:
            conv = await s2s_client.converse(url, audio, realtime=True, timeout=60)
            return time.perf_counter() - t0, conv
        except Exception as e:  # noqa: BLE001: a refusal is a result here
            return time.perf_counter() - t0, e
    return await asyncio.gather(*(one(rng.uniform(0, 0.04)) for _ in range(n)))


def bench_admission(bm: BenchModels, audio: np.ndarray, workers: int, extra: int, workdir: Path,
                    max_clients: int = 32, log=print) -> dict:
    """The server's own admission: its capacity measured at start-up (at most max_clients per
    worker), then capacity + `extra` clients at once. The extra ones must get the busy error at
    once, the admitted stay real time."""
    queue = len(audio) // bm.codec.frame_size + 100
    with ServerProcess(server_args(bm, queue), workdir / f"admission_w{workers}.log", workers, max_clients * workers,
                       "cpu", bm.preset) as server:
        health = server_health(server.http)
        limit = health["capacity"]["sessions"]
        results = asyncio.run(_timed_clients(server.url, audio, limit + extra))
    refused = [t for t, r in results if isinstance(r, Exception) and "busy" in str(r)]
    failed = [f"{type(r).__name__}: {r}" for _, r in results if isinstance(r, Exception) and "busy" not in str(r)]
    admitted = [analyse_conversation(r, audio, bm) for _, r in results if not isinstance(r, Exception)]
    delays = [x for a in admitted for x in a["delay"]]
    dropped = sum(max(0, a["frames_in"] - a["frames_out"]) for a in admitted)
    out = {"workers": workers, "capacity": limit, "capacity_per_worker": health["capacity"]["per_worker"],
           "capacity_tick_ms": health["capacity"].get("tick_ms"), "clients": limit + extra,
           "refused_busy": len(refused), "refused_after_ms": pct([t * 1000 for t in refused]),
           "admitted": len(admitted), "admitted_delay_ms": pct(delays), "admitted_dropped_frames": dropped,
           "admitted_realtime": bool(admitted) and dropped == 0 and not failed
                                and pct(delays).get("p95", math.inf) < REALTIME_P95_MS,
           "errors": failed[:5]}
    log(f"  admission, {workers} worker(s): capacity {limit} (measured at start-up), {limit + extra} clients: "
        f"{len(refused)} busy after {out['refused_after_ms'].get('p50')} ms, {len(admitted)} admitted, delay p95 "
        f"{out['admitted_delay_ms'].get('p95')} ms, dropped {dropped}")
    return out


def run_capacity(args, log=print) -> dict:
    """The capacity sweep: batched and unbatched, one worker and one per core, same audio, same run."""
    t_start = time.monotonic()
    seconds = args.seconds or (4.0 if args.quick else 12.0)
    max_clients = args.max_clients or (4 if args.quick else 32)
    res = {"command": "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
           "machine": {"cpu_count": os.cpu_count(), "loadavg_start": loadavg(), "torch": torch.__version__,
                       "python": platform.python_version(), "platform": platform.platform()},
           "criterion": f"per-frame delay p95 < {REALTIME_P95_MS:.0f} ms and no frame dropped"}
    with tempfile.TemporaryDirectory(prefix="bench_capacity_") as tmp:
        workdir = Path(tmp)
        bm = BenchModels(args, workdir)
        res["models"] = bm.info()
        audio, source = user_audio(seconds, bm.codec.sample_rate)
        res["audio"] = source
        cpus = os.cpu_count() or 1
        worker_counts = [int(w) for w in args.workers_list.split(",")] if args.workers_list else sorted({1, cpus})
        res["sweeps"] = []
        for batching in [mode == "batched" for mode in args.modes.split(",")]:
            for workers in worker_counts:
                try:
                    res["sweeps"].append(bench_capacity(bm, audio, workers, batching, max_clients, workdir, log))
                except RuntimeError as e:
                    res.setdefault("notes", []).append(f"sweep {workers} worker(s) batching {batching} failed: {e}")
        res["admission"] = []
        for workers in ([] if args.no_admission else worker_counts):
            try:
                res["admission"].append(bench_admission(bm, audio, workers, 2, workdir, max_clients, log))
            except RuntimeError as e:
                res.setdefault("notes", []).append(f"admission with {workers} worker(s) failed: {e}")
    res["machine"]["loadavg_end"] = loadavg()
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return res


def format_capacity(res: dict) -> str:
    m, mach = res["models"], res["machine"]
    head = {(s["workers"], s["batching"]): s["max_realtime_clients"] for s in res["sweeps"]}
    lines = [f"Machine: {mach['cpu_count']} cores, load average {mach['loadavg_start']} at the start, "
             f"{mach['loadavg_end']} at the end. "
             + ("Agent: v2 (shipped ear, brain, mouth and pitch codec). " if m.get("agent") == "v2" else
                f"Models ({m['source']}): S2S {m['s2s_params'] / 1e6:.1f} M, codec {m['codec_params'] / 1e6:.1f} M, "
                f"ear {'on: ' + m['asr'] if m.get('server_hears_with_asr') else 'off'}. ") +
             f"Real time: {res['criterion']}; clients stream {res['audio']} in real time.", "",
             "**Conversations held in real time** (largest count that stayed real time):", "",
             "| workers | batched | one at a time (before) |", "|---|---|---|"]
    for w in sorted({s["workers"] for s in res["sweeps"]}):
        lines.append(f"| {w} | **{head.get((w, True), '-')}** | {head.get((w, False), '-')} |")
    lines += ["", "| workers | batching | clients | per-frame delay p50 / p95 ms | response gap p50 / p95 ms | dropped "
              "| server CPU % | tick p50 / p95 ms | batch mean | load | real time |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for sw in res["sweeps"]:
        for r in sw["runs"]:
            d, g, t = r["per_frame_delay_ms"], r["response_gap_ms"], r["tick_ms"]
            rt = "yes" if r["realtime"] else ("no: " + r["errors"][0][:40] if r["errors"] else "no")
            lines.append(f"| {sw['workers']} | {'on' if sw['batching'] else 'off'} | {r['clients']} | {_q(d)} / "
                         f"{_q(d, 'p95')} | {_q(g)} / {_q(g, 'p95')} | {r['dropped_frames']} | {r['server_cpu_pct']:.0f} "
                         f"| {_q(t)} / {_q(t, 'p95')} | {', '.join(f'{b:.1f}' for b in r['batch_mean'])} | "
                         f"{r['loadavg'][0] if r['loadavg'] else '-'} | {rt} |")
    if res.get("admission"):
        lines += ["", "| admission | capacity (measured at start-up) | clients | refused busy (after p50 ms) | admitted "
                  "| admitted delay p95 ms | admitted dropped | admitted real time |", "|---|---|---|---|---|---|---|---|"]
        for a in res["admission"]:
            lines.append(f"| {a['workers']} worker(s) | {a['capacity']} ({a['capacity_per_worker']} per worker) | "
                         f"{a['clients']} | {a['refused_busy']} ({_q(a['refused_after_ms'])}) | {a['admitted']} | "
                         f"{_q(a['admitted_delay_ms'], 'p95')} | {a['admitted_dropped_frames']} | "
                         f"{'yes' if a['admitted_realtime'] else 'no'} |")
    lines += [f"- {n}" for n in res.get("notes", [])]
    return "\n".join(lines)


def plot_capacity(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for sw in res["sweeps"]:
        label = f"{sw['workers']} worker{'s' if sw['workers'] > 1 else ''}, {'batched' if sw['batching'] else 'one at a time'}"
        style = "-o" if sw["batching"] else "--s"
        xs = [r["clients"] for r in sw["runs"]]
        axes[0].plot(xs, [r["per_frame_delay_ms"].get("p95", np.nan) for r in sw["runs"]], style, label=label)
        axes[1].plot(xs, [r["server_cpu_pct"] for r in sw["runs"]], style, label=label)
    axes[0].axhline(REALTIME_P95_MS, color="red", ls="--", lw=1, label=f"real time: p95 < {REALTIME_P95_MS:.0f} ms")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("concurrent conversations")
    axes[0].set_ylabel("per-frame delay p95, ms")
    axes[0].set_title("per-frame delay as conversations are added")
    axes[1].set_xlabel("concurrent conversations")
    axes[1].set_ylabel("server CPU, % of one core")
    axes[1].set_title(f"server CPU ({res['machine']['cpu_count']} cores)")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"telugu-s2s capacity, load average {res['machine']['loadavg_start']}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme_capacity(path: Path, report: str, command: str, plot_path: str | None) -> None:
    """Replace the "### Capacity" block inside README's "## Latency" section (or add it there)."""
    text = path.read_text(encoding="utf-8")
    body = ["### Capacity", "", f"Measured with `{command}`: 1, 2, 4, 6, 8, ... loopback clients streaming real "
            "speech with pauses, one worker and one per core, with batching (one step per tick for every "
            "conversation of a worker) and without (each conversation stepped on its own, as before), the admission "
            "control off so that the sweep finds the limit; then the server's own admission with its capacity "
            "measured at start-up and two clients more than it.", ""]
    if plot_path:
        body += [f"![capacity]({plot_path})", ""]
    body += [report, ""]
    block = "\n".join(body) + "\n"
    pattern = re.compile(r"^### Capacity\n.*?(?=^## |^### |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        latency = re.compile(r"(^## Latency\n.*?)(?=^## |\Z)", re.S | re.M)
        if latency.search(text):
            text = latency.sub(lambda mt: mt.group(1).rstrip("\n") + "\n\n" + block + "\n", text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n## Latency\n\n" + block
    path.write_text(text, encoding="utf-8")


# --- the budget ----------------------------------------------------------------------------------

def jitter_buffer_ms() -> tuple[float, float]:
    """The page's playback buffer: (start target, floor) in ms, read from static/worklets.js."""
    try:
        text = (ROOT / "static" / "worklets.js").read_text(encoding="utf-8")
        start = float(re.search(r"startMs\s*\|\|\s*(\d+)", text).group(1))
        floor = float(re.search(r"minMs\s*\|\|\s*(\d+)", text).group(1))
        return start, floor
    except (OSError, AttributeError):
        return 100.0, 60.0


def latency_budget(models: dict, components: dict, e2e: dict | None) -> dict:
    """Mouth to ear, part by part: measured through the server with one client (`e2e`, the
    server's default workers) and, for a machine that keeps up, from the parts alone."""
    frame_ms, d, hop = models["frame_ms"], models["acoustic_delay"], models["codec_delay_ms"]
    pipe = components.get("threads_1", next(iter(components.values())))["pipeline"]
    jitter, jitter_floor = jitter_buffer_ms()
    rows = [("frame (the server waits for a whole frame)", frame_ms, frame_ms),
            (f"acoustic delay ({d} frame{'s' if d != 1 else ''}: codebooks 1.. one step later)", d * frame_ms, d * frame_ms),
            ("codec iSTFT hop (the decoder's output lags one hop)", hop, hop)]
    algorithmic = sum(r[1] for r in rows)
    rows.append(("= algorithmic delay", algorithmic, algorithmic))
    rows.append(("compute per frame (pipeline, 1 thread)", pipe["p50"], pipe["p95"]))
    first = e2e["runs"][0] if e2e and e2e.get("runs") else {}
    delay = first.get("per_frame_delay_ms", {})
    jitter_row = (f"jitter buffer (the page's start target; it adapts down to {jitter_floor:.0f} ms)", jitter, jitter)
    parts = (algorithmic + pipe["p50"] + jitter, algorithmic + pipe["p95"] + jitter)
    if delay.get("n"):
        transport = (max(0.0, delay["p50"] - d * frame_ms - pipe["p50"]), max(0.0, delay["p95"] - d * frame_ms - pipe["p95"]))
        why = "" if first.get("realtime") else "; the server fell behind real time, so this is mostly its backlog"
        rows.append((f"transport + queueing (loopback, 1 client: measured delay - acoustic delay - compute{why})",
                     *transport))
        rows.append(jitter_row)
        total = (frame_ms + delay["p50"] + hop + jitter, frame_ms + delay["p95"] + hop + jitter)
        rows.append(("= mouth to ear, measured (1 client)", *total))
    else:
        rows.append(("transport + queueing (not measured: --no_e2e)", 0.0, 0.0))
        rows.append(jitter_row)
        total = parts
    rows.append(("= mouth to ear from the parts (algorithmic + compute + jitter buffer: a machine that keeps up)", *parts))
    return {"rows": [{"part": r[0], "p50_ms": round(r[1], 1), "p95_ms": round(r[2], 1)} for r in rows],
            "algorithmic_ms": round(algorithmic, 1), "total_p50_ms": round(total[0], 1),
            "total_p95_ms": round(total[1], 1), "parts_p50_ms": round(parts[0], 1), "parts_p95_ms": round(parts[1], 1),
            "target_ms": TARGET_MS, "moshi_theoretical_ms": MOSHI_THEORETICAL_MS,
            "moshi_practical_ms": MOSHI_PRACTICAL_MS, "jitter_buffer_ms": jitter, "jitter_buffer_floor_ms": jitter_floor,
            "within_target_p95": total[1] <= TARGET_MS}


def realtime_notes(res: dict) -> list[str]:
    """What the end-to-end runs say about this machine, in words."""
    notes = []
    for key, e2e in (res.get("end_to_end") or {}).items():
        first = e2e["runs"][0] if e2e["runs"] else None
        if first is not None and e2e["max_realtime_clients"] == 0:
            pipe = res["components"]["cpu"].get("threads_1", {}).get("pipeline", {})
            notes.append(f"{key.replace('_', ' ')}: not even one conversation kept real time here (server RTF p50 "
                         f"{first['rtf']['p50']}; load average {res['machine']['loadavg_start']} on "
                         f"{res['machine']['cpu_count']} cores). The pipeline needs {pipe.get('cpu_p50')} ms of CPU "
                         f"per {res['models']['frame_ms']:.0f} ms frame, so a core of its own would keep up; on a "
                         "shared one it waits for its turn.")
    return notes


# --- report ----------------------------------------------------------------------------------------

def _q(d: dict, key: str = "p50") -> str:
    v = d.get(key) if d else None
    return "-" if v is None else f"{v:.1f}"


def format_report(res: dict) -> str:
    m, mach = res["models"], res["machine"]
    lines = [f"Machine: {mach['cpu_count']} cores, load average {mach['loadavg_start']} at the start, "
             f"{mach['loadavg_end']} at the end; torch {mach['torch']}; CUDA: {mach['cuda'] or 'none'}.",
             f"Models ({m['source']}): codec {m['codec']} ({m['codec_params'] / 1e6:.1f} M params), S2S {m['s2s']} "
             f"({m['s2s_params'] / 1e6:.1f} M), user stream '{m['user_input']}', frame {m['frame_ms']:.0f} ms, "
             f"acoustic delay {m['acoustic_delay']}, codec hop {m['codec_delay_ms']:.0f} ms.", "",
             "| part, per 40 ms frame | device | threads | p50 ms | p95 ms | p99 ms | CPU p50 ms | RTF p50 |",
             "|---|---|---|---|---|---|---|---|"]
    for device, by_threads in res["components"].items():
        for threads, parts in by_threads.items():
            for name in (c for c in COMPONENTS if c in parts):
                s = parts[name]
                lines.append(f"| {name} | {device} | {threads.split('_')[1]} | {_q(s)} | {_q(s, 'p95')} | {_q(s, 'p99')} | "
                             f"{s['cpu_p50']:.1f} | {s['rtf_p50']:.2f} |")
    if res.get("end_to_end"):
        lines += ["", "| end to end (loopback) | clients | per-frame delay p50/p95/p99 ms | response gap p50/p95/p99 ms "
                  "| RTF p50/p95/p99 | real time |", "|---|---|---|---|---|---|"]
        for key, e2e in res["end_to_end"].items():
            for r in e2e["runs"]:
                dl, g, rtf = r["per_frame_delay_ms"], r["response_gap_ms"], r["rtf"]
                gap = f"{_q(g)} / {_q(g, 'p95')} / {_q(g, 'p99')}" if g.get("n") else "- (no answer onset)"
                rt = "yes" if r["realtime"] else ("no: " + r["errors"][0][:60] if r["errors"] else "no")
                lines.append(f"| {key.replace('_', ' ')} | {r['clients']} | {_q(dl)} / {_q(dl, 'p95')} / {_q(dl, 'p99')} "
                             f"| {gap} | {_q(rtf) if rtf['p50'] is None else format(rtf['p50'], '.2f')} / "
                             f"{'-' if rtf['p95'] is None else format(rtf['p95'], '.2f')} / "
                             f"{'-' if rtf['p99'] is None else format(rtf['p99'], '.2f')} | {rt} |")
    b = res["budget"]
    lines += ["", "| latency budget | p50 ms | p95 ms |", "|---|---|---|"]
    lines += [f"| {r['part']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |" for r in b["rows"]]
    lines.append(f"| target / Moshi theoretical / Moshi practical | {b['target_ms']:.0f} / "
                 f"{b['moshi_theoretical_ms']:.0f} / {b['moshi_practical_ms']:.0f} | |")
    peers = res.get("peers")
    if peers:
        lines += ["", "| codec, same audio, 1 thread CPU | frame ms | encode p50 ms/frame | decode p50 ms/frame "
                  "| ms per s of audio | ours / theirs |", "|---|---|---|---|---|---|"]
        for name in ("ours", "mimi", "encodec"):
            p = peers.get(name, {})
            if "error" in p:
                lines.append(f"| {name} | - | - | - | - | {p['error'][:70]} |")
            elif p:
                ratio = peers["ratios"].get(name, {}).get("total")
                lines.append(f"| {name} | {p['frame_ms']:.0f} | {_q(p['encode_ms'])} | {_q(p['decode_ms'])} | "
                             f"{p['ms_per_audio_s']:.0f} | {'-' if ratio is None else f'{ratio:.3f}'} |")
    if res.get("notes"):
        lines += [""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines)


def plot(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.3, 1.0, 1.0]})
    ax = axes[0]
    labels, data = [], []
    for device, by_threads in res["components"].items():
        for threads, parts in by_threads.items():
            for name in (c for c in COMPONENTS if c in parts):
                labels.append(f"{name}\n{device} {threads.split('_')[1]}t")
                data.append(parts[name]["samples_ms"])
    ax.boxplot(data, whis=(1, 99), showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, fontsize=7)
    ax.axhline(res["models"]["frame_ms"], color="red", ls="--", lw=1, label="frame (real time)")
    if max(max(x) for x in data) > 10 * res["models"]["frame_ms"]:
        ax.set_yscale("log")  # a part that crawls must not flatten the others
    ax.set_ylabel("ms per frame (box p25-p75, whiskers p1-p99)")
    ax.set_title("parts, per 40 ms frame")
    ax.legend(fontsize=8)

    ax = axes[1]
    labels, data = [], []
    for key, e2e in (res.get("end_to_end") or {}).items():
        for r in e2e["runs"]:
            if r.get("delay_samples_ms"):
                labels.append(f"{r['clients']} cl\n{key.split('_')[1]}w")
                data.append(r["delay_samples_ms"])
    if data:
        ax.boxplot(data, whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.axhline(TARGET_MS, color="red", ls="--", lw=1, label=f"target {TARGET_MS:.0f} ms")
    ax.axhline(MOSHI_PRACTICAL_MS, color="gray", ls=":", lw=1, label=f"Moshi practical {MOSHI_PRACTICAL_MS:.0f} ms")
    ax.set_ylabel("ms: input frame sent -> dependent output frame received")
    ax.set_title("end to end per-frame delay (clients, workers)")
    ax.legend(fontsize=8)

    ax = axes[2]
    b = res["budget"]
    parts = [r for r in b["rows"] if not r["part"].startswith("=")]
    colors = plt.cm.tab10.colors
    for x, with_transport in ((0, True), (1, False)):
        bottom = 0.0
        for i, r in enumerate(parts):
            if r["part"].startswith("transport") and not with_transport:
                continue
            ax.bar(x, r["p50_ms"], bottom=bottom, color=colors[i % 10], label=r["part"].split(" (")[0] if x == 0 else None)
            bottom += r["p50_ms"]
    ax.bar(2, MOSHI_THEORETICAL_MS, color="lightgray")
    ax.bar(3, MOSHI_PRACTICAL_MS, color="darkgray")
    ax.axhline(TARGET_MS, color="red", ls="--", lw=1, label=f"target {TARGET_MS:.0f} ms")
    ax.set_xticks([0, 1, 2, 3], ["measured\n1 client", "from the\nparts", "Moshi\ntheoretical", "Moshi\npractical"])
    ax.set_ylabel("ms, mouth to ear (p50)")
    ax.set_yscale("log" if b["total_p50_ms"] > 4 * TARGET_MS else "linear")
    ax.set_title(f"budget p50: measured {b['total_p50_ms']:.0f} ms, parts {b.get('parts_p50_ms', 0):.0f} ms")
    ax.legend(fontsize=7, loc="upper right")
    m = res["machine"]
    fig.suptitle(f"telugu-s2s latency, {res['models']['source']} models, {m['cpu_count']} cores, "
                 f"load {m['loadavg_start']}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shown_command(command: str) -> str:
    """The command as README shows it: where the JSON went and which README was written are no figures."""
    words, shown = command.split(), []
    while words:
        word = words.pop(0)
        if word in ("--json", "--readme", "--from_json"):
            words = words[1:]
        elif not word.startswith(("--json=", "--readme=", "--from_json=")):
            shown.append(word)
    return " ".join(shown)


def update_readme(path: Path, report: str, command: str, plot_path: str | None) -> None:
    """Replace README's "## Latency" section (up to the next "## " heading) with this run."""
    text = path.read_text(encoding="utf-8")
    body = ["## Latency", "", f"Measured with `{command}` (figures on a shared, loaded machine are noisy: the load "
            "average is part of the table). What each figure means (per-frame delay, response gap, RTF, the budget) "
            "is in `benchmark_latency.py`'s docstring; `--quick` runs in under a minute. The Mimi and EnCodec rows "
            "need `pip install --no-deps --target DIR moshi==0.2.13 encodec==0.1.1 einops` and `--peers_dir DIR` "
            "(a plain `pip install moshi` replaces torch 2.13 with 2.9). `python system_test.py` checks the whole "
            "install (`--record DIR` records a demo conversation in Chromium).", "",
            "How many conversations a server holds (each worker steps all of its conversations in one batched step "
            "per frame, `frame_scheduler.py`): `python benchmark_latency.py --capacity --json docs/capacity.json "
            "--plot docs/capacity.png --readme README.md` (batched and one at a time, one worker and one per core, "
            "then the admission check; below, \"Capacity\"); whether it holds them for an hour: `python soak.py "
            "--minutes 60 --json docs/soak.json --plot docs/soak.png --readme README.md` (below, \"Soak\"; "
            "`tests/test_soak.py` runs two minutes of it).", ""]
    if plot_path:
        body += [f"![latency distributions]({plot_path})", ""]
    body += [report, ""]
    kept = re.search(r"^### (Capacity|Soak)\n.*?(?=^## |\Z)", text, re.S | re.M)  # --capacity's, soak.py's
    if kept:
        body += [kept.group(0).rstrip("\n"), ""]
    section = "\n".join(body) + "\n"
    pattern = re.compile(r"^## Latency\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


# --- main ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Latency of the voice agent: parts, end to end, budget, peers",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="fewer frames, short conversations, up to 4 clients: under a minute")
    p.add_argument("--json", metavar="OUT", help="write every figure as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="draw the latency distributions (matplotlib)")
    p.add_argument("--readme", metavar="README.md", help="rewrite that file's '## Latency' section with this run")
    p.add_argument("--config", default="tiny", help="preset for random-weight models (default tiny)")
    p.add_argument("--codec", help="codec checkpoint (default checkpoints/codec.safetensors)")
    p.add_argument("--s2s", help="S2S checkpoint (default checkpoints/s2s.safetensors)")
    p.add_argument("--voice_bank", help="voice bank (default checkpoints/voice_bank.json)")
    p.add_argument("--random_weights", action="store_true", help="ignore shipped checkpoints")
    p.add_argument("--asr", help="ear checkpoint (default checkpoints/asr.safetensors)")
    p.add_argument("--ear", choices=("auto", "on", "off"), default="auto",
                   help="the server hears with the ear: auto when its checkpoint exists, on (a random one of the "
                        "config's size when none is shipped), off")
    p.add_argument("--tiny", action="store_true", help="tiny random models (tests): plumbing, not figures")
    p.add_argument("--frames", type=int, help="timed frames per part (default 200, quick 25)")
    p.add_argument("--seconds", type=float, help="audio per client end to end (default 12, quick 3)")
    p.add_argument("--max_clients", type=int, help="largest N end to end (default 16, quick 4)")
    p.add_argument("--threads", default="1,all", help="torch thread counts for the parts, e.g. 1,all or 1,2")
    p.add_argument("--no_e2e", action="store_true", help="skip the server")
    p.add_argument("--no_peers", action="store_true", help="skip Mimi/EnCodec")
    p.add_argument("--from_json", metavar="IN", help="no measuring: print, plot and write README from a saved --json")
    p.add_argument("--capacity", action="store_true",
                   help="the capacity sweep instead: 1, 2, 4, 6, 8, ... real-time clients, batched and not, one worker "
                        "and one per core, then the admission control (README's '### Capacity')")
    p.add_argument("--workers_list", help="worker counts of the capacity sweep (default 1,<cores>)")
    p.add_argument("--modes", default="batched,unbatched", help="the capacity sweep's servers: batched, unbatched or both")
    p.add_argument("--agent", choices=["s2s", "v2"], default="s2s",
                   help="the server's agent in the capacity sweep: the S2S model, or the shipped v2 agent (ear, brain, mouth)")
    p.add_argument("--no_admission", action="store_true", help="the capacity sweep without the admission check")
    p.add_argument("--peers_dir", default=os.environ.get("TELUGU_S2S_PEERS"),
                   help="folder with moshi/encodec installed (pip install --no-deps --target DIR ...)")
    return p


def default_e2e(res: dict) -> dict | None:
    """The end-to-end runs of the server's default setting (one worker per core)."""
    runs = res.get("end_to_end") or {}
    key = max(runs, key=lambda k: int(k.split("_")[1]) if k.startswith("workers_") else -1, default=None)
    return runs.get(key) if key else None


def thread_counts(spec: str) -> list[int]:
    out = []
    for s in spec.split(","):
        n = (os.cpu_count() or 1) if s.strip() == "all" else int(s)
        if n not in out:
            out.append(n)
    return out


def run(args, log=print) -> dict:
    t_start = time.monotonic()
    frames = args.frames or (25 if args.quick else 200)
    warmup = max(3, frames // 10)
    seconds = args.seconds or (3.0 if args.quick else 12.0)
    max_clients = args.max_clients or (4 if args.quick else 16)
    part_s = 1.2 if args.quick else 60.0  # a part that crawls (threads fighting over a busy core) stops early
    result = {"command": "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
              "machine": {"cpu_count": os.cpu_count(), "loadavg_start": loadavg(), "torch": torch.__version__,
                          "python": platform.python_version(), "platform": platform.platform(),
                          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    threads_before = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        workdir = Path(tmp)
        bm = BenchModels(args, workdir)
        result["models"] = bm.info()
        notes = list(bm.notes)
        audio, source = user_audio(seconds, bm.codec.sample_rate)
        notes.append(f"user audio: {source}")
        log(f"[{time.monotonic() - t_start:.0f} s] models: {bm.source} ({bm.codec_source}; {bm.s2s_source}); "
            f"load {loadavg()}")

        result["components"] = {"cpu": {}}
        for n_threads in thread_counts(args.threads):
            torch.set_num_threads(n_threads)
            result["components"]["cpu"][f"threads_{n_threads}"] = parts = bench_components(
                bm, audio, frames, warmup, max_s=part_s)
            log(f"[{time.monotonic() - t_start:.0f} s] parts, {n_threads} thread(s): " + ", ".join(f"{k} {v['p50']:.1f} ms" for k, v in parts.items()))
        torch.set_num_threads(1)
        if torch.cuda.is_available():
            result["components"]["cuda"] = {"threads_1": bench_components(bm, audio, frames, warmup, "cuda", part_s)}

        result["end_to_end"] = {}
        if not args.no_e2e:
            cpus = os.cpu_count() or 1
            for workers in ([cpus] if args.quick or cpus == 1 else [1, cpus]):
                try:
                    result["end_to_end"][f"workers_{workers}"] = bench_end_to_end(
                        bm, audio, workers, max_clients, workdir, log=log)
                except RuntimeError as e:
                    notes.append(f"end to end with {workers} worker(s) failed: {e}")
            if torch.cuda.is_available() and not args.quick:
                try:
                    result["end_to_end"]["cuda_1"] = bench_end_to_end(bm, audio, 1, max_clients, workdir, "cuda", log)
                except RuntimeError as e:
                    notes.append(f"end to end on CUDA failed: {e}")
        if not args.no_peers:
            torch.set_num_threads(1)
            result["peers"] = bench_peers(bm, audio, max(8, frames // 2), warmup, args.peers_dir, part_s)
            log(f"[{time.monotonic() - t_start:.0f} s] peers: " + json.dumps(result["peers"]["ratios"]))
        torch.set_num_threads(threads_before)
        result["budget"] = latency_budget(result["models"], result["components"]["cpu"], default_e2e(result))
    if bm.source != "shipped":
        notes.append("speed figures come from models of the configured size with untrained weights; "
                     "the response gap needs the trained models")
    result["machine"]["loadavg_end"] = loadavg()
    result["notes"] = notes + realtime_notes(result)
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.capacity:
        return main_capacity(args)
    if args.from_json:  # re-derive what is derived, so a newer report reads an older run
        res = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        res["budget"] = latency_budget(res["models"], res["components"]["cpu"], default_e2e(res))
        res["notes"] = [n for n in res["notes"] if "kept real time here" not in n] + realtime_notes(res)
    else:
        res = run(args, log=lambda s: print(s, file=sys.stderr, flush=True))
    return publish(args, res, format_report(res), plot, update_readme)


def main_capacity(args) -> int:
    res = json.loads(Path(args.from_json).read_text(encoding="utf-8")) if args.from_json else \
        run_capacity(args, log=lambda s: print(s, file=sys.stderr, flush=True))
    return publish(args, res, format_capacity(res), plot_capacity, update_readme_capacity)


def publish(args, res: dict, report: str, plot_fn, readme_fn) -> int:
    """What the latency run and the capacity sweep both do with a result: print the report, then the
    plot, the README block and the JSON that were asked for."""
    print(report)
    if args.plot:
        plot_fn(res, args.plot)
    if args.readme:
        readme_fn(Path(args.readme), report, shown_command(res["command"]),
                  args.plot and os.path.relpath(args.plot, Path(args.readme).parent))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"\n({res['elapsed_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
