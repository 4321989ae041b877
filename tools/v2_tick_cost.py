"""The v2 agent's worker tick (voice_agent.VoiceAgent.step: the ear, the mouth and the pitch codec
over a batch) at growing batch sizes, every conversation's mouth speaking (the costlier state), on
one thread. Prints median and p95 tick ms and ms per conversation.

    python tools/v2_tick_cost.py [--brain B] [--mouth M] [--batches 1 2 4 6 8] [--ticks 40]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import voice_agent  # noqa: E402

ANSWER = "ఇప్పుడు సమయం మధ్యాహ్నం రెండు గంటల ఇరవై నిమిషాలు. ఇంకా ఏమైనా కావాలా? నేను మీకు సహాయం చేస్తాను."


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ear"), p.add_argument("--brain"), p.add_argument("--mouth")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 6, 8])
    p.add_argument("--ticks", type=int, default=40)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    models = voice_agent.load(args.ear, args.brain, args.mouth)
    for b in args.batches:
        agent = voice_agent.VoiceAgent(models.ear, models.brain, models.mouth)
        sessions = [agent.session(models.mouth.m.voices[i % len(models.mouth.m.voices)]) for i in range(b)]
        for s in sessions:
            agent.mouth.say(agent.mouth_state, s.row, ANSWER)
        times = []
        for t in range(args.ticks + 3):
            frames = [(0.05 * rng.standard_normal(agent.frame_size)).astype(np.float32) for _ in sessions]
            t0 = time.perf_counter()
            agent.step(sessions, frames)
            if t >= 3:
                times.append((time.perf_counter() - t0) * 1000)
        med = statistics.median(times)
        print(f"batch {b}: tick p50 {med:.1f} ms, p95 {np.percentile(times, 95):.1f} ms, "
              f"{med / b:.1f} ms per conversation", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
