"""The user's command, run for a few steps through a subprocess (DAC's habit): trains, saves,
resumes exactly, exports, evaluates."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from audio_io import save_wav, write_manifest

TINY = ["--config", "tiny", "--set", "codec.channels=[16,32]", "--set", "codec.n_codebooks=2",
        "--set", "codec.codebook_size=32", "--set", "codec.vq_warmup_steps=2",
        "--set", "discriminator.mpd_channels=4", "--set", "discriminator.stft_channels=4",
        "--set", "discriminator.periods=[2,3]", "--set", "discriminator.stft_windows=[256]",
        "--set", "loss.mel_windows=[64,256]", "--set", "loss.mel_bins=[10,40]",
        "--set", "train_codec.segment_s=0.08", "--set", "train_codec.save_every_steps=2",
        "--set", "train_codec.eval_every_steps=2", "--set", "train_codec.log_every_steps=1",
        "--set", "train_codec.warmup_steps=1", "--set", "train_codec.threads=1"]


def make_corpus(root, n=6, sr=24000):
    rng = np.random.default_rng(0)
    rows = []
    for split, count in (("train", n), ("val", 2)):
        for i in range(count):
            t = np.arange(int(sr * 0.5)) / sr
            pcm = 0.1 * np.sin(2 * np.pi * (100 + 20 * i) * t) + 0.01 * rng.standard_normal(t.size)
            path = root / "wavs" / f"{split}{i}.wav"
            save_wav(path, pcm.astype(np.float32), sr)
            rows.append(dict(audio=str(path.relative_to(root)), text="పరీక్ష", speaker=f"s{i % 2}", lang="te",
                             duration=0.5, split=split))
        write_manifest(root / f"{split}.jsonl", [r for r in rows if r["split"] == split])
    return root


def run(*args):
    return subprocess.run([sys.executable, "train_codec_dac.py", *args], capture_output=True, text=True)


def weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.timeout(240)
def test_train_resume_is_exact_and_exports(tmp_path):
    data = make_corpus(tmp_path / "data")
    common = ["--data_dir", str(data), "--batch_size", "2", "--epochs", "3", *TINY]
    full = run(*common, "--max_steps", "4", "--out_dir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    half = run(*common, "--max_steps", "4", "--out_dir", str(tmp_path / "half"),
               "--set", "train_codec.save_every_steps=2")
    assert half.returncode == 0
    # Simulate a run killed after step 2: drop the later checkpoints, then resume.
    for p in (tmp_path / "half").glob("step_*.pt"):
        if p.name != "step_00000002.pt":
            p.unlink()
    resumed = run(*common, "--max_steps", "4", "--out_dir", str(tmp_path / "half"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    a, b = weights(tmp_path / "full" / "step_00000004.pt"), weights(tmp_path / "half" / "step_00000004.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert (tmp_path / "full" / "codec.safetensors").exists()
    cfg = json.loads((tmp_path / "full" / "codec.json").read_text())
    assert cfg["codec"]["channels"] == [16, 32]
    assert list((tmp_path / "full" / "tb").glob("events.*"))


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    data = make_corpus(tmp_path / "data")
    common = ["--data_dir", str(data), "--batch_size", "2", "--epochs", "3", *TINY,
              "--out_dir", str(tmp_path / "run")]
    assert run(*common, "--max_steps", "4").returncode == 0
    (tmp_path / "run" / "step_00000004.pt").write_bytes(b"half a checkpoint")  # a torn write
    resumed = run(*common, "--max_steps", "5", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping unreadable checkpoint" in resumed.stdout
    assert "at step 2" in resumed.stdout


def test_bad_config_key_is_a_clear_error(tmp_path):
    r = run("--data_dir", str(tmp_path), "--set", "codec.n_codebookz=4")
    assert r.returncode != 0 and "codec.n_codebookz" in r.stderr
    r = run("--data_dir", str(tmp_path / "nowhere"), "--config", "tiny")
    assert r.returncode != 0 and "prepare_speaker_data.py" in r.stderr


@pytest.mark.timeout(240)
def test_torchrun_two_gloo_processes(tmp_path):
    """DDP on CPU (gloo): two ranks train in step and only rank 0 writes."""
    data = make_corpus(tmp_path / "data", n=8)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29613",
                        "train_codec_dac.py", "--data_dir", str(data), "--batch_size", "2", "--epochs", "2", *TINY,
                        "--set", "loss.gan_start_step=0", "--max_steps", "3", "--out_dir", str(tmp_path / "ddp")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world 2" in r.stdout
    assert (tmp_path / "ddp" / "step_00000003.pt").exists()
    assert r.stdout.count("done at step 3") == 1  # rank 0 only


def test_init_from_exported_weights(tmp_path):
    """--init starts a new run from shipped weights (the training checkpoint may be gone)."""
    from safetensors.torch import load_file
    data = make_corpus(tmp_path / "data")
    common = ["--data_dir", str(data), "--batch_size", "2", "--epochs", "3", *TINY]
    assert run(*common, "--max_steps", "2", "--out_dir", str(tmp_path / "a")).returncode == 0
    r = run(*common, "--max_steps", "1", "--lr", "0", "--set", "train_codec.weight_decay=0",
            "--out_dir", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "codec.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "initialised the codec from" in r.stdout
    a, b = load_file(str(tmp_path / "a" / "codec.safetensors")), load_file(str(tmp_path / "b" / "codec.safetensors"))
    for k in a:
        if not k.endswith("usage"):  # the VQ usage EMA moves even at lr 0
            torch.testing.assert_close(a[k], b[k], msg=k)


def test_decoder_only_keeps_codes_and_the_s2s_tie(tmp_path):
    """--decoder_only (the GAN fine-tune of a shipped codec): the encoder and quantizer are
    bit-for-bit unchanged, so codes, latents and checkpoint_io.codec_hash (the S2S model's tie to its
    codec) stay the same; the decoder does learn."""
    from safetensors.torch import load_file

    import checkpoint_io
    data = make_corpus(tmp_path / "data")
    common = ["--data_dir", str(data), "--batch_size", "2", "--epochs", "3", *TINY]
    assert run(*common, "--max_steps", "2", "--out_dir", str(tmp_path / "a")).returncode == 0
    r = run(*common, "--max_steps", "3", "--set", "loss.gan_start_step=0", "--set", "loss.phase_weight=1", "--decoder_only",
            "--out_dir", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "codec.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(str(tmp_path / "a" / "codec.safetensors")), load_file(str(tmp_path / "b" / "codec.safetensors"))
    frozen = [k for k in a if k.startswith(("encoder.", "quantizer.")) and not k.endswith("usage")]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    assert checkpoint_io.codec_hash(tmp_path / "a" / "codec.safetensors") == \
        checkpoint_io.codec_hash(tmp_path / "b" / "codec.safetensors")


def test_time_box_stops_and_exports(tmp_path):
    """train_codec.max_minutes: a run with a huge max_steps stops on the wall clock, saves and exports."""
    data = make_corpus(tmp_path / "data")
    r = run("--data_dir", str(data), "--batch_size", "2", "--epochs", "100000", *TINY, "--max_steps", "1000000",
            "--set", "train_codec.max_minutes=0.05", "--out_dir", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done at step" in r.stdout and (tmp_path / "t" / "codec.safetensors").exists()
    step = int(r.stdout.split("done at step ")[1].split()[0])
    assert 0 < step < 1000000


def test_harmonic_head_joins_a_shipped_codec_decoder_only(tmp_path):
    """--set codec.harmonics=N --decoder_only --init <a codec without one>: the harmonic head
    starts fresh beside the pretrained decoder, the codes stay the same, its F0 loss and the
    teacher-forced F0 run in both the GAN and the generator passes, and the export carries it."""
    from safetensors.torch import load_file

    import checkpoint_io
    data = make_corpus(tmp_path / "data")
    common = ["--data_dir", str(data), "--batch_size", "2", "--epochs", "3", *TINY]
    assert run(*common, "--max_steps", "2", "--out_dir", str(tmp_path / "a")).returncode == 0
    r = run(*common, "--max_steps", "3", "--set", "loss.gan_start_step=0", "--set", "codec.harmonics=8",
            "--decoder_only", "--out_dir", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "codec.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(new: the harmonic head)" in r.stdout
    a, b = load_file(str(tmp_path / "a" / "codec.safetensors")), load_file(str(tmp_path / "b" / "codec.safetensors"))
    assert any(k.startswith("decoder.harmonic.") for k in b) and not any(k.startswith("decoder.harmonic.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder.", "quantizer.")) and not k.endswith("usage"))
    assert checkpoint_io.codec_hash(tmp_path / "a" / "codec.safetensors") == \
        checkpoint_io.codec_hash(tmp_path / "b" / "codec.safetensors")
    # A config that does not fit the weights is refused, not half-loaded.
    bad = run(*common, "--max_steps", "1", "--set", "codec.latent_dim=64", "--decoder_only",
              "--out_dir", str(tmp_path / "c"), "--init", str(tmp_path / "a" / "codec.safetensors"))
    assert bad.returncode != 0


@pytest.mark.timeout(240)
def test_source_filter_codec_trains_exports_and_evaluates(tmp_path):
    """codec.decoder=source_filter through the user's commands: the envelope codebooks start on
    the data, the STFT and envelope losses run, the export loads and codec_eval scores it."""
    data = make_corpus(tmp_path / "data")
    sf = ["--set", "codec.decoder=source_filter", "--set", "codec.pitch_codebooks=1", "--set", "codec.n_codebooks=3",
          "--set", "codec.pitch_slopes=2", "--set", "codec.vq_warmup_steps=0", "--set", "loss.stft_weight=1",
          "--set", "loss.stft_windows=[256,64]", "--set", "loss.mel_weight=0"]
    r = run("--data_dir", str(data), "--batch_size", "2", "--epochs", "3", *TINY, *sf, "--max_steps", "3",
            "--set", "loss.gan_start_step=2",  # the adversarial fine-tune runs on it too
            "--out_dir", str(tmp_path / "sf"), "--export", str(tmp_path / "codec_pitch.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "initialised the envelope codebooks" in r.stdout
    cfg = json.loads((tmp_path / "codec_pitch.json").read_text())
    assert cfg["codec"]["decoder"] == "source_filter" and cfg["codec"]["pitch_codebooks"] == 1
    ev = run("--eval", "--checkpoint", str(tmp_path / "codec_pitch.safetensors"), "--manifest",
             str(data / "val.jsonl"), "--limit", "1", "--opus_kbps", "8")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "F0 RMSE (cents)" in ev.stdout and "| codec_3cb_" in ev.stdout
