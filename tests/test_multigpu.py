"""The train scripts under torchrun: two gloo processes on this CPU stand in for two GPUs (the same
DDP code path as NCCL, only the transport differs). Each script trains a few steps with gradient
accumulation, writes from rank 0 only, and a run stopped half-way resumes to the same weights as
an unbroken one: every rank's data position and RNG come back, not only rank 0's."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_speakers import corpus  # noqa: F401  (the speaker corpus fixture)
from test_train_codec import TINY as CODEC_TINY
from test_train_codec import make_corpus as make_codec_corpus

ROOT = Path(__file__).resolve().parent.parent


def torchrun(script, *args):
    # --standalone: a private rendezvous on a free port, so parallel test runs do not collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def keep_only(run_dir: Path, name: str):
    """A pod preempted right after `name` was written: the later checkpoints never happened."""
    for p in run_dir.glob("step_*.pt"):
        if p.name != name:
            p.unlink()


def assert_same_weights(a: dict, b: dict, **tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k, **tol)


def only_rank0_wrote(run_dir: Path, stdout: str, banner: str):
    assert stdout.count(banner) == 1, stdout  # rank 1 prints nothing of its own
    assert len(list((run_dir / "tb").glob("events.*"))) == 1  # one TensorBoard writer
    assert not list(run_dir.glob(".*.tmp")) and not list(run_dir.glob("*.tmp"))


@pytest.mark.timeout(600)
def test_codec_ddp_accumulation_resumes_exactly(tmp_path):
    data = make_codec_corpus(tmp_path / "data", n=8)
    common = ["train_codec_dac.py", "--data_dir", data, "--batch_size", "1", "--epochs", "4", *CODEC_TINY,
              "--set", "loss.gan_start_step=1", "--set", "train_codec.grad_accum=2", "--max_steps", "4"]
    full, half = tmp_path / "full", tmp_path / "half"
    out = torchrun(*common, "--out_dir", full)
    assert "world 2" in out and "4 steps of 1 x 2 x 2 clips" in out
    only_rank0_wrote(full, out, "done at step 4")
    a = torch.load(full / "step_00000004.pt", weights_only=True)
    # 8 clips / 2 ranks / batch 1 = 4 micro-batches an epoch = 2 optimizer steps; step 4 is the last
    # of epoch 1 (the run stops before it rolls over).
    assert (a["step"], a["epoch"], a["batch_in_epoch"]) == (4, 1, 4)
    assert len(a["rng"]["ranks"]) == 2 and not torch.equal(a["rng"]["ranks"][0]["torch"], a["rng"]["ranks"][1]["torch"])

    torchrun(*common, "--out_dir", half, "--set", "train_codec.save_every_steps=3")
    keep_only(half, "step_00000003.pt")  # mid-epoch: epoch 1, micro-batch 2 of 4
    out = torchrun(*common, "--out_dir", half, "--resume")
    assert out.count("resumed from") == 1 and "at step 3 (epoch 1, batch 2)" in out
    b = torch.load(half / "step_00000004.pt", weights_only=True)
    assert_same_weights(a["model"], b["model"])
    assert_same_weights(a["disc"], b["disc"])


@pytest.mark.timeout(600)
def test_speakers_ddp_accumulation_resumes_exactly(corpus, tmp_path):  # noqa: F811
    def train(out, *extra):
        return torchrun("train_speakers.py", "--config", "tiny", "--data_dir", corpus, "--out_dir", out,
                        "--epochs", 50, "--max_steps", 4, "--batch_size", 2, "--num_speakers", 2, "--enrol", 2,
                        "--export", out / "enc.safetensors", "--voice_bank", out / "bank.json",
                        "--set", "speaker.channels=32", "--set", "speaker.segment_s=0.5",
                        "--set", "train_speakers.threads=1", "--set", "train_speakers.warmup_steps=1",
                        "--set", "train_speakers.grad_accum=2", "--set", "train_speakers.save_every_steps=3", *extra)

    full, half = tmp_path / "full", tmp_path / "half"
    out = train(full)
    assert "world 2" in out and "of 2 x 2 x 2 crops" in out
    only_rank0_wrote(full, out, "exported ")
    assert (full / "enc.safetensors").exists() and (full / "bank.json").exists()
    train(half)
    keep_only(half, "step_00000003.pt")
    out = train(half, "--resume")
    assert out.count("resumed from") == 1
    a = torch.load(full / "step_00000004.pt", weights_only=True)
    b = torch.load(half / "step_00000004.pt", weights_only=True)
    assert (a["step"], a["epoch"], a["position"]) == (b["step"], b["epoch"], b["position"]) == (4, 0, 8)
    assert_same_weights(a["model"], b["model"], rtol=1e-5, atol=1e-6)

