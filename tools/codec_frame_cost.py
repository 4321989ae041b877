"""What one 40 ms frame costs the streaming codec on this CPU: encode_step + decode_step of real
speech, one frame at a time, one torch thread (the server's setting).

    python tools/codec_frame_cost.py --checkpoint checkpoints/codec_pitch.safetensors
    python tools/codec_frame_cost.py --checkpoint checkpoints/codec.safetensors --clip some.wav

Prints the median, 90th percentile and fastest of encode, decode and both, in milliseconds; the
fastest is the figure nothing else on a shared machine interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import telugu_codec_fixed  # noqa: E402
from audio_io import load_audio, read_manifest  # noqa: E402


def frame_cost(codec, pcm: np.ndarray, frames: int) -> dict[str, list[float]]:
    enc_state, dec_state = codec.init_state(1), codec.init_state(1)
    x = torch.from_numpy(pcm[: frames * codec.frame_size]).view(1, 1, -1)
    times = {"encode": [], "decode": [], "both": []}
    for i in range(x.shape[-1] // codec.frame_size):
        frame = x[..., i * codec.frame_size:(i + 1) * codec.frame_size]
        t0 = time.perf_counter()
        codes, enc_state = codec.encode_step(frame, enc_state)
        t1 = time.perf_counter()
        _, dec_state = codec.decode_step(codes, dec_state)
        t2 = time.perf_counter()
        times["encode"].append(1000 * (t1 - t0))
        times["decode"].append(1000 * (t2 - t1))
        times["both"].append(1000 * (t2 - t0))
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="codec .safetensors (default: the shipped one)")
    p.add_argument("--clip", help="audio to code (default: the first clip of --manifest)")
    p.add_argument("--manifest", default="data/synthetic/test.jsonl")
    p.add_argument("--frames", type=int, default=250, help="frames timed (10 s)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    codec = telugu_codec_fixed.load(args.checkpoint)
    path = args.clip or next(iter(read_manifest(args.manifest)))["audio"]
    pcm = load_audio(path, codec.sample_rate)
    pcm = np.tile(pcm, -(-args.frames * codec.frame_size // len(pcm)))  # loop the clip to the frame count
    frame_cost(codec, pcm, 10)  # warm-up: first calls allocate
    times = frame_cost(codec, pcm, args.frames)
    print(f"{args.checkpoint or 'shipped codec'}: {len(times['both'])} frames of 40 ms, 1 thread, "
          f"load average {os.getloadavg()[0]:.1f}")
    for part, ms in times.items():
        print(f"  {part:7s} median {np.median(ms):6.2f} ms  p90 {np.percentile(ms, 90):6.2f} ms  fastest {min(ms):6.2f} ms")


if __name__ == "__main__":
    main()
