"""What one worker tick costs on this CPU: frame_scheduler.ConversationBatch.step over B conversations
(the ear, the S2S step with its codec encoder, the codec decoder, each conversation's context
manager), the shipped models, every KV cache and the ear's window full (a long conversation's steady
state), one torch thread (a worker's setting).

    python tools/tick_cost.py --batches 1 2 3 4 8
    python tools/tick_cost.py --batches 3 --profile cprofile     # where the time goes, per function
    python tools/tick_cost.py --batches 3 --profile torch        # per torch operator
    python tools/tick_cost.py --root /other/worktree ...          # another checkout's code, same tool

Prints one JSON line per batch size: the tick's wall time (median, 10th percentile, fastest) and
its CPU time (median, fastest, median per conversation), in ms: on a loaded machine the CPU time
is the steadier figure. Compare two checkouts by running them one after the other in the same minute
(a shared machine's load moves the figures more than small changes do).
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 3, 4, 8])
    p.add_argument("--ticks", type=int, default=60, help="ticks timed per batch size")
    p.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                   help="the checkout whose code and checkpoints run (default: this one)")
    p.add_argument("--profile", choices=["cprofile", "torch"], help="profile the ticks instead of timing them")
    p.add_argument("--top", type=int, default=35, help="rows of the profile")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)
    import numpy as np
    import torch

    torch.set_num_threads(1)
    # Speech-like input: noise bursts and pauses, the same for every run (the ear and the context
    # manager take other paths on silence than on sound).
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(24000 * 8)).astype(np.float32)
    audio *= np.repeat(rng.random(8 * 5) < 0.6, 24000 // 5)
    for batch in args.batches:
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
            continue
        if args.profile == "torch":
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                tick_times(shared, convs, frames, args.ticks, 10)
            print(f"--- batch {batch}, {args.ticks} ticks, torch.profiler")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
            continue
        wall, cpu = (sorted(t) for t in tick_times(shared, convs, frames, args.ticks, 10))
        print(json.dumps({"root": str(root), "batch": batch, "tick_ms_p50": round(statistics.median(wall), 2),
                          "tick_ms_p10": round(wall[len(wall) // 10], 2), "tick_ms_min": round(wall[0], 2),
                          "cpu_ms_p50": round(statistics.median(cpu), 2), "cpu_ms_min": round(cpu[0], 2),
                          "cpu_ms_per_conversation": round(statistics.median(cpu) / batch, 2),
                          "load": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
