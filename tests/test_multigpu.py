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
                        "--set", "train_speakers.grad_accum=2", "--set", "train_speakers.save_every_steps=3",
                        "--speed_speakers", 0.9, 1.1, *extra)

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


@pytest.fixture(scope="module")
def s2s_world(tmp_path_factory):
    """test_train_s2s's tiny world (random codec, voice bank, six sentences, two dialogues)."""
    import numpy as np

    from checkpoint_io import export_safetensors
    from config import Config
    from speaker_embeddings import SpeakerEncoder, Voice, VoiceBank
    from telugu_codec_fixed import Codec
    from test_train_s2s import TINY, make_dialogues, make_sentences

    root = tmp_path_factory.mktemp("s2s_ddp")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    cfg = Config()
    cfg.codec.channels, cfg.codec.res_units, cfg.codec.n_codebooks, cfg.codec.codebook_size = [16, 32], 1, 2, 32
    export_safetensors(Codec(cfg.codec).state_dict(), root / "codec.safetensors", cfg, fp16=False)
    cfg.speaker.channels, cfg.speaker.embed_dim = 16, 8
    export_safetensors(SpeakerEncoder(cfg.speaker).eval().state_dict(), root / "spk" / "speaker.safetensors", cfg)
    bank = VoiceBank(encoder="speaker.safetensors")
    for name in ("lakshmi", "priya", "ravi", "kiran"):
        v = rng.standard_normal(8)
        bank.add(Voice(name, "female", "test", [], list(v / np.linalg.norm(v))))
    bank.save(root / "spk" / "voice_bank.json")
    (root / "data" / "dialogues" / "train").mkdir(parents=True)
    make_sentences(root / "data" / "synthetic", rng)
    make_dialogues(root / "data" / "dialogues", rng)
    common = ["train_s2s.py", "--codec_path", root / "codec.safetensors", "--speaker_path", root / "spk" / "speaker.safetensors",
              "--data_dir", root / "data" / "synthetic", "--epochs", 10, *TINY, "--batch_size", 1,
              "--set", "train_s2s.save_every_steps=3"]
    return root, common


@pytest.mark.timeout(600)
def test_s2s_ddp_both_stages_and_exact_resume(s2s_world):
    root, common = s2s_world
    # Stage 1 with accumulation: 6 sentences / 2 ranks / batch 1 = 3 micro-batches = 1 step an epoch.
    stage1 = [*common, "--stage", "transcribe", "--set", "train_s2s.grad_accum=2"]
    full, half = root / "full", root / "half"
    out = torchrun(*stage1, "--out_dir", full)
    assert "world 2" in out
    only_rank0_wrote(full / "transcribe", out, "transcribe: done at step 4")
    torchrun(*stage1, "--out_dir", half)
    keep_only(half / "transcribe", "step_00000003.pt")
    out = torchrun(*stage1, "--out_dir", half, "--resume")
    assert out.count("resumed from") == 1
    a = torch.load(full / "transcribe" / "step_00000004.pt", weights_only=True)
    b = torch.load(half / "transcribe" / "step_00000004.pt", weights_only=True)
    assert (a["step"], a["epoch"], a["batch_in_epoch"]) == (b["step"], b["epoch"], b["batch_in_epoch"]) == (4, 3, 2)
    assert_same_weights(a["model"], b["model"])  # dropout: every rank's RNG came back, not only rank 0's

    # Stage 2 from stage 1's weights: rank 0 pre-tokenises the agent channels while rank 1 waits.
    out = torchrun(*common, "--stage", "dialogue", "--out_dir", full, "--stage2_steps", 2)
    assert out.count("code cache") == 1 and out.count("dialogue: starting from") == 1
    only_rank0_wrote(full / "dialogue", out, "dialogue: done at step 2")
    assert (full / "s2s.safetensors").exists()



@pytest.mark.timeout(600)
def test_asr_ddp_accumulation_resumes_exactly(tmp_path):
    from test_asr import make_corpus, train_cmd

    data = make_corpus(tmp_path / "data")
    full, half = tmp_path / "full", tmp_path / "half"

    def ddp(out_dir, steps, *extra):
        cmd = train_cmd(data, out_dir, steps, "--set", "train_asr.grad_accum=2", "--batch_seconds", "3", *extra)
        return torchrun(*cmd[1:])

    out = ddp(full, 4)
    assert "world 2" in out
    only_rank0_wrote(full, out, "clips (")
    ddp(half, 2)
    keep_only(half, "step_00000002.pt")
    assert "resumed from" in ddp(half, 4, "--resume")
    a = torch.load(full / "step_00000004.pt", weights_only=True)
    b = torch.load(half / "step_00000004.pt", weights_only=True)
    assert len(a["rng"]["ranks"]) == 2
    assert_same_weights(a["model"], b["model"])
