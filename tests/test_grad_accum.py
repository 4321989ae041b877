"""Gradient accumulation (train.grad_accum): one optimizer step over batch_size * grad_accum items.
The codec's GAN step is the same algorithm at any grad_accum, so two micro-batches of b clips
give the weights one batch of 2b gives; the speaker encoder has BatchNorm (statistics per
micro-batch), so there the test is that steps, LR and data position count optimizer steps."""
import subprocess
import sys
from pathlib import Path

import torch

from config import load_config
from test_speakers import corpus  # noqa: F401  (the speaker corpus fixture)
from test_train_codec import TINY as CODEC_TINY
from test_train_codec import make_corpus as make_codec_corpus
from train_utils import lr_at

ROOT = Path(__file__).resolve().parent.parent


def run(script, *args):
    proc = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def adam_steps(optimizer_state: dict) -> set:
    return {int(s["step"]) for s in optimizer_state["state"].values()}


def test_codec_two_micro_batches_equal_one_double_batch(tmp_path):
    data = make_codec_corpus(tmp_path / "data", n=8)
    # Quantizer dropout draws per batch (4 draws differ from 2 + 2), so it is off here; the crops and
    # gains are drawn per clip and match. The GAN is on from the first step.
    common = ["train_codec_dac.py", "--data_dir", data, "--epochs", "3", *CODEC_TINY, "--max_steps", "3",
              "--set", "loss.gan_start_step=0", "--set", "codec.quantizer_dropout=0.0"]
    run(*common, "--batch_size", "4", "--out_dir", tmp_path / "one")
    out = run(*common, "--batch_size", "2", "--set", "train_codec.grad_accum=2", "--out_dir", tmp_path / "two")
    assert "3 steps of 2 x 2 x 1 clips" in out
    a = torch.load(tmp_path / "one" / "step_00000003.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "step_00000003.pt", weights_only=True)
    for part in ("model", "disc"):
        for k in a[part]:
            if not k.endswith("usage"):  # the code-usage EMA counts micro-batches
                torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-4, atol=1e-4, msg=f"{part}.{k}")
    # Steps, LR and both optimizers follow optimizer steps; the data position counts micro-batches.
    assert (a["step"], b["step"]) == (3, 3) and adam_steps(b["opt_g"]) == adam_steps(b["opt_d"]) == {3}
    assert (a["epoch"], a["batch_in_epoch"], b["epoch"], b["batch_in_epoch"]) == (1, 1, 1, 2)
    train = load_config("tiny", ["train_codec.warmup_steps=1"]).train_codec
    assert b["opt_g"]["param_groups"][0]["lr"] == lr_at(2, train, 3)


def test_speakers_accumulation_counts_optimizer_steps_and_resumes(corpus, tmp_path):  # noqa: F811
    def train(out, steps, *extra):
        return run("train_speakers.py", "--config", "tiny", "--data_dir", corpus, "--out_dir", out, "--epochs", 50,
                   "--max_steps", steps, "--batch_size", 4, "--num_speakers", 2, "--enrol", 2,
                   "--export", out / "enc.safetensors", "--voice_bank", out / "bank.json",
                   "--set", "speaker.channels=32", "--set", "speaker.segment_s=0.5",
                   "--set", "train_speakers.threads=1", "--set", "train_speakers.warmup_steps=1",
                   "--set", "train_speakers.grad_accum=3", "--speed_speakers", 0.9, 1.1, *extra)

    full, half = tmp_path / "full", tmp_path / "half"
    out = train(full, 4)
    # 12 utterances x 3 speeds = 36 crops = 9 micro-batches of 4 = 3 optimizer steps an epoch.
    assert "3 steps/epoch of 4 x 3 x 1 crops, 4 steps" in out
    a = torch.load(full / "step_00000004.pt", weights_only=True)
    assert (a["step"], a["epoch"], a["position"]) == (4, 1, 3) and adam_steps(a["optimizer"]) == {4}
    tc = load_config("tiny", ["train_speakers.warmup_steps=1"]).train_speakers
    assert a["optimizer"]["param_groups"][0]["lr"] == lr_at(3, tc, 4)

    train(half, 2)
    train(half, 4, "--resume")  # resumes in the middle of epoch 0, on a step boundary
    b = torch.load(half / "step_00000004.pt", weights_only=True)
    assert (b["step"], b["epoch"], b["position"]) == (4, 1, 3)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6, msg=k)
