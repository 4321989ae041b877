"""What the GPU run relies on: the wall-clock time box and its LR schedule, and safetensors shards
(the device machine returns files of at most 16 MiB)."""
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import train_utils as tu
from config import TrainConfig
from tools import safetensors_shards as shards


def test_deadline_and_time_based_schedule():
    train = TrainConfig(lr=1.0, lr_min_ratio=0.1, warmup_steps=0)
    assert not tu.Deadline(0).passed() and tu.Deadline(0).progress() == 0.0  # 0: no time box
    d = tu.Deadline(0.5 / 60)
    assert not d.passed() and d.progress() < 0.5
    time.sleep(0.6)
    assert d.passed() and d.progress() == 1.0
    # The schedule decays with whichever ends first: the steps or the clock.
    assert tu.lr_at(0, train, 1000, time_progress=0.0) == pytest.approx(1.0)
    assert tu.lr_at(0, train, 1000, time_progress=1.0) == pytest.approx(0.1)
    assert tu.lr_at(1000, train, 1000, time_progress=0.0) == pytest.approx(0.1)
    assert tu.lr_at(10, train, 1000, time_progress=0.5) == pytest.approx(0.55)


def test_split_and_join_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {f"layer{i}.weight": torch.randn(256, 512, generator=g) for i in range(6)}
    tensors["step"] = torch.tensor([7])
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"codec_sha": "abc"})
    parts = shards.split(tmp_path / "m.safetensors", tmp_path / "out", max_mb=1.0, fp16=True)
    assert len(parts) >= 2 and all(p.stat().st_size <= 1.0 * 2**20 + 4096 for p in parts)
    joined = shards.join(parts, tmp_path / "joined.safetensors")
    back = load_file(str(joined))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        expect = v.half() if v.is_floating_point() else v
        assert torch.equal(back[k], expect), k
    with safe_open(str(joined), "pt") as f:
        assert f.metadata() == {"codec_sha": "abc"}  # the shard marks are gone, the rest kept
    with pytest.raises(SystemExit):  # a missing shard is an error, not a silently smaller model
        shards.join(parts[:1], tmp_path / "short.safetensors")


def test_cli():
    r = subprocess.run([sys.executable, "tools/safetensors_shards.py", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "split" in r.stdout
