"""What one worker tick costs on this CPU: frame_scheduler.ConversationBatch.step over B conversations
(the ear, the S2S step with its codec encoder, the codec decoder, each conversation's context
manager), the shipped models, every KV cache and the ear's window full (a long conversation's steady
state), one torch thread (a worker's setting).

    python tools/tick_cost.py --batches 1 2 3 4 8
    python tools/tick_cost.py --batches 3 --profile cprofile     # where the time goes, per function
    python tools/tick_cost.py --batches 3 --profile torch        # per torch operator
    python tools/tick_cost.py --compare /other/checkout            # before/after, turn about

Prints one JSON line per batch size: the tick's wall time (median, 10th percentile, fastest) and
its CPU time (median, fastest, median per conversation), in ms: on a loaded machine the CPU time
is the steadier figure. --compare times another checkout (its code and checkpoints, in a process of
its own) in turns with this one, so that a shared machine's drifting load falls on both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def build(root: Path, batch: int, audio):
    import torch

    import frame_scheduler
    import streaming_server_advanced as server
    from config import load_config

    cfg = load_config("tiny")
    models = server.load_models(cfg, voice_bank_path=root / "checkpoints" / "voice_bank.json")
    voice = next(iter(models.voices))
    shared = frame_scheduler.ConversationBatch(models)
    convs = []
    for seed in range(batch):
        conv = frame_scheduler.Conversation(models, cfg, voice, seed=seed)
        shared.add(conv)
        conv.batch = shared
        convs.append(conv)
    with torch.inference_mode():  # the steady state: the cost depends on how many keys, not which
        window = models.s2s.cfg.context_frames
        for c in shared.s2s.caches:
            c.k.normal_(), c.v.normal_()
            c.count = window
        for conv in convs:
            conv.gen.step_index = window
        if shared.ear_state is not None:
            s = shared.ear_state
            s.keys.normal_(), s.values.normal_()
            s.valid.fill_(True)
            s.position.fill_(models.ear.cfg.asr.context_frames)
    fs = models.frame_size
    frames = [audio[i * fs:(i + 1) * fs] for i in range(len(audio) // fs)]
    return shared, convs, frames


def tick_times(shared, convs, frames, ticks: int, start: int = 0) -> tuple[list[float], list[float]]:
    """Wall and CPU (this thread's) ms of each tick. On a machine with more runnable threads than
    cores the wall time includes waiting for a core; the CPU time does not."""
    wall, cpu = [], []
    for i in range(ticks):
        items = [(c, frames[(start + i + 7 * j) % len(frames)]) for j, c in enumerate(convs)]
        t0, c0 = time.perf_counter(), time.thread_time()
        shared.step(items)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    return wall, cpu


def speechlike_audio():
    """Noise bursts and pauses, the same for every run (the ear and the context manager take other
    paths on silence than on sound)."""
    import numpy as np

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(24000 * 8)).astype(np.float32)
    return audio * np.repeat(rng.random(8 * 5) < 0.6, 24000 // 5)


def summary(name: str, batch: int, wall: list[float], cpu: list[float]) -> dict:
    wall, cpu = sorted(wall), sorted(cpu)
    return {"root": name, "batch": batch, "tick_ms_p50": round(statistics.median(wall), 2),
            "tick_ms_p10": round(wall[len(wall) // 10], 2), "tick_ms_min": round(wall[0], 2),
            "cpu_ms_p50": round(statistics.median(cpu), 2), "cpu_ms_min": round(cpu[0], 2),
            "cpu_ms_per_conversation": round(statistics.median(cpu) / batch, 2),
            "load": round(os.getloadavg()[0], 2)}


def serve(root: Path, batch: int) -> None:
    """--compare's other side: build the batch, then run the ticks asked for on stdin, one JSON
    line of (wall, cpu) lists back per request."""
    shared, convs, frames = build(root, batch, speechlike_audio())
    tick_times(shared, convs, frames, 10)
    print("ready", flush=True)
    done = 10
    for line in sys.stdin:
        n = int(line)
        print(json.dumps(tick_times(shared, convs, frames, n, done)), flush=True)
        done += n


def compare(root: Path, other: Path, batch: int, ticks: int, rounds: int = 10) -> list[dict]:
    """This checkout and `other` (a process of its own, idle while this one ticks), `rounds` turns
    each of ticks / rounds ticks: a shared machine's load drifts between the turns alike."""
    import subprocess

    child = subprocess.Popen([sys.executable, __file__, "--root", str(other), "--serve", str(batch)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    shared, convs, frames = build(root, batch, speechlike_audio())
    tick_times(shared, convs, frames, 10)
    assert child.stdout.readline().strip() == "ready"
    per_turn = max(1, ticks // rounds)
    times = {str(other): ([], []), str(root): ([], [])}
    for turn in range(rounds):
        child.stdin.write(f"{per_turn}\n")
        child.stdin.flush()
        wall, cpu = json.loads(child.stdout.readline())
        times[str(other)][0].extend(wall), times[str(other)][1].extend(cpu)
        wall, cpu = tick_times(shared, convs, frames, per_turn, 10 + turn * per_turn)
        times[str(root)][0].extend(wall), times[str(root)][1].extend(cpu)
    child.stdin.close()
    child.wait()
    return [summary(name, batch, wall, cpu) for name, (wall, cpu) in times.items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 3, 4, 8])
    p.add_argument("--ticks", type=int, default=60, help="ticks timed per batch size (per checkout)")
    p.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                   help="the checkout whose code and checkpoints run (default: this one)")
    p.add_argument("--compare", metavar="OTHER_ROOT", help="time another checkout too, turn about with this one")
    p.add_argument("--profile", choices=["cprofile", "torch"], help="profile the ticks instead of timing them")
    p.add_argument("--top", type=int, default=35, help="rows of the profile")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # --compare's child: the batch size
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)
    import torch

    torch.set_num_threads(1)
    if args.serve:
        return serve(root, args.serve)
    audio = speechlike_audio()
    for batch in args.batches:
        if args.compare:
            for line in compare(root, Path(args.compare).resolve(), batch, args.ticks):
                print(json.dumps(line), flush=True)
            continue
        shared, convs, frames = build(root, batch, audio)
        tick_times(shared, convs, frames, 10)  # warm-up: first calls allocate
        if args.profile == "cprofile":
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            tick_times(shared, convs, frames, args.ticks, 10)
            prof.disable()
            print(f"--- batch {batch}, {args.ticks} ticks, cProfile (times include its overhead)")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
        elif args.profile == "torch":
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                tick_times(shared, convs, frames, args.ticks, 10)
            print(f"--- batch {batch}, {args.ticks} ticks, torch.profiler")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
        else:
            print(json.dumps(summary(str(root), batch, *tick_times(shared, convs, frames, args.ticks, 10))), flush=True)


if __name__ == "__main__":
    main()
