"""Speaker encoder: shapes, metrics, and the user's commands (train, resume, export, voice bank,
eval, compare) run as subprocesses on a tiny corpus made here."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_io import save_wav, write_manifest
from config import SpeakerConfig
from speaker_embeddings import SpeakerEncoder, Voice, VoiceBank, similarity
from train_speakers import compute_eer, compute_min_dcf, pair_trials

ROOT = Path(__file__).resolve().parent.parent
SMALL = SpeakerConfig(channels=32)


def test_shapes_and_unit_norm():
    model = SpeakerEncoder(SMALL).eval()
    pcm = torch.randn(3, 16000) * 0.1
    emb = model.embed_tensor(pcm)
    assert emb.shape == (3, SMALL.embed_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    # any length, any input rate: one vector
    vec = model.embed(np.random.default_rng(0).standard_normal(7000).astype(np.float32) * 0.1, 24000)
    assert vec.shape == (SMALL.embed_dim,) and abs(np.linalg.norm(vec) - 1) < 1e-5


def test_same_input_similarity_one():
    model = SpeakerEncoder(SMALL).eval()
    pcm = np.random.default_rng(1).standard_normal(24000).astype(np.float32) * 0.1
    assert similarity(model.embed(pcm, 24000), model.embed(pcm.copy(), 24000)) == pytest.approx(1.0, abs=1e-5)


def test_eer_and_min_dcf_on_hand_made_scores():
    labels = [1, 1, 1, 0, 0, 0]
    eer, thr = compute_eer([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], labels)
    assert eer == 0.0 and 0.3 < thr < 0.7
    eer, thr = compute_eer([0.9, 0.8, 0.3, 0.7, 0.2, 0.1], labels)  # one error each side
    assert eer == pytest.approx(1 / 3) and 0.3 < thr <= 0.7
    eer, _ = compute_eer([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], labels)  # fully inverted
    assert eer == pytest.approx(1.0)
    assert compute_min_dcf([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], labels) == 0.0
    # one impostor above every target: the cheapest error at p_target=0.01 is to reject all targets
    assert compute_min_dcf([0.9, 0.8, 0.7, 0.95, 0.2, 0.1], labels) == pytest.approx(1.0)


def test_pair_trials_sample_keeps_targets():
    speakers = [f"s{k % 5}" for k in range(60)]
    n_target = sum(1 for a in range(60) for b in range(a + 1, 60) if a % 5 == b % 5)  # 330 of 1770
    i, j, same = pair_trials(speakers, max_pairs=1000)
    assert len(i) == 1000 and same.sum() == n_target and np.all(i < j)
    i, j, same = pair_trials(speakers, max_pairs=400)  # targets capped at half the sample
    assert len(i) == 400 and same.sum() == 200


def test_voice_bank_roundtrip(tmp_path):
    e = np.eye(4, dtype=np.float32)
    bank = VoiceBank([Voice("a", "female", "x", ["1.wav"], e[0].tolist()),
                      Voice("b", "male", "x", ["2.wav"], e[1].tolist())], encoder="enc.safetensors")
    bank.save(tmp_path / "bank.json")
    again = VoiceBank.load(tmp_path / "bank.json")
    assert again.names() == ["a", "b"] and torch.equal(again.embedding("b"), torch.tensor(e[1]))
    name, score = again.identify(e[1] * 0.9 + e[0] * 0.1)
    assert name == "b" and score > 0.9


# --- the commands -------------------------------------------------------------------------------

def _voice(rng, f0, formants, seconds=1.2, sr=24000):
    """A buzzy vowel-like source: harmonics of a wobbling f0 shaped by this speaker's formants."""
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f) / sr
    pcm = np.zeros_like(t)
    for h in range(1, int(4000 / f0)):
        gain = sum(np.exp(-0.5 * ((h * f0 - fc) / 120) ** 2) for fc in formants)
        pcm += gain * np.sin(h * phase)
    pcm *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 3) * t) ** 2  # syllable-like envelope
    pcm += 0.01 * rng.standard_normal(len(t))
    return (0.3 * pcm / np.abs(pcm).max()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("spk_corpus")
    rng = np.random.default_rng(0)
    speakers = {  # name: (gender, f0, formants); the last two are held out
        "ana": ("female", 220, (800, 1900)), "bala": ("male", 110, (500, 1500)),
        "chitra": ("female", 250, (350, 2600)), "dev": ("male", 130, (700, 1100)),
        "esha": ("female", 200, (600, 2300)), "gopi": ("male", 100, (400, 1800)),
    }
    rows = {"train": [], "val": []}
    for k, (name, (gender, f0, formants)) in enumerate(speakers.items()):
        split = "train" if k < 4 else "val"
        for u in range(3):
            path = root / "wav" / f"{name}_{u}.wav"
            save_wav(path, _voice(rng, f0 * rng.uniform(0.97, 1.03), formants))
            rows[split].append({"audio": str(path), "text": "", "speaker": name, "gender": gender, "lang": "te",
                                "duration": 1.2, "split": split})
    write_manifest(root / "train.jsonl", rows["train"])
    write_manifest(root / "val.jsonl", rows["val"])
    write_manifest(root / "test.jsonl", rows["val"])
    return root


def _run(*args):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def _train(corpus, out, steps, *extra):
    return _run("train_speakers.py", "--config", "tiny", "--data_dir", corpus, "--out_dir", out, "--epochs", 50,
                "--max_steps", steps, "--batch_size", 4, "--num_speakers", 2, "--enrol", 2,
                "--export", out / "enc.safetensors", "--voice_bank", out / "bank.json",
                "--set", "speaker.channels=32", "--set", "speaker.segment_s=0.5",
                "--set", "train_speakers.threads=1", "--set", "train_speakers.warmup_steps=1",
                "--set", "train_speakers.lr_min_ratio=1.0",  # constant LR: N and N/2 + N/2 share a schedule
                "--set", "train_speakers.log_every_steps=1", "--set", "train_speakers.eval_every_steps=2", *extra)


def test_train_resume_export_compare(corpus, tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    _train(corpus, full, 4)
    _train(corpus, half, 2)
    assert (half / "step_00000002.pt").exists()
    _train(corpus, half, 4, "--resume")

    a = torch.load(full / "step_00000004.pt", weights_only=True)
    b = torch.load(half / "step_00000004.pt", weights_only=True)
    assert (a["step"], a["epoch"], a["position"]) == (b["step"], b["epoch"], b["position"])
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    for k, s in a["optimizer"]["state"].items():
        torch.testing.assert_close(s["exp_avg"], b["optimizer"]["state"][k]["exp_avg"], rtol=1e-5, atol=1e-7)

    # export + calibrated threshold + voice bank of the two training speakers with most audio, one per gender
    assert (full / "enc.safetensors").exists()
    cfg = json.loads((full / "enc.json").read_text())
    assert cfg["speaker"]["channels"] == 32 and cfg["speaker"]["threshold"] != SpeakerConfig.threshold
    bank = VoiceBank.load(full / "bank.json")
    assert len(bank.names()) == 2 and {v.gender for v in bank.voices.values()} == {"female", "male"}
    assert all(len(v.enrolment) == 2 and v.embedding.__len__() == 192 for v in bank.voices.values())
    assert bank.embedding(bank.names()[0]).norm().item() == pytest.approx(1.0, abs=1e-4)

    wav_a, wav_b = corpus / "wav" / "ana_0.wav", corpus / "wav" / "bala_1.wav"
    out = _run("speaker_embeddings.py", "--checkpoint", full / "enc.safetensors", "compare", wav_a, wav_b)
    assert "similarity" in out and ("same" in out or "different" in out)
    emb = json.loads(_run("speaker_embeddings.py", "--checkpoint", full / "enc.safetensors", "embed", wav_a))
    assert len(emb) == 192

    report = tmp_path / "eval.json"
    _run("train_speakers.py", "--eval", "--checkpoint", full / "enc.safetensors", "--manifest",
         corpus / "test.jsonl", "--json", report)
    result = json.loads(report.read_text())
    assert 0.0 <= result["encoder"]["eer"] <= 1.0 and result["encoder"]["n_target"] == 6
    assert result["real_en"]["encoder"]["n_target"] == 10  # the five real clips, pairwise
