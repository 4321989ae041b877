"""tools/estimate_training.py: the counters on a layer whose costs are known by hand, and the
command on a small preset."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import estimate_training as et  # noqa: E402


def test_flops_and_saved_bytes_of_a_linear_layer():
    batch, n_in, n_out = 8, 64, 32
    layer = torch.nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in, requires_grad=True)
    saved = {}

    def step():
        with et.SavedBytes(layer.parameters()) as s:
            loss = torch.relu(layer(x)).sum()
        loss.backward()
        saved["bytes"] = s.total

    # forward 2*B*in*out; backward the same twice (gradient of the input and of the weight)
    assert et.count_flops(step) == 6 * batch * n_in * n_out
    # saved: the input (for the weight's gradient) and relu's output; the weight is not counted
    assert saved["bytes"] == 4 * batch * n_in + 4 * batch * n_out


def test_fit_and_estimate_arithmetic():
    assert et.fit(1, 10.0, 3, 30.0) == (0.0, 10.0)
    probe = et.Probe("codec", trainable_params=10**9, frozen_params=0, flops_fixed=0.0, flops_per_item=1e12,
                     saved_fixed=0.0, saved_per_item=1e9, item_seconds=2.0)
    r = et.estimate(probe, batch=10, accum=2, budget_h=1.0, mfu=0.5, corpus_items=1000,
                    loader=et.LoaderProbe(seconds_per_item=0.01, workers=4))
    assert r["tflop_per_step"] == pytest.approx(20.0)
    assert r["gpu_compute_s"] == pytest.approx(20e12 / (154.8e12 * 0.5))
    assert r["loader_s"] == pytest.approx(20 * 0.01 / 4)
    assert r["step_s"] == max(r["gpu_compute_s"], r["gpu_memory_s"], r["loader_s"])
    # 16 B/param of weights, grads and AdamW state + 1.3 x one micro-batch's activations + 1.5 GB
    assert r["peak_gb"] == pytest.approx(16 + 1.3 * 10 + 1.5)
    assert r["audio_hours_seen"] == pytest.approx(r["steps_in_budget"] * 20 * 2.0 / 3600)
    assert r["epochs_in_budget"] == pytest.approx(r["steps_in_budget"] * 20 / 1000)


def test_command_on_a_small_preset(tmp_path):
    out = tmp_path / "sizing.json"
    proc = subprocess.run([sys.executable, "tools/estimate_training.py", "--config", "tiny", "--script", "speakers",
                           "--set", "speaker.channels=32", "--data_dir", str(tmp_path), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ESTIMATES" in proc.stdout and "| speakers |" in proc.stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert row["fits"] and row["steps_in_budget"] > 0 and row["loader_s_per_item"] > 0
    assert row["peak_gb"] > row["static_gb"] > 0 and row["budget_usd"] == pytest.approx(12 * 0.49)
