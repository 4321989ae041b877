"""Hold it for an hour: the server at capacity, conversations back to back with real speech, pauses
and barge-ins, while another client sends malformed messages. Records the server's memory, its
tick time and every conversation's per-frame delay over time, and prints their slopes.

    python soak.py --minutes 60 --json docs/soak.json --plot docs/soak.png   # the hour (README)
    python soak.py --minutes 2 --tiny --clients 3                            # what the test suite runs

Models as in benchmark_latency.py (shipped checkpoints where present, else random weights of the
config's size; --tiny for tiny ones). The server runs as `streaming_server_advanced.py` in a
subprocess with its capacity measured at start-up (or --capacity); --clients defaults to that
capacity. Each client runs conversations of --conversation_s seconds one after another (so
conversations keep joining and leaving the workers' batches): a spoken Telugu question, 1.5 s of
quiet, the next question; the next question talks over an agent that is still answering, which is
a barge-in. The malformed client (its own process) connects without starting a conversation and
sends --malformed messages of every wrong kind (bad JSON, unknown types, bad kind bytes, odd
audio, audio before start, bad start fields, oversize, floods), reconnecting whenever the server
closes it.

Reported: server memory (RSS) and tick time (p50 of the last ticks, from /health) every
--sample_s, and each conversation's per-frame delay per minute; the slope of each over the run
(per hour), memory growth after the first tenth of the run (warm-up), conversations dropped (an
error, or a frame without its answer), conversations that fell behind (a minute with per-frame
delay p95 over 100 ms), and whether the server is still up and answering /health at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import benchmark_latency as bl

REALTIME_P95_MS = bl.REALTIME_P95_MS


# --- the malformed client --------------------------------------------------------------------------

def malformed_messages(rng: random.Random, frame_bytes: int):
    """One wrong message at a time, of every kind the protocol refuses."""
    kinds = [
        lambda: "{not json",
        lambda: json.dumps([1, 2, 3]),
        lambda: json.dumps({"type": 7}),
        lambda: json.dumps({"type": "dance"}),
        lambda: json.dumps({"type": "stop"}),
        lambda: json.dumps({"type": "start", "voice": "nobody"}),
        lambda: json.dumps({"type": "start", "temperature": "hot"}),
        lambda: json.dumps({"type": "start", "top_k": -3}),
        lambda: bytes([0x07]) + os.urandom(10),
        lambda: bytes([0x02]) + "అ".encode(),
        lambda: b"",
        lambda: bytes([0x01]) + os.urandom(frame_bytes + 1),  # odd length, and before start
        lambda: bytes([0x01]) + os.urandom(2 * rng.randint(1, 500)),  # audio before start
        lambda: "\x00" * rng.randint(1, 100),
        lambda: json.dumps({"type": "ping", "t": "x" * rng.randint(0, 1000)}),  # not wrong: mixed in
    ]
    while True:
        yield rng.choice(kinds)()


async def _malformed(url: str, count: int, seconds: float, frame_bytes: int, seed: int = 0) -> dict:
    from websockets.asyncio.client import connect

    rng, sent, connections, closes = random.Random(seed), 0, 0, {}
    messages = malformed_messages(rng, frame_bytes)
    t0 = time.monotonic()
    while sent < count and time.monotonic() - t0 < seconds + 30:
        ws = None
        try:
            async with connect(url, max_size=2**22) as ws:
                connections += 1
                await ws.recv()  # ready (or busy)

                async def drain():
                    async for _ in ws:
                        pass
                reader = asyncio.create_task(drain())
                while sent < count and not reader.done():
                    await ws.send(next(messages) if rng.random() > 0.002 else b"\x01" + b"\x00" * 70000)
                    sent += 1
                    # spread the messages over the run, in bursts
                    await asyncio.sleep(max(0.0, (t0 + seconds * sent / count) - time.monotonic()) if rng.random() < 0.5
                                        else 0)
                reader.cancel()
        except Exception:  # noqa: BLE001: the server closing on us is the point
            await asyncio.sleep(0.01)
        code = str(ws.close_code) if ws is not None else "refused"
        closes[code] = closes.get(code, 0) + 1  # by the server's close code
    return {"sent": sent, "connections": connections, "closes": closes}


def malformed_process(url: str, count: int, seconds: float, frame_bytes: int, out) -> None:
    out.put(asyncio.run(_malformed(url, count, seconds, frame_bytes)))


# --- the conversations -------------------------------------------------------------------------------

async def conversation_client(url: str, audio: np.ndarray, deadline: float, index: int, t0: float, bm) -> list[dict]:
    """Conversations back to back until the deadline: per conversation its start (s into the run),
    per-frame delays with their times, frames in and out, barge-ins, and the error if it failed."""
    import s2s_client

    d, fs, out, k = bm.s2s.delay, bm.codec.frame_size, [], 0
    while time.perf_counter() < deadline:
        start = time.perf_counter() - t0
        rec = {"client": index, "start_s": round(start, 2)}
        try:
            conv = await s2s_client.converse(url, audio, realtime=True, timeout=60, start={"seed": 1000 * index + k})
            send, recv = np.array(conv.send_times), np.array(conv.recv_times)
            n = min(len(send), len(recv))
            rec.update(frames_in=len(send), frames_out=len(recv),
                       delay_t_s=[round(x - t0, 3) for x in send[:n - d]],
                       delay_ms=[round(x, 2) for x in ((recv[d:n] - send[:n - d]) * 1000)],
                       barge_ins=(conv.stopped or {}).get("stats", {}).get("barge_ins", 0),
                       close_code=conv.close_code)
        except Exception as e:  # noqa: BLE001: a dropped conversation is a finding
            rec.update(error=f"{type(e).__name__}: {e}"[:200], frames_in=len(audio) // fs, frames_out=0)
        out.append(rec)
        k += 1
    return out


async def sampler(http: str, pid: int, deadline: float, every_s: float, t0: float) -> list[dict]:
    samples = []
    while time.perf_counter() < deadline:
        try:
            h = await asyncio.to_thread(bl.server_health, http)
            samples.append({"t_s": round(time.perf_counter() - t0, 1), "rss_mb": round(bl.process_rss_mb(pid), 2),
                            "cpu_s": round(bl.process_cpu_s(pid), 2), "tick_ms": h.get("tick_ms", {}),
                            "conversations": h.get("conversations"), "sessions": h.get("sessions")})
        except Exception as e:  # noqa: BLE001
            samples.append({"t_s": round(time.perf_counter() - t0, 1), "error": repr(e)})
        await asyncio.sleep(every_s)
    return samples


def slope_per_hour(t_s, values) -> float | None:
    t, v = np.asarray(t_s, float), np.asarray(values, float)
    ok = np.isfinite(t) & np.isfinite(v)
    if ok.sum() < 3:
        return None
    return round(float(np.polyfit(t[ok] / 3600.0, v[ok], 1)[0]), 3)


def analyse(res: dict) -> dict:
    """Slopes, memory growth after warm-up, dropped and behind conversations."""
    minutes = res["minutes"]
    samples = [s for s in res["samples"] if "error" not in s]
    warm = 0.1 * minutes * 60
    steady = [s for s in samples if s["t_s"] >= warm] or samples
    rss = [s["rss_mb"] for s in steady]
    tick = [s["tick_ms"].get("p50", math.nan) for s in steady]
    convs = res["conversations"]
    per_minute = {}
    for c in convs:
        for t, dms in zip(c.get("delay_t_s", []), c.get("delay_ms", [])):
            per_minute.setdefault(int(t // 60), []).append(dms)
    minute_p95 = {m: float(np.percentile(v, 95)) for m, v in sorted(per_minute.items())}
    behind = []
    for c in convs:
        by_min = {}
        for t, dms in zip(c.get("delay_t_s", []), c.get("delay_ms", [])):
            by_min.setdefault(int(t // 60), []).append(dms)
        if any(np.percentile(v, 95) >= REALTIME_P95_MS for v in by_min.values() if len(v) >= 25):
            behind.append(c["client"])
    dropped = [c for c in convs if "error" in c or c["frames_out"] < c["frames_in"]]
    all_delays = [x for c in convs for x in c.get("delay_ms", [])]
    return {
        "conversations": len(convs), "conversations_dropped": len(dropped),
        "dropped_errors": sorted({c.get("error", "frames unanswered")[:80] for c in dropped})[:5],
        "conversations_behind": len(behind), "barge_ins": sum(c.get("barge_ins", 0) for c in convs),
        "per_frame_delay_ms": bl.pct(all_delays),
        "delay_p95_by_minute_ms": {str(m): round(v, 1) for m, v in minute_p95.items()},
        "delay_p95_slope_ms_per_hour": slope_per_hour([m * 60 + 30 for m in minute_p95], list(minute_p95.values())),
        "rss_mb_first": rss[0] if rss else None, "rss_mb_last": rss[-1] if rss else None,
        "rss_mb_max": max(rss) if rss else None,
        "memory_growth_pct": round(100 * (rss[-1] - rss[0]) / rss[0], 2) if rss else None,
        "rss_slope_mb_per_hour": slope_per_hour([s["t_s"] for s in steady], rss),
        "tick_p50_ms_first": tick[0] if tick else None, "tick_p50_ms_last": tick[-1] if tick else None,
        "tick_p50_slope_ms_per_hour": slope_per_hour([s["t_s"] for s in steady], tick),
        "sample_errors": len(res["samples"]) - len(samples),
    }


def run(args, log=print) -> dict:
    t_start = time.monotonic()
    res = {"command": "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
           "minutes": args.minutes, "conversation_s": args.conversation_s,
           "machine": {"cpu_count": os.cpu_count(), "loadavg_start": bl.loadavg()}}
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        workdir = Path(tmp)
        bm = bl.BenchModels(args, workdir)
        res["models"] = bm.info()
        audio, source = bl.user_audio(args.conversation_s, bm.codec.sample_rate)
        res["audio"] = source
        server_args = bl.server_args(bm, 200) + ["--set", "server.max_sessions=64"]
        if args.capacity:
            server_args += ["--set", f"server.capacity={args.capacity}"]
        with bl.ServerProcess(server_args, workdir / "server.log", args.workers, 64, "cpu", bm.preset) as server:
            health = bl.server_health(server.http)
            res["capacity"] = health["capacity"]
            clients = args.clients or health["capacity"]["sessions"]
            res["clients"] = clients
            log(f"soak: {args.minutes} min, {clients} conversations at once "
                f"(capacity {health['capacity']['sessions']}), "
                f"{args.malformed} malformed messages, models {bm.source}; load {bl.loadavg()}")
            seconds = args.minutes * 60
            queue = multiprocessing.get_context("spawn").Queue()
            fuzz = multiprocessing.get_context("spawn").Process(
                target=malformed_process, args=(server.url, args.malformed, seconds, 2 * bm.codec.frame_size, queue))
            fuzz.start()

            async def everything():
                t0 = time.perf_counter()
                deadline = t0 + seconds
                tasks = [conversation_client(server.url, audio, deadline, i, t0, bm) for i in range(clients)]
                return await asyncio.gather(sampler(server.http, server.proc.pid, deadline, args.sample_s, t0), *tasks)

            samples, *per_client = asyncio.run(everything())
            fuzz.join(120)
            res["malformed"] = queue.get(timeout=5) if not queue.empty() else \
                {"error": "the malformed client did not report"}
            if fuzz.is_alive():
                fuzz.kill()
            res["samples"] = samples
            res["conversations"] = [c for cs in per_client for c in cs]
            res["server_alive"] = server.proc.poll() is None
            try:
                res["health_at_end"] = bl.server_health(server.http)["status"]
            except Exception as e:  # noqa: BLE001
                res["health_at_end"] = repr(e)
    res["summary"] = analyse(res)
    res["machine"]["loadavg_end"] = bl.loadavg()
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return res


def format_summary(res: dict) -> str:
    s, m = res["summary"], res["malformed"]
    crashed = not res["server_alive"] or res["health_at_end"] != "ok"
    return "\n".join([
        f"soak: {res['minutes']} min, {res['clients']} conversations at once (capacity {res['capacity']['sessions']}), "
        f"models {res['models']['source']}, load {res['machine']['loadavg_start']} -> {res['machine']['loadavg_end']}",
        f"  server: {'CRASHED or not answering' if crashed else 'up, /health ok'} at the end",
        f"  conversations: {s['conversations']} run, {s['conversations_dropped']} dropped, "
        f"{s['conversations_behind']} fell "
        f"behind (a minute with per-frame delay p95 >= {REALTIME_P95_MS:.0f} ms), {s['barge_ins']} barge-ins",
        f"  per-frame delay: p50 {s['per_frame_delay_ms'].get('p50')} ms, p95 {s['per_frame_delay_ms'].get('p95')} ms; "
        f"p95 by minute slope {s['delay_p95_slope_ms_per_hour']} ms/hour",
        f"  memory: {s['rss_mb_first']} -> {s['rss_mb_last']} MB after warm-up ({s['memory_growth_pct']} %), "
        f"slope {s['rss_slope_mb_per_hour']} MB/hour",
        f"  tick p50: {s['tick_p50_ms_first']} -> {s['tick_p50_ms_last']} ms, "
        f"slope {s['tick_p50_slope_ms_per_hour']} ms/hour",
        f"  malformed client: {m.get('sent')} messages over {m.get('connections')} connections, "
        f"closed with {m.get('closes')}",
    ] + ([f"  dropped: {e}" for e in s["dropped_errors"]]))


def plot(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [x for x in res["samples"] if "error" not in x]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    t = [x["t_s"] / 60 for x in samples]
    axes[0].plot(t, [x["rss_mb"] for x in samples])
    axes[0].set_title("server memory (RSS, MB)")
    axes[1].plot(t, [x["tick_ms"].get("p50", np.nan) for x in samples], label="p50")
    axes[1].plot(t, [x["tick_ms"].get("p95", np.nan) for x in samples], label="p95")
    axes[1].set_title("tick time (ms, last ticks)")
    axes[1].legend()
    by_min = res["summary"]["delay_p95_by_minute_ms"]
    axes[2].plot([int(k) + 0.5 for k in by_min], list(by_min.values()), "-o")
    axes[2].axhline(REALTIME_P95_MS, color="red", ls="--", lw=1)
    axes[2].set_title("per-frame delay p95 per minute (ms)")
    for ax in axes:
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
    fig.suptitle(f"soak: {res['clients']} conversations for {res['minutes']} min", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(path: Path, res: dict, plot_path: str | None) -> None:
    """Replace the "### Soak" block inside README's "## Latency" section (or add it at its end)."""
    import re

    body = ["### Soak", "", f"Measured with `{bl.shown_command(res['command'])}`: {res['clients']} conversations at "
            f"once for {res['minutes']:g} minutes, each client running {res.get('conversation_s', '?')} s "
            "conversations "
            f"back to back (the user: {res['audio']}), while another client sends {res['malformed'].get('sent')} "
            "malformed messages; the server's memory and tick time are read every few seconds, every conversation's "
            f"per-frame delay is kept. Models: {res['models']['source']} ({res['models']['s2s']}).", ""]
    if plot_path:
        body += [f"![soak]({plot_path})", ""]
    body += ["```", format_summary(res), "```", ""]
    block = "\n".join(body) + "\n"
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(r"^### Soak\n.*?(?=^## |^### |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        latency = re.compile(r"(^## Latency\n.*?)(?=^## |\Z)", re.S | re.M)
        text = latency.sub(lambda mt: mt.group(1).rstrip("\n") + "\n\n" + block + "\n", text, count=1) \
            if latency.search(text) else text.rstrip("\n") + "\n\n## Latency\n\n" + block
    path.write_text(text, encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="an hour at capacity: memory, tick time and per-frame delay over time")
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--clients", type=int, help="conversations at once (default: the server's capacity)")
    p.add_argument("--capacity", type=int, help="server.capacity per worker (default: measured at start-up)")
    p.add_argument("--workers", type=int, help="server workers (default: one per core)")
    p.add_argument("--malformed", type=int, default=10000, help="malformed messages from the other client")
    p.add_argument("--conversation_s", type=float, default=60.0, help="length of each conversation")
    p.add_argument("--sample_s", type=float, default=10.0, help="how often memory and tick time are read")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--plot", metavar="OUT.png")
    p.add_argument("--readme", metavar="README.md", help="write the summary as README's '### Soak' block")
    p.add_argument("--from_json", metavar="IN", help="no run: print, plot and write README from a saved --json")
    # models, as benchmark_latency.py takes them
    p.add_argument("--config", default="tiny")
    p.add_argument("--codec")
    p.add_argument("--s2s")
    p.add_argument("--voice_bank")
    p.add_argument("--asr")
    p.add_argument("--ear", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--random_weights", action="store_true")
    p.add_argument("--tiny", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    res = json.loads(Path(args.from_json).read_text(encoding="utf-8")) if args.from_json else \
        run(args, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_summary(res))
    if args.plot:
        plot(res, args.plot)
    if args.readme:
        update_readme(Path(args.readme), res, args.plot and os.path.relpath(args.plot, Path(args.readme).parent))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, ensure_ascii=False), encoding="utf-8")
    s = res["summary"]
    ok = res["server_alive"] and res["health_at_end"] == "ok" and s["conversations_dropped"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
