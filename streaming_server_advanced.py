"""The full-duplex Telugu voice agent server: one port serves the page (static/), /health, /metrics
and the WebSocket at /ws.

    python streaming_server_advanced.py                      # shipped checkpoints, 127.0.0.1:8765
    python streaming_server_advanced.py --codec C --s2s S --voice_bank V --port 0 --token T
    python streaming_server_advanced.py --random_weights     # untrained models of the config's size

Wire protocol (DESIGN.md "Server"; what is decided here beyond it):

    binary  kind byte + payload: 0x01 audio PCM16 LE 24 kHz mono (both ways; the client may send
            any whole number of samples, the server always sends one frame_size frame per input
            frame), 0x02 agent text piece, 0x03 user text piece (UTF-8, server to client only)
    client  {"type": "start", "voice"?, "temperature"?, "top_k"?, "text_temperature"?, "text_top_k"?,
             "seed"?, "token"?}
            {"type": "stop"}   {"type": "ping", ...}
    server  {"type": "ready", "session", "version", "sample_rate", "frame_ms", "frame_size",
             "voices": [{"name", "gender"}], "default_voice", "token_required", "limits"}  on connect
            {"type": "started", "voice", "algorithmic_delay_ms"}  then state "listening"
            {"type": "state", "state": listening|thinking|speaking|interrupted, "frame"}
            {"type": "flush", "reason": "barge_in", "frame"}: drop all buffered agent audio now
            {"type": "heard", "text", "frame"}: the v2 agent answers this request (its reading of the
             user's words through the ear's language model, which may correct the 0x03 pieces)
            {"type": "stats", "frames", "compute_ms", "cpu_ms", "e2e_ms", "response_gap_ms", "backlog",
             "send_queue", "barge_ins", "state", "algorithmic_delay_ms"}  once a second
            {"type": "stopped", "frames", "transcript", "stats"}  after the last queued frame
            {"type": "pong", ...}   {"type": "error", "code", "message"}

Every input frame yields exactly one output audio frame, in order: silence while the agent
listens, is muted by a barge-in, or has not produced its first frame (the acoustic delay). The
remainder of an incomplete frame at "stop" is dropped. "stop" keeps the connection: "start"
begins a fresh conversation. No input frame is dropped while the session lives: a worker that falls
behind real time (a busy machine) queues them and catches up; only a backlog over
server.max_backlog_s closes the session (overrun).

Errors that leave the connection usable (it stays open): not_started, already_started,
bad_kind, bad_audio, bad_json, bad_message, bad_start, unknown_voice. Closing ones (error JSON,
then a close frame with the code): unauthorized, rate_limited, overrun, too_many_errors, idle,
session_limit (1008 policy violation); internal (1011); busy (1013 try again later); shutdown
(1001 going away). A message over max_message_bytes is closed by the websockets library with
1009; a slow reader (send queue over send_queue_frames) is closed with 1008 without an error
message (it is not reading), a bad Origin or a wrong ?token= is refused at the handshake (HTTP
403 / 401).

Serving many conversations (frame_scheduler.py): each worker is one model thread whose
conversations are rows of one batch; every tick steps the ear, the S2S model and the codec decoder
once over all of its conversations that have a frame, then each conversation's ContextManager. A
new conversation goes to the worker with the fewest. Capacity (conversations per worker in real
time) is server.capacity, or measured at start-up (frame_scheduler.measure_capacity); beyond
workers x capacity (or server.max_sessions) the next connection gets the busy error (1013), so the
admitted ones stay real time. /health and /metrics report sessions, capacity, the tick time and
the batch size.

The ear (telugu_asr.py; --asr PATH, default checkpoints/asr.safetensors when it exists, --no_asr
without): its recognised text is the user's transcript (0x03 pieces, a word at a time, and the
turn history) and its speech probability the user's voice activity. The S2S model still reads its
own user stream; without an ear the transcript is the S2S model's own, as before.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import hmac
import itertools
import json
import logging
import math
import os
import secrets
import signal
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from config import Config, ConfigError, add_config_args, load_config, resolve_preset
from frame_scheduler import Conversation, FrameOut, Tick, Worker, measure_capacity  # noqa: F401 (re-exported)

__version__ = "0.1.0"

ROOT = Path(__file__).resolve().parent
STATIC_DIR = ROOT / "static"

KIND_AUDIO, KIND_AGENT_TEXT, KIND_USER_TEXT = 0x01, 0x02, 0x03
CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1001, 1008, 1009, 1011, 1013
MAX_PROTOCOL_ERRORS = 32  # recoverable errors one connection may cause before it is closed
# The kernel's send buffer per connection, fixed instead of autotuned (which grows to megabytes):
# with it, a client that stops reading shows up as a full send queue within seconds. 64 KiB is
# over a second of 24 kHz PCM16, far more than any working network needs in flight.
SOCKET_SEND_BUFFER = 64 * 1024
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json", ".png": "image/png",
                 ".svg": "image/svg+xml", ".ico": "image/x-icon", ".wav": "audio/wav"}
# The page needs the mic and a WebSocket to its own origin, nothing else.
PAGE_HEADERS = [("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; "
                 "style-src 'self' 'unsafe-inline'; img-src 'self' data:"),
                ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                ("Cache-Control", "no-cache")]


# --- structured logs -----------------------------------------------------------------------------

logger = logging.getLogger("s2s_server")


class JsonLines(logging.Formatter):
    def format(self, record):
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "event": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per refused handshake is enough


def log(event: str, level: int = logging.INFO, **fields) -> None:
    logger.log(level, event, extra={"fields": fields})


# --- metrics (Prometheus text format) ------------------------------------------------------------

class Histogram:
    def __init__(self, name: str, help_text: str, buckets):
        self.name, self.help, self.buckets = name, help_text, list(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
                break

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for b, n in zip(self.buckets, itertools.accumulate(self.counts)):
            lines.append(f'{self.name}_bucket{{le="{b:g}"}} {n}')
        lines += [f'{self.name}_bucket{{le="+Inf"}} {self.count}', f"{self.name}_sum {self.sum:.6f}",
                  f"{self.name}_count {self.count}"]
        return lines


class Metrics:
    """Updated from the event loop thread only, so no locks."""

    def __init__(self):
        latency_buckets = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.25, 0.5, 1.0, 2.5)
        self.compute = Histogram("s2s_frame_compute_seconds", "model compute per 40 ms frame", latency_buckets)
        self.e2e = Histogram("s2s_frame_e2e_seconds",
                             "input frame complete to its output frame handed to the socket", latency_buckets)
        self.tick = Histogram("s2s_tick_seconds", "one worker tick: every conversation's frame in one batched step",
                              latency_buckets)
        self.batch = Histogram("s2s_tick_batch", "conversations stepped per tick", (1, 2, 4, 6, 8, 12, 16, 24, 32, 64))
        self.frames = 0
        self.sessions_total = 0
        self.barge_ins = 0
        self.errors: collections.Counter = collections.Counter()
        self.closes: collections.Counter = collections.Counter()

    def render(self, active_sessions: int, max_sessions: int, uptime_s: float, capacity: int = 0,
               workers: list | None = None) -> str:
        lines = ["# HELP s2s_sessions_active conversations connected now", "# TYPE s2s_sessions_active gauge",
                 f"s2s_sessions_active {active_sessions}",
                 "# HELP s2s_sessions_max the configured limit", "# TYPE s2s_sessions_max gauge",
                 f"s2s_sessions_max {max_sessions}",
                 "# HELP s2s_capacity conversations the workers hold in real time (admission limit)",
                 "# TYPE s2s_capacity gauge", f"s2s_capacity {capacity}",
                 "# HELP s2s_worker_conversations conversations on each worker", "# TYPE s2s_worker_conversations gauge"]
        lines += [f's2s_worker_conversations{{worker="{w["worker"]}"}} {w["conversations"]}' for w in workers or []]
        lines += ["# HELP s2s_worker_tick_p50_seconds median tick of each worker (last 500 ticks)",
                  "# TYPE s2s_worker_tick_p50_seconds gauge"]
        lines += [f's2s_worker_tick_p50_seconds{{worker="{w["worker"]}"}} {w["tick_ms"].get("p50", 0) / 1000:.6f}'
                  for w in workers or []]
        lines += ["# HELP s2s_sessions_total connections accepted", "# TYPE s2s_sessions_total counter",
                  f"s2s_sessions_total {self.sessions_total}",
                  "# HELP s2s_frames_total audio frames processed", "# TYPE s2s_frames_total counter",
                  f"s2s_frames_total {self.frames}",
                  "# HELP s2s_barge_ins_total user interruptions of the agent", "# TYPE s2s_barge_ins_total counter",
                  f"s2s_barge_ins_total {self.barge_ins}",
                  "# HELP s2s_uptime_seconds time since start", "# TYPE s2s_uptime_seconds gauge",
                  f"s2s_uptime_seconds {uptime_s:.1f}",
                  "# HELP s2s_errors_total error messages and refusals by code", "# TYPE s2s_errors_total counter"]
        lines += [f's2s_errors_total{{code="{code}"}} {n}' for code, n in sorted(self.errors.items())]
        lines += ["# HELP s2s_closes_total connections closed by the server, by close code",
                  "# TYPE s2s_closes_total counter"]
        lines += [f's2s_closes_total{{code="{code}"}} {n}' for code, n in sorted(self.closes.items())]
        return "\n".join(lines + self.compute.render() + self.e2e.render() + self.tick.render()
                         + self.batch.render()) + "\n"


async def close_ws(ws, code: int = 1000, reason: str = "", timeout: float = 2.0) -> None:
    """Close with a code, but never wait on a peer that does not read: the library's close waits
    for the socket to drain, so after `timeout` the TCP connection is aborted."""
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        ws.transport.abort()
    except Exception:
        ws.transport.abort()


def percentiles(values, qs=(50, 95)) -> dict:
    if not values:
        return {}
    return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in qs}


# --- models --------------------------------------------------------------------------------------

@dataclass
class Models:
    """Everything the sessions share read-only. Any objects with the codec's and the S2S model's
    streaming API will do (the tests pass scripted ones)."""
    codec: object
    s2s: object
    tokenizer: object | None
    voices: dict  # name -> {"gender": str, "embedding": tensor [voice_dim] or None}
    info: dict = field(default_factory=dict)  # what /health reports
    ear: object | None = None  # telugu_asr.Ear: the user's transcript and voice activity; None: the S2S model's
    # The v2 agent (voice_agent.py) instead of the S2S model: the brain answers, the mouth speaks on
    # its codec (then `codec` is the mouth's and `s2s` is None)
    brain: object | None = None
    mouth: object | None = None
    lm: object | None = None  # ear_lm.CharLM: the v2 agent reads each request with it (None: greedy)

    @property
    def frame_size(self) -> int:
        return self.codec.frame_size

    @property
    def device(self):
        """Where the models run (None for scripted stand-ins without parameters)."""
        params = getattr(self.codec, "parameters", None)
        return next(params()).device if params else None

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.frame_size / self.sample_rate

    @property
    def algorithmic_delay_ms(self) -> float:
        """The agent's audio lags the frame that caused it: the acoustic delay (codebooks 1.. come
        `delay` steps after codebook 0) plus the codec decoder's iSTFT hop."""
        delay = self.s2s.delay if self.s2s is not None else 0  # the mouth emits each frame's codes at once
        return delay * self.frame_ms + 1000.0 * self.codec.delay / self.sample_rate


def _agent_voices_without_embeddings() -> dict:
    import telugu_tts

    return {v.name: {"gender": v.gender, "embedding": None} for v in telugu_tts.voices("agent")}


def load_voices(path, voice_dim: int | None) -> tuple[dict, str]:
    """The voice bank's voices, or (until one is trained) the TTS catalogue's four agent voices
    with no embedding: the model then speaks unconditioned."""
    try:
        from speaker_embeddings import DEFAULT_VOICE_BANK, VoiceBank
    except ImportError:
        DEFAULT_VOICE_BANK, VoiceBank = None, None
    bank_path = Path(path) if path else DEFAULT_VOICE_BANK
    if VoiceBank is None or bank_path is None or not bank_path.exists():
        if path:
            raise FileNotFoundError(f"voice bank not found: {path}")
        log("voice_bank_missing", logging.WARNING, path=str(bank_path),
            note="using the four agent voice names without embeddings")
        return _agent_voices_without_embeddings(), ""
    bank = VoiceBank.load(bank_path)
    voices = {}
    for name in bank.names():
        emb = bank.embedding(name)
        if voice_dim is not None and emb.numel() != voice_dim:
            raise ValueError(f"voice bank {bank_path}: voice '{name}' has a {emb.numel()}-d embedding, "
                             f"the S2S model expects {voice_dim}-d (speaker.embed_dim)")
        voices[name] = {"gender": bank.voices[name].gender, "embedding": emb}
    if not voices:
        raise ValueError(f"voice bank {bank_path} has no voices")
    return voices, str(bank_path)


def load_ear(path, codec, device: str = "cpu"):
    """The ear at `path`, or the shipped one when it exists (None without one: the S2S model's own
    transcript and the energy VAD serve, as before the ear)."""
    import telugu_asr

    if path is None and not telugu_asr.SHIPPED.exists():
        return None, None
    ear = telugu_asr.load(path, device=device)
    if ear.frame_size != codec.frame_size or ear.sample_rate != codec.sample_rate:
        raise ValueError(f"the ear ({path or telugu_asr.SHIPPED}: {ear.frame_size} samples at {ear.sample_rate} Hz) "
                         f"does not match the codec ({codec.frame_size} at {codec.sample_rate} Hz)")
    return ear, str(path or telugu_asr.SHIPPED)


def v2_available(brain_path=None, mouth_path=None) -> bool:
    import agent_brain
    import agent_mouth

    return Path(brain_path or agent_brain.SHIPPED).exists() and Path(mouth_path or agent_mouth.SHIPPED).exists()


def load_agent_v2(cfg: Config, voice_bank_path=None, device: str = "cpu", asr_path=None, brain_path=None,
                  mouth_path=None, lm_path=None) -> Models:
    """The v2 agent's models: the ear (and its language model), the brain, the mouth (and the
    mouth's codec). lm_path "none": no LM; None: the shipped one where it exists."""
    import agent_brain
    import agent_mouth
    import ear_lm
    import telugu_asr

    brain = agent_brain.load(brain_path, device)
    mouth = agent_mouth.load(mouth_path, device)
    codec = mouth.codec
    ear, ear_info = load_ear(asr_path or telugu_asr.SHIPPED, codec, device)
    lm = ear_lm.load_optional(lm_path)
    voices, bank_info = load_voices(voice_bank_path, None)
    voices = {name: v for name, v in voices.items() if name in mouth.m.voices}
    if not voices:
        raise ValueError(f"the voice bank has none of the mouth's voices ({', '.join(mouth.m.voices)})")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    info = {"agent": "v2", "brain": str(brain_path or agent_brain.SHIPPED), "mouth": str(mouth_path or agent_mouth.SHIPPED),
            "codec": mouth.cfg.mouth.codec_checkpoint, "asr": ear_info, "voice_bank": bank_info or None, "device": device,
            "brain_params": count(brain), "mouth_params": count(mouth), "codec_params": count(codec),
            "asr_params": count(ear), "ear_lm": str(lm_path or ear_lm.SHIPPED) if lm is not None else None}
    return Models(codec, None, None, voices, info, ear, brain, mouth, lm)


def load_models(cfg: Config, codec_path=None, s2s_path=None, voice_bank_path=None,
                random_weights: bool = False, device: str = "cpu", asr_path=None, use_asr: bool = True,
                agent: str = "s2s", brain_path=None, mouth_path=None, lm_path=None) -> Models:
    """agent: "s2s" (the end-to-end S2S model), "v2" (ear + brain + mouth, voice_agent.py) or
    "auto" (v2 when its brain and mouth checkpoints exist and no S2S checkpoint was asked for)."""
    import torch

    if agent == "auto":
        agent = "v2" if not s2s_path and not random_weights and use_asr and v2_available(brain_path, mouth_path) else "s2s"
    if agent == "v2":
        return load_agent_v2(cfg, voice_bank_path, device, asr_path, brain_path, mouth_path, lm_path)

    import s2s_transformer
    import telugu_codec_fixed

    if random_weights:
        # Untrained models of the config's size: for load tests and a page demo before training.
        from telugu_tokenizer import Tokenizer
        torch.manual_seed(0)
        tokenizer = None
        try:
            tokenizer = Tokenizer.load()
        except FileNotFoundError:
            pass
        if cfg.s2s.text_vocab_size <= 0:
            cfg.s2s.text_vocab_size = tokenizer.vocab_size if tokenizer is not None else 1000
        codec = telugu_codec_fixed.Codec(cfg.codec).to(device).eval().remove_weight_norm()
        s2s = s2s_transformer.S2SModel(cfg).to(device).eval()
        if tokenizer is not None and tokenizer.vocab_size == s2s.text_vocab:
            s2s.tokenizer = tokenizer
        codec_info, s2s_info = "random", "random"
    else:
        codec = telugu_codec_fixed.load(codec_path, device=device)
        s2s = s2s_transformer.load(s2s_path, device=device)
        codec_info = str(codec_path or telugu_codec_fixed.SHIPPED)
        s2s_info = str(s2s_path or s2s_transformer.SHIPPED)
    if codec.frame_size != s2s.frame_size or codec.cfg.codebook_size != s2s.card or \
            s2s.n_codebooks > codec.n_codebooks or codec.sample_rate != cfg.audio.sample_rate:
        raise ValueError(
            f"the codec ({codec_info}: frame_size {codec.frame_size}, {codec.n_codebooks} x "
            f"{codec.cfg.codebook_size} codes, {codec.sample_rate} Hz) does not match the S2S model "
            f"({s2s_info}: frame_size {s2s.frame_size}, {s2s.n_codebooks} x {s2s.card} codes)")
    voices, bank_info = load_voices(voice_bank_path, s2s.voice_in.in_features)
    ear, ear_info = load_ear(asr_path, codec, device) if use_asr else (None, None)
    if getattr(s2s.cfg, "user_input", "") == "ear" and ear is None:
        raise ValueError(f"the S2S model ({s2s_info}) hears through the ear: pass --asr (its ear checkpoint)")
    params = sum(p.numel() for p in s2s.parameters())
    info = {"codec": codec_info, "s2s": s2s_info, "voice_bank": bank_info or None, "device": device,
            "s2s_params": params, "codec_params": sum(p.numel() for p in codec.parameters()), "asr": ear_info}
    if ear is not None:
        info["asr_params"] = sum(p.numel() for p in ear.parameters())
    return Models(codec, s2s, getattr(s2s, "tokenizer", None), voices, info, ear)


# --- one connection ------------------------------------------------------------------------------

class ProtocolError(Exception):
    """An error message for the client; close is the close code when the connection cannot go on."""

    def __init__(self, code: str, message: str, close: int | None = None):
        super().__init__(message)
        self.code, self.message, self.close = code, message, close


class RateLimiter:
    """Token bucket: `rate` messages a second with a burst of one second's worth."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.last = rate, rate, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Session:
    def __init__(self, server: "Server", ws, authed: bool):
        self.server, self.ws = server, ws
        self.cfg = server.cfg
        self.models = server.models
        self.id = secrets.token_hex(4)
        self.authed = authed
        self.started = False  # between an accepted start and its stop, as the reader sees it
        self.conv: Conversation | None = None  # the conversation on a worker, until the worker lets it go
        self.worker: Worker | None = None
        self.conv_gone = asyncio.Event()  # the last conversation has left its worker
        self.conv_gone.set()
        self.outbox: asyncio.Queue = asyncio.Queue()  # (payload, t_in or None) / ("close", code, reason)
        self.pcm_buffer = bytearray()
        self.backlog = 0  # input frames queued, not yet computed
        self.pending_audio = 0  # output frames queued, not yet written to the socket
        self.e2e_ms: collections.deque = collections.deque(maxlen=server.cfg.context.timing_window)
        self.errors = 0
        self.closing = False
        self.connected_at = time.monotonic()
        self.limiter = RateLimiter(self.cfg.server.max_messages_per_s)
        self.remote = str(getattr(ws, "remote_address", ""))

    # --- outgoing ------------------------------------------------------------------------------
    def send_json(self, obj: dict) -> None:
        if not self.closing:
            self.outbox.put_nowait((json.dumps(obj, ensure_ascii=False), None))

    def send_binary(self, kind: int, payload: bytes, t_in: float | None = None) -> None:
        if self.closing:
            return
        if kind == KIND_AUDIO:
            if self.pending_audio >= self.cfg.server.send_queue_frames:
                self.drop_slow_reader()
                return
            self.pending_audio += 1
        self.outbox.put_nowait((bytes([kind]) + payload, t_in))

    def send_error(self, code: str, message: str) -> None:
        self.server.metrics.errors[code] += 1
        self.send_json({"type": "error", "code": code, "message": message})

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far (the error message that explains it) is sent."""
        if not self.closing:
            self.server.metrics.closes[code] += 1
            self.outbox.put_nowait(("close", code, reason))
            self.closing = True

    def drop_slow_reader(self) -> None:
        self.server.metrics.errors["slow_reader"] += 1
        self.server.metrics.closes[CLOSE_POLICY] += 1
        log("slow_reader_dropped", logging.WARNING, session=self.id, queued=self.pending_audio)
        self.closing = True
        # The socket is full: the close frame queues behind the unsent data and the library
        # aborts the TCP connection if the closing handshake does not finish in close_timeout.
        asyncio.ensure_future(close_ws(self.ws, CLOSE_POLICY, "slow reader: send queue full"))

    async def send_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            if item[0] == "close":
                await close_ws(self.ws, item[1], item[2])
                return
            payload, t_in = item
            await self.ws.send(payload)
            self.outbox.task_done()
            if t_in is not None:
                self.pending_audio -= 1
                e2e = time.perf_counter() - t_in
                self.e2e_ms.append(e2e * 1000)
                self.server.metrics.e2e.observe(e2e)

    # --- the model: a worker steps the conversation, its ticks come back here ---------------------
    def on_output(self, out: FrameOut, t_in: float) -> None:
        self.backlog -= 1
        m = self.server.metrics
        m.frames += 1
        m.compute.observe(out.compute_ms / 1000)
        if out.barge_in:
            m.barge_ins += 1
            self.send_json({"type": "flush", "reason": "barge_in", "frame": out.frame})
        if out.state is not None:
            self.send_json({"type": "state", "state": out.state, "frame": out.frame})
        self.send_binary(KIND_AUDIO, out.audio, t_in)
        if out.agent_text:
            self.send_binary(KIND_AGENT_TEXT, out.agent_text.encode("utf-8"))
        if out.user_text:
            self.send_binary(KIND_USER_TEXT, out.user_text.encode("utf-8"))
        if out.request:
            self.send_json({"type": "heard", "text": out.request, "frame": out.frame})
        if out.stats is not None:
            self.send_json({"type": "stats", **out.stats, **self.loop_stats()})

    def on_gone(self, conv: Conversation, summary: dict | None) -> None:
        """The worker let the conversation go: after its last frame (stop), or dropped."""
        if summary is not None:
            summary["stats"].update(self.loop_stats())
            self.send_json({"type": "stopped", **summary})
            log("conversation_end", session=self.id, frames=summary["frames"],
                barge_ins=summary["stats"]["barge_ins"], compute_ms=summary["stats"]["compute_ms"],
                e2e_ms=summary["stats"]["e2e_ms"])
        if self.conv is conv:
            self.conv, self.worker = None, None
            self.backlog = 0
            self.conv_gone.set()

    def on_failed(self) -> None:
        log("session_internal_error", logging.ERROR, session=self.id, error="the model step failed")
        self.send_error("internal", "internal server error")
        self.close(CLOSE_INTERNAL, "internal error")

    def loop_stats(self) -> dict:
        return {"e2e_ms": percentiles(self.e2e_ms), "backlog": self.backlog, "send_queue": self.pending_audio,
                "algorithmic_delay_ms": round(self.models.algorithmic_delay_ms, 1)}

    # --- incoming -------------------------------------------------------------------------------
    async def read_loop(self) -> None:
        srv = self.cfg.server
        while not self.closing:
            now = time.monotonic()
            session_left = srv.max_session_s - (now - self.connected_at)
            if session_left <= 0:
                raise ProtocolError("session_limit", f"session longer than {srv.max_session_s:g} s", CLOSE_POLICY)
            try:
                async with asyncio.timeout(min(srv.idle_timeout_s, session_left)):
                    message = await self.ws.recv()
            except TimeoutError:
                if time.monotonic() - self.connected_at >= srv.max_session_s:
                    continue  # reported at the top of the loop
                raise ProtocolError("idle", f"no message for {srv.idle_timeout_s:g} s", CLOSE_POLICY) from None
            if not self.limiter.allow():
                raise ProtocolError("rate_limited", f"more than {srv.max_messages_per_s:g} messages a second",
                                    CLOSE_POLICY)
            try:
                if isinstance(message, str):
                    await self.on_text(message)
                else:
                    self.on_binary(message)
            except ProtocolError as e:
                if e.close is not None:
                    raise
                self.errors += 1
                self.send_error(e.code, e.message)
                if self.errors >= MAX_PROTOCOL_ERRORS:
                    raise ProtocolError("too_many_errors", f"{self.errors} protocol errors", CLOSE_POLICY) from None

    def on_binary(self, message: bytes) -> None:
        if not message:
            raise ProtocolError("bad_kind", "empty binary message (expected a kind byte)")
        kind = message[0]
        if kind != KIND_AUDIO:
            raise ProtocolError("bad_kind", f"unknown or server-only kind byte 0x{kind:02x} (clients send 0x01 audio)")
        if not self.started:
            raise ProtocolError("not_started", "audio before start: send {\"type\": \"start\"} first")
        payload = memoryview(message)[1:]
        if len(payload) % 2:
            raise ProtocolError("bad_audio", f"audio payload of {len(payload)} bytes is not whole PCM16 samples")
        self.pcm_buffer += payload
        t_in = time.perf_counter()
        frame_bytes = 2 * self.models.frame_size
        while len(self.pcm_buffer) >= frame_bytes:
            pcm = np.frombuffer(bytes(self.pcm_buffer[:frame_bytes]), dtype="<i2").astype(np.float32) / 32768.0
            del self.pcm_buffer[:frame_bytes]
            self.backlog += 1
            self.worker.submit(self.conv, pcm, t_in)
        # A worker that falls behind (a busy machine) queues the user's frames and catches up: no
        # frame the user sent is dropped while the session lives. Only a backlog past max_backlog_s
        # ends it (the page would otherwise reconnect and lose what was said meanwhile).
        backlog_s = self.backlog * self.models.frame_size / self.models.sample_rate
        if backlog_s > self.cfg.server.max_backlog_s:
            raise ProtocolError("overrun", f"{self.backlog} input frames ({backlog_s:.1f} s) waiting, over "
                                           f"max_backlog_s {self.cfg.server.max_backlog_s:g}: audio arrives "
                                           "faster than the server computes it", CLOSE_POLICY)

    async def on_text(self, message: str) -> None:
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):
            raise ProtocolError("bad_json", "text messages must be JSON objects") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ProtocolError("bad_message", "a control message is a JSON object with a string \"type\"")
        kind = msg["type"]
        if kind == "start":
            await self.on_start(msg)
        elif kind == "stop":
            if not self.started:
                raise ProtocolError("not_started", "stop without a conversation")
            self.started = False
            self.pcm_buffer.clear()  # an incomplete frame is not a frame
            self.conv_gone.clear()
            self.worker.leave(self.conv, drop=False)  # "stopped" comes after its last queued frame
        elif kind == "ping":
            self.send_json({**{k: v for k, v in msg.items() if k in ("t", "id")}, "type": "pong"})
        else:
            raise ProtocolError("bad_message", f"unknown message type {kind[:40]!r} (start, stop, ping)")

    async def on_start(self, msg: dict) -> None:
        if not self.authed:
            token = msg.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.cfg.server.token.encode()):
                raise ProtocolError("unauthorized", "missing or wrong token", CLOSE_POLICY)
            self.authed = True
        if self.started:
            raise ProtocolError("already_started", "a conversation is running: stop it first")
        voices = self.models.voices
        voice = msg.get("voice") or self.server.default_voice
        if not isinstance(voice, str) or voice not in voices:
            raise ProtocolError("unknown_voice", f"unknown voice {str(voice)[:40]!r}; voices: {', '.join(voices)}")
        opts = {}
        for key, kind, lo, hi in (("temperature", float, 0.0, 5.0), ("top_k", int, 0, 1 << 20),
                                  ("text_temperature", float, 0.0, 5.0), ("text_top_k", int, 0, 1 << 20),
                                  ("seed", int, 0, 2**63 - 1)):
            value = msg.get(key)
            if value is None:
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if kind is int:
                ok = ok and float(value).is_integer()
            if not ok or not lo <= value <= hi:
                raise ProtocolError("bad_start", f"{key} must be a {kind.__name__} in [{lo}, {hi}]")
            opts[key] = kind(value)
        await self.conv_gone.wait()  # the previous conversation's "stopped" goes out first
        conv = await asyncio.get_running_loop().run_in_executor(
            self.server.pool, lambda: Conversation(self.models, self.cfg, voice, **opts))
        # Checked here, with no await before the join: others may have started since we connected.
        if self.server.conversations() >= self.server.session_limit:
            raise ProtocolError("busy", self.server.busy_message()["message"], CLOSE_TRY_LATER)
        self.started = True
        conv.session = self
        self.conv, self.worker = conv, self.server.least_loaded_worker()
        self.conv_gone.clear()
        self.worker.join(conv)
        self.send_json({"type": "started", "voice": voice,
                        "algorithmic_delay_ms": round(self.models.algorithmic_delay_ms, 1)})
        self.send_json({"type": "state", "state": conv.ctx.state, "frame": 0})
        log("conversation_start", session=self.id, voice=voice, worker=self.worker.index, **opts)

    # --- lifetime -------------------------------------------------------------------------------
    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        sender = asyncio.create_task(self.send_loop())
        self.send_json(self.server.ready_message(self.id, self.authed))
        reason = "client closed"
        try:
            await self.read_loop()
        except ProtocolError as e:
            reason = e.code
            log("session_error", logging.WARNING, session=self.id, code=e.code, message=e.message)
            self.send_error(e.code, e.message)
            self.close(e.close, e.message[:120])
        except ConnectionClosed:
            pass
        except Exception as e:  # a bug: this session ends, the others go on
            reason = "internal"
            log("session_internal_error", logging.ERROR, session=self.id, error=repr(e), exc_info=True)
            self.send_error("internal", "internal server error")
            self.close(CLOSE_INTERNAL, "internal error")
        # Keep reading (and dropping) what the client still sends: the library stops reading the
        # socket when its queue is full, and then would never see the client's close frame.
        discard = asyncio.create_task(self.discard_incoming())
        try:
            if self.closing:  # let the error that explains the close go out first
                await asyncio.wait([sender], timeout=5.0)
        finally:
            if self.conv is not None:  # the client is gone: its conversation leaves its worker now
                self.worker.leave(self.conv, drop=True)
            for task in (sender, discard):
                task.cancel()
            await asyncio.gather(sender, discard, return_exceptions=True)
            await close_ws(self.ws)  # idempotent
        log("session_end", session=self.id, reason=reason, close_code=self.ws.close_code,
            seconds=round(time.monotonic() - self.connected_at, 1))

    async def discard_incoming(self) -> None:
        async for _ in self.ws:
            pass

    async def shutdown(self) -> None:
        """Server shutdown: tell the client why before the library closes with 1001."""
        from websockets.protocol import State

        if not self.closing and self.ws.state is State.OPEN:
            self.send_error("shutdown", "server shutting down")
            try:
                await asyncio.wait_for(self.outbox.join(), 1.0)
            except TimeoutError:
                pass


# --- the server ----------------------------------------------------------------------------------

class Server:
    def __init__(self, models: Models, cfg: Config, workers: int | None = None):
        self.models, self.cfg = models, cfg
        srv = cfg.server
        self.default_voice = srv.default_voice if srv.default_voice in models.voices else next(iter(models.voices))
        self.workers = workers or max(1, min(os.cpu_count() or 1, srv.max_sessions))
        # Conversation set-up (the generator's buffers) happens beside the workers, not in them.
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="s2s-setup",
                                                          initializer=_one_torch_thread)
        self.capacity_report = {"capacity": srv.capacity, "source": "config"}
        if srv.capacity <= 0:
            self.capacity_report = {**measure_capacity(models, cfg), "source": "measured at start-up"}
        self.capacity = self.capacity_report["capacity"]  # conversations per worker
        self.loop: asyncio.AbstractEventLoop | None = None
        self.worker_pool = [Worker(models, cfg, i, self.deliver, self.capacity) for i in range(self.workers)]
        self.sessions: dict[str, Session] = {}
        self.metrics = Metrics()
        self.started_at = time.monotonic()
        self.stop_event: asyncio.Event | None = None
        self.port: int | None = None

    @property
    def session_limit(self) -> int:
        """Conversations admitted: what the workers hold in real time, at most server.max_sessions."""
        return min(self.cfg.server.max_sessions, self.workers * self.capacity)

    def conversations(self) -> int:
        return sum(w.load for w in self.worker_pool)

    def full(self) -> bool:
        """No room for another conversation (or connection: server.max_sessions caps those)."""
        return self.conversations() >= self.session_limit or len(self.sessions) >= self.cfg.server.max_sessions

    def busy_message(self) -> dict:
        return {"type": "error", "code": "busy",
                "message": f"server busy: {self.session_limit} conversations running, try again later"}

    def least_loaded_worker(self) -> Worker:
        return min(self.worker_pool, key=lambda w: w.load)

    # --- ticks come back from the workers' threads ---------------------------------------------------
    def deliver(self, tick: Tick) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.on_tick, tick)

    def on_tick(self, tick: Tick) -> None:
        if tick.batch:
            self.metrics.tick.observe(tick.tick_ms / 1000)
            self.metrics.batch.observe(tick.batch)
        for conv, out, t_in in tick.outputs:
            if conv.session is not None and conv.session.conv is conv:
                conv.session.on_output(out, t_in)
        for conv, summary in tick.gone:
            if conv.session is not None:
                conv.session.on_gone(conv, summary)
        for conv in tick.failed:
            if conv.session is not None and conv.session.conv is conv:
                conv.session.on_failed()

    def worker_stats(self) -> list[dict]:
        return [{"worker": w.index, "conversations": w.load, "capacity": w.capacity,
                 "tick_ms": percentiles(list(w.tick_ms), (50, 95)),
                 "batch_mean": round(float(np.mean(w.batch_sizes)), 2) if w.batch_sizes else 0.0}
                for w in self.worker_pool]

    # --- HTTP on the same port -------------------------------------------------------------------
    def ready_message(self, session_id: str, authed: bool) -> dict:
        srv = self.cfg.server
        return {"type": "ready", "session": session_id, "version": __version__,
                "sample_rate": self.models.sample_rate, "frame_size": self.models.frame_size,
                "frame_ms": self.models.frame_ms, "voices": self.voice_list(), "default_voice": self.default_voice,
                "token_required": bool(srv.token) and not authed,
                "limits": {"max_message_bytes": srv.max_message_bytes, "max_messages_per_s": srv.max_messages_per_s,
                           "max_session_s": srv.max_session_s, "idle_timeout_s": srv.idle_timeout_s,
                           "send_queue_frames": srv.send_queue_frames, "max_backlog_s": srv.max_backlog_s}}

    def voice_list(self) -> list[dict]:
        return [{"name": n, "gender": v["gender"]} for n, v in self.models.voices.items()]

    def health(self) -> dict:
        workers = self.worker_stats()
        ticks = [t for w in self.worker_pool for t in list(w.tick_ms)]
        return {"status": "ok", "version": __version__, "uptime_s": round(time.monotonic() - self.started_at, 1),
                "sessions": len(self.sessions), "max_sessions": self.session_limit,
                "capacity": {"sessions": self.session_limit, "per_worker": self.capacity,
                             "batching": self.cfg.server.batching,
                             **{k: v for k, v in self.capacity_report.items() if k != "capacity"}},
                "tick_ms": percentiles(ticks, (50, 95, 99)), "worker_stats": workers,
                "conversations": sum(w["conversations"] for w in workers),
                "models": {**self.models.info, "loaded": True}, "voices": self.voice_list(),
                "default_voice": self.default_voice, "token_required": bool(self.cfg.server.token),
                "frame_ms": self.models.frame_ms, "workers": self.workers}

    def origin_allowed(self, request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: the token (if any) is what protects the server
        allowed = self.cfg.server.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        # Same origin as the page this server serves (cross-site WebSocket hijacking otherwise).
        host = request.headers.get("Host", "")
        parsed = urllib.parse.urlsplit(origin)
        return parsed.scheme in ("http", "https") and parsed.netloc == host

    def process_request(self, connection, request):
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        def respond(status: int, reason: str, body: bytes, content_type: str, extra=()):
            headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                               ("Connection", "close"), *extra])
            return Response(status, reason, headers, body)

        def text(status, reason, msg):
            return respond(status, reason, (msg + "\n").encode(), "text/plain; charset=utf-8")

        url = urllib.parse.urlsplit(request.path)
        path = url.path
        if path == "/ws":
            if not self.origin_allowed(request):
                self.metrics.errors["origin"] += 1
                log("origin_refused", logging.WARNING, origin=request.headers.get("Origin"))
                return text(403, "Forbidden", "origin not allowed")
            token = urllib.parse.parse_qs(url.query).get("token")
            if token is not None and self.cfg.server.token and \
                    not hmac.compare_digest(token[0].encode(), self.cfg.server.token.encode()):
                self.metrics.errors["unauthorized"] += 1
                log("token_refused", logging.WARNING, remote=str(connection.remote_address))
                return text(401, "Unauthorized", "wrong token")
            return None  # go on with the WebSocket handshake
        if path == "/health":
            body = json.dumps(self.health(), ensure_ascii=False).encode()
            return respond(200, "OK", body, "application/json", [("Cache-Control", "no-store")])
        if path == "/metrics":
            body = self.metrics.render(len(self.sessions), self.cfg.server.max_sessions,
                                       time.monotonic() - self.started_at, self.session_limit,
                                       self.worker_stats()).encode()
            return respond(200, "OK", body, "text/plain; version=0.0.4")
        file = static_file(path)
        if file is None:
            return text(404, "Not Found", "not found")
        return respond(200, "OK", file.read_bytes(),
                       CONTENT_TYPES.get(file.suffix, "application/octet-stream"), PAGE_HEADERS)

    # --- WebSocket sessions ------------------------------------------------------------------------
    async def handler(self, ws) -> None:
        srv = self.cfg.server
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query)
        authed = not srv.token or "token" in query  # a wrong ?token= was refused at the handshake
        if self.full():  # admission: the next one is told at once, the admitted ones stay real time
            self.metrics.errors["busy"] += 1
            self.metrics.closes[CLOSE_TRY_LATER] += 1
            log("busy", logging.WARNING, sessions=len(self.sessions), conversations=self.conversations(),
                remote=str(ws.remote_address))
            try:
                await ws.send(json.dumps(self.busy_message()))
                await close_ws(ws, CLOSE_TRY_LATER, "server busy")
            except Exception:
                pass
            return
        session = Session(self, ws, authed)
        self.sessions[session.id] = session  # no await since the check: no other handler slips in
        self.metrics.sessions_total += 1
        log("session_start", session=session.id, remote=session.remote, sessions=len(self.sessions))
        try:
            await session.run()
        finally:
            self.sessions.pop(session.id, None)

    async def serve(self, host: str, port: int, ssl_context=None, ready=None) -> None:
        """Run until stop_event is set (SIGINT/SIGTERM in main()), then close every session with
        1001. `ready(port)` is called once listening (port 0 picks a free one)."""
        from websockets.asyncio.server import serve

        self.stop_event = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        srv = self.cfg.server
        async with serve(self.handler, host, port, process_request=self.process_request,
                         max_size=srv.max_message_bytes, max_queue=32, close_timeout=2.0,
                         ping_interval=20, ping_timeout=20, ssl=ssl_context) as server:
            self.port = server.sockets[0].getsockname()[1]
            log("listening", host=host, port=self.port, url=f"{'https' if ssl_context else 'http'}://{host}:{self.port}/",
                workers=self.workers, max_sessions=self.session_limit, capacity_per_worker=self.capacity,
                batching=srv.batching, capacity_tick_ms=self.capacity_report.get("tick_ms"),
                voices=list(self.models.voices),
                token_required=bool(srv.token), **self.models.info)
            if ready is not None:
                ready(self.port)
            await self.stop_event.wait()
            log("shutdown", sessions=len(self.sessions))
            await asyncio.gather(*(s.shutdown() for s in list(self.sessions.values())))
            self.metrics.closes[CLOSE_GOING_AWAY] += len(self.sessions)
            server.close(code=CLOSE_GOING_AWAY, reason="server shutting down")
            await server.wait_closed()
        for w in self.worker_pool:
            w.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)
        log("stopped")

    def stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()


def static_file(path: str) -> Path | None:
    """A file under static/ for a URL path; None for anything else (no dotfiles, no escaping)."""
    name = urllib.parse.unquote(path).lstrip("/") or "index.html"
    parts = name.split("/")
    if any(not p or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None
    root = STATIC_DIR.resolve()
    file = (root / name).resolve()
    if not file.is_relative_to(root) or not file.is_file():
        return None
    return file


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)  # one conversation per core: parallelism comes from the sessions


# --- command line ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Full-duplex Telugu voice agent: page, /health, /metrics and /ws on one port")
    add_config_args(p)
    p.add_argument("--host", help="bind address (server.host, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (server.port, default 8765; 0 picks a free one)")
    p.add_argument("--codec", help="codec checkpoint (default checkpoints/codec.safetensors)")
    p.add_argument("--s2s", help="S2S checkpoint (default checkpoints/s2s.safetensors)")
    p.add_argument("--voice_bank", help="voice bank JSON (default checkpoints/voice_bank.json; without one the "
                                        "four agent voices speak unconditioned)")
    p.add_argument("--asr", help="ear checkpoint (default checkpoints/asr.safetensors when it exists): the user's "
                                 "transcript and voice activity")
    p.add_argument("--agent", choices=["auto", "s2s", "v2"], default="auto",
                   help="v2: the ear, the brain and the mouth (voice_agent.py); s2s: the end-to-end S2S model; "
                        "auto: v2 when checkpoints/brain.safetensors and checkpoints/mouth.safetensors exist")
    p.add_argument("--brain", help="with the v2 agent: the brain checkpoint (default checkpoints/brain.safetensors)")
    p.add_argument("--mouth", help="with the v2 agent: the mouth checkpoint (default checkpoints/mouth.safetensors)")
    p.add_argument("--ear_lm", help="with the v2 agent: the ear's language model (default checkpoints/ear_lm.json; "
                                   "none: the brain reads the greedy transcript)")
    p.add_argument("--no_asr", action="store_true", help="no ear: the S2S model's own transcript and the energy VAD")
    p.add_argument("--random_weights", action="store_true",
                   help="untrained models of the config's size (load tests, a page demo before training)")
    p.add_argument("--token", help="shared secret: ?token= in the URL or \"token\" in the start message (server.token)")
    p.add_argument("--allowed_origin", action="append", default=None, metavar="ORIGIN",
                   help="browser Origin allowed besides the server's own (repeatable; * for any)")
    p.add_argument("--workers", type=int, help="model threads, each stepping its conversations as one batch "
                                               "(default: min(cores, max_sessions))")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tls_cert", help="PEM certificate: serve https/wss (browsers need it for the mic off localhost)")
    p.add_argument("--tls_key", help="PEM private key for --tls_cert")
    p.add_argument("--log_level", default="info")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = load_config(resolve_preset(args.config), args.overrides)
    except ConfigError as e:
        log("config_error", logging.ERROR, error=str(e))
        return 2
    srv = cfg.server
    for flag, key in (("host", "host"), ("port", "port"), ("token", "token"), ("allowed_origin", "allowed_origins")):
        value = getattr(args, flag)
        if value is not None:
            setattr(srv, key, value)
    import torch

    torch.set_num_threads(1)
    try:
        models = load_models(cfg, args.codec, args.s2s, args.voice_bank, args.random_weights, args.device,
                             args.asr, not args.no_asr, args.agent, args.brain, args.mouth, args.ear_lm)
    except (FileNotFoundError, ValueError) as e:
        log("model_error", logging.ERROR, error=str(e),
            hint="pass --codec/--s2s paths, or --random_weights to try the page with untrained models")
        return 2
    ssl_context = None
    if args.tls_cert:
        import ssl
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    if srv.host not in ("127.0.0.1", "localhost", "::1") and not srv.token:
        log("exposed_without_token", logging.WARNING, host=srv.host,
            note="anyone who can reach this address can talk to the agent: consider --token")
    server = Server(models, cfg, args.workers)

    async def run():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve(srv.host, srv.port, ssl_context)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
