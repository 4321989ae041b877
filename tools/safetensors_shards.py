#!/usr/bin/env python3
"""Split a safetensors file into shards under a size limit, and join them back, byte-for-byte the
same tensors and metadata. The device machine returns files of at most 16 MiB; a trained S2S model
in fp16 is larger, so it travels as shards and is joined here.

    python tools/safetensors_shards.py split runs/s2s/s2s.safetensors OUT/ --max_mb 15 [--fp16]
    python tools/safetensors_shards.py join OUT/s2s.00.safetensors OUT/s2s.01.safetensors -o checkpoints/s2s.safetensors
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file


def split(path, out_dir, max_mb: float = 15.0, fp16: bool = False) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    shards, cur, size = [], {}, 0
    for k in sorted(tensors, key=lambda k: -tensors[k].nbytes):  # largest first: fewer, fuller shards
        n = tensors[k].nbytes
        if cur and size + n > max_mb * 2**20:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = tensors[k], size + n
    shards.append(cur)
    paths = []
    for i, shard in enumerate(shards):
        p = out_dir / f"{Path(path).stem}.{i:02d}.safetensors"
        save_file(shard, str(p), metadata={**meta, "shard": f"{i}/{len(shards)}"})
        paths.append(p)
    return paths


def join(paths, out) -> Path:
    tensors, meta, seen = {}, {}, set()
    for p in paths:
        with safe_open(str(p), "pt") as f:
            m = dict(f.metadata() or {})
            seen.add(m.pop("shard", "0/1").split("/")[1])
            meta = meta or m
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    if seen != {str(len(paths))}:
        raise SystemExit(f"expected {seen} shards, got {len(paths)} files")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    return Path(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("path")
    s.add_argument("out_dir")
    s.add_argument("--max_mb", type=float, default=15.0)
    s.add_argument("--fp16", action="store_true", help="cast floating tensors to fp16 first")
    j = sub.add_parser("join")
    j.add_argument("paths", nargs="+")
    j.add_argument("-o", "--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "split":
        for p in split(args.path, args.out_dir, args.max_mb, args.fp16):
            print(p, f"{p.stat().st_size / 2**20:.1f} MiB")
    else:
        print(join(args.paths, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
