"""A small client for streaming_server_advanced.py: talk to the agent from a WAV file.

    python s2s_client.py IN.wav OUT.wav [--url ws://127.0.0.1:8765/ws] [--voice NAME] [--realtime]
    python s2s_client.py bench [--url ...] [--sessions 1 2 3] [--seconds 20] [IN.wav]

The first streams IN.wav (any rate: resampled to 24 kHz) in 20 ms chunks, saves the agent's reply
channel (one output frame per input frame, so OUT.wav lines up with IN.wav) and prints the
transcript and latency figures as JSON. Without --realtime it sends as fast as the server answers
(at most `window` frames ahead), which is how tests and batch runs use it. `bench` runs N
real-time conversations at once for each N and says which N the server still holds in real time.

`converse()` is the reusable part: it returns the audio, the text and per-frame send/receive
timestamps (input frame i's last chunk sent, output frame i received).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

KIND_AUDIO, KIND_AGENT_TEXT, KIND_USER_TEXT = 0x01, 0x02, 0x03
SAMPLE_RATE = 24000  # what the protocol carries; the server's ready message confirms it


@dataclass
class Conversation:
    ready: dict
    audio: np.ndarray  # float32 at 24 kHz, frames_out * frame_size samples
    agent_text: str
    user_text: str
    send_times: list[float]  # perf_counter when input frame i was complete on the wire
    recv_times: list[float]  # perf_counter when output frame i arrived
    messages: list[dict] = field(default_factory=list)  # every JSON message, in order
    stopped: dict | None = None
    close_code: int | None = None

    @property
    def frame_ms(self) -> float:
        return float(self.ready["frame_ms"])

    def rtt_ms(self) -> np.ndarray:
        n = min(len(self.send_times), len(self.recv_times))
        return (np.array(self.recv_times[:n]) - np.array(self.send_times[:n])) * 1000

    def latency(self) -> dict:
        """Per-frame round trip (frame complete on the client -> its answer back) and the server's own
        figures (compute per frame, end to end in the server, response gap after the user stops)."""
        rtt = self.rtt_ms()
        stats = [m for m in self.messages if m.get("type") == "stats"]
        server = (self.stopped or {}).get("stats") or (stats[-1] if stats else {})
        out = {"frames_in": len(self.send_times), "frames_out": len(self.recv_times),
               "algorithmic_delay_ms": server.get("algorithmic_delay_ms"),
               "server_compute_ms": server.get("compute_ms"), "server_e2e_ms": server.get("e2e_ms"),
               "response_gap_ms": server.get("response_gap_ms")}
        if len(rtt):
            out["rtt_ms"] = {"p50": round(float(np.percentile(rtt, 50)), 2),
                             "p95": round(float(np.percentile(rtt, 95)), 2), "max": round(float(rtt.max()), 2)}
        return out


def _pcm16(pcm: np.ndarray) -> bytes:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


async def converse(url: str, pcm: np.ndarray, *, voice: str | None = None, token: str | None = None,
                   realtime: bool = False, chunk_ms: int = 20, window: int = 8, origin: str | None = None,
                   start: dict | None = None, timeout: float = 30.0, on_message=None) -> Conversation:
    """Stream `pcm` (float32, 24 kHz, zero-padded here to whole frames) through one conversation.
    realtime paces chunks by the wall clock; otherwise at most `window` frames are in flight."""
    from websockets.asyncio.client import connect

    async with connect(url, origin=origin, max_size=2**22, open_timeout=timeout) as ws:
        ready = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if ready.get("type") != "ready":
            raise RuntimeError(f"expected ready, got {ready}")
        if ready["sample_rate"] != SAMPLE_RATE:
            raise RuntimeError(f"server speaks {ready['sample_rate']} Hz, this client {SAMPLE_RATE} Hz")
        fs = int(ready["frame_size"])
        pcm = np.asarray(pcm, dtype=np.float32)
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % fs, np.float32)])
        n_frames = len(pcm) // fs
        chunk = max(1, SAMPLE_RATE * chunk_ms // 1000)
        msg = {"type": "start", **(start or {})}
        if voice:
            msg["voice"] = voice
        if token:
            msg["token"] = token
        await ws.send(json.dumps(msg))

        conv = Conversation(ready, np.zeros(0, np.float32), "", "", [], [], [ready])
        audio, agent, user = [], [], []
        got_frame = asyncio.Event()
        started, stopped = asyncio.Event(), asyncio.Event()

        async def receive():
            async for message in ws:
                if isinstance(message, str):
                    m = json.loads(message)
                    conv.messages.append(m)
                    if on_message is not None:
                        on_message(m)
                    if m["type"] == "started":
                        started.set()
                    elif m["type"] == "stopped":
                        conv.stopped = m
                        stopped.set()
                        return
                    elif m["type"] == "error":
                        raise RuntimeError(f"server error {m['code']}: {m['message']}")
                elif message[0] == KIND_AUDIO:
                    conv.recv_times.append(time.perf_counter())
                    audio.append(np.frombuffer(message[1:], dtype="<i2").astype(np.float32) / 32768.0)
                    got_frame.set()
                elif message[0] == KIND_AGENT_TEXT:
                    agent.append(message[1:].decode("utf-8"))
                elif message[0] == KIND_USER_TEXT:
                    user.append(message[1:].decode("utf-8"))

        async def send():
            await asyncio.wait_for(started.wait(), timeout)
            t0 = time.perf_counter()
            sent = 0
            for i in range(0, len(pcm), chunk):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + i / SAMPLE_RATE - time.perf_counter()))
                else:
                    while (sent + chunk) // fs > len(conv.recv_times) + window:
                        got_frame.clear()
                        await asyncio.wait_for(got_frame.wait(), timeout)
                await ws.send(bytes([KIND_AUDIO]) + _pcm16(pcm[i:i + chunk]))
                sent = min(i + chunk, len(pcm))
                now = time.perf_counter()
                while len(conv.send_times) < sent // fs:
                    conv.send_times.append(now)
            while len(conv.recv_times) < n_frames:  # every frame answered, then stop
                got_frame.clear()
                await asyncio.wait_for(got_frame.wait(), timeout)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(stopped.wait(), timeout)

        receiver = asyncio.create_task(receive())
        sender = asyncio.create_task(send())
        done, _ = await asyncio.wait([receiver, sender], return_when=asyncio.FIRST_EXCEPTION)
        for task in (receiver, sender):
            if task in done and task.exception() is not None:
                (sender if task is receiver else receiver).cancel()
                raise task.exception()
        await sender
        receiver.cancel()
        conv.audio = np.concatenate(audio) if audio else np.zeros(0, np.float32)
        conv.agent_text, conv.user_text = "".join(agent).strip(), "".join(user).strip()
    conv.close_code = ws.close_code
    return conv


# --- bench: concurrent real-time conversations -----------------------------------------------------

def bench_input(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like input without a TTS: 1.5 s bursts of a gliding harmonic tone, 1 s pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    on = (t % 2.5) < 1.5
    return (0.15 * voiced * on + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


async def bench(url: str, sessions: list[int], seconds: float, pcm: np.ndarray | None = None,
                token: str | None = None) -> list[dict]:
    """For each N: N real-time conversations at once. Real time holds when every conversation's
    round trip stays bounded (p95 under 3 frames) and does not drift (last second vs first)."""
    rows = []
    for n in sessions:
        audio = pcm if pcm is not None else bench_input(seconds)
        results = await asyncio.gather(*(converse(url, audio, token=token, realtime=True, timeout=60)
                                         for _ in range(n)), return_exceptions=True)
        row = {"sessions": n, "ok": 0, "rtt_p50_ms": [], "rtt_p95_ms": [], "drift_ms": [], "compute_p50_ms": [],
               "compute_p95_ms": [], "cpu_p50_ms": [], "errors": []}
        frame_ms = 40.0
        for r in results:
            if isinstance(r, Exception):
                row["errors"].append(repr(r))
                continue
            rtt = r.rtt_ms()
            per_s = max(1, int(1000 / r.frame_ms))
            row["ok"] += 1
            row["rtt_p50_ms"].append(round(float(np.percentile(rtt, 50)), 1))
            row["rtt_p95_ms"].append(round(float(np.percentile(rtt, 95)), 1))
            row["drift_ms"].append(round(float(np.median(rtt[-per_s:]) - np.median(rtt[per_s:2 * per_s])), 1))
            server = (r.stopped or {}).get("stats", {})
            row["compute_p50_ms"].append(server.get("compute_ms", {}).get("p50"))
            row["compute_p95_ms"].append(server.get("compute_ms", {}).get("p95"))
            row["cpu_p50_ms"].append(server.get("cpu_ms", {}).get("p50"))
            frame_ms = r.frame_ms
        row["realtime"] = row["ok"] == n and all(p <= 3 * frame_ms for p in row["rtt_p95_ms"]) and \
            all(d <= frame_ms for d in row["drift_ms"])
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


# --- command line ----------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        p = argparse.ArgumentParser(prog="s2s_client.py bench", description="concurrent real-time conversations")
        p.add_argument("wav", nargs="?", help="input (default: a synthetic speech-like signal)")
        p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
        p.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 3])
        p.add_argument("--seconds", type=float, default=20.0)
        p.add_argument("--token")
        args = p.parse_args(argv[1:])
        pcm = None
        if args.wav:
            from audio_io import load_audio
            pcm = load_audio(args.wav, SAMPLE_RATE)
        rows = asyncio.run(bench(args.url, args.sessions, args.seconds, pcm, args.token))
        held = [r["sessions"] for r in rows if r["realtime"]]
        print(json.dumps({"max_realtime_sessions": max(held) if held else 0, "runs": rows}, indent=1))
        return 0

    p = argparse.ArgumentParser(description="Talk to the Telugu voice agent from a WAV file")
    p.add_argument("input", help="WAV (any rate, mono or stereo)")
    p.add_argument("output", help="where to save the agent's reply channel (24 kHz PCM16 WAV)")
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--voice", help="agent voice (the server's ready message lists them)")
    p.add_argument("--token")
    p.add_argument("--realtime", action="store_true", help="send at the speed of speech (default: as fast as answered)")
    p.add_argument("--chunk_ms", type=int, default=20, help="chunk size, 20-40 ms like a browser")
    p.add_argument("--tail_s", type=float, default=2.0, help="silence sent after the input, so the agent can answer")
    args = p.parse_args(argv)
    from audio_io import load_audio, save_wav

    pcm = load_audio(args.input, SAMPLE_RATE)
    pcm = np.concatenate([pcm, np.zeros(int(args.tail_s * SAMPLE_RATE), np.float32)])
    try:
        conv = asyncio.run(converse(args.url, pcm, voice=args.voice, token=args.token, realtime=args.realtime,
                                    chunk_ms=args.chunk_ms))
    except (OSError, RuntimeError, asyncio.TimeoutError) as e:
        print(json.dumps({"error": str(e) or type(e).__name__}), flush=True)
        return 1
    save_wav(args.output, conv.audio, SAMPLE_RATE)
    print(json.dumps({"output": args.output, "voice": conv.ready.get("default_voice") if not args.voice else args.voice,
                      "agent_text": conv.agent_text, "user_text": conv.user_text,
                      "transcript": (conv.stopped or {}).get("transcript", []), "latency": conv.latency()},
                     ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
