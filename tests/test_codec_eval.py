"""codec_eval: the metrics, the Opus round trip and its alignment, evaluate() on a tiny codec, and
the user's command through a subprocess."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import codec_eval
from audio_io import save_wav, write_manifest
from checkpoint_io import export_safetensors
from config import CodecConfig, Config
from telugu_codec_fixed import Codec

ROOT = Path(__file__).resolve().parent.parent
SR = 24000
torch.set_num_threads(1)


def speech_like(seconds=1.0, sr=SR, f0=140.0, seed=0):
    """A voiced vowel-ish signal: harmonics of a gliding f0 under two formant-like bumps, with a
    4 Hz syllable-rate amplitude envelope and a little breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))) / sr
    pcm = np.zeros_like(t)
    for h in range(1, 30):
        freq = h * f0
        if freq > 0.45 * sr:
            break
        gain = np.exp(-((freq - 600) / 250) ** 2) + 0.6 * np.exp(-((freq - 1700) / 400) ** 2) + 0.05
        pcm += gain / h**0.5 * np.sin(h * phase)
    pcm *= 0.5 * (1 - np.cos(2 * np.pi * 4 * t)) / 2 + 0.05
    pcm += 0.003 * rng.standard_normal(t.size)
    return (0.3 * pcm / np.abs(pcm).max()).astype(np.float32)


def tiny_codec():
    torch.manual_seed(0)
    return Codec(CodecConfig(channels=[32, 64], n_codebooks=2, codebook_size=16)).eval()


def test_si_sdr_of_itself_and_of_known_noise():
    x = speech_like()
    assert codec_eval.si_sdr(x, x) > 60
    assert codec_eval.si_sdr(x, 0.5 * x) > 60  # scale-invariant
    rng = np.random.default_rng(1)
    for snr_db in (0.0, 10.0, 20.0):
        noise = rng.standard_normal(x.size)
        noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
        assert codec_eval.si_sdr(x, x + noise) == pytest.approx(snr_db, abs=0.5)


def test_alignment_undoes_a_small_shift():
    x = speech_like()
    late = np.concatenate([np.zeros(7, np.float32), x])
    aligned, lag = codec_eval.align(x, late, max_lag=24)
    assert lag == 7 and len(aligned) == len(x)
    assert codec_eval.si_sdr(x, aligned) > 40


def test_opus_roundtrip_keeps_length_alignment_and_intelligibility():
    x = speech_like()
    y, kbps = codec_eval.opus_roundtrip(x, SR, 12)
    assert y.shape == x.shape and y.dtype == np.float32
    assert 0.5 * np.abs(x).max() < np.abs(y).max() < 2 * np.abs(x).max()  # float scale, not int16
    assert abs(codec_eval.measured_lag(x, y, 240)) <= 3  # the pre-skip is gone
    assert 6 < kbps < 18
    assert codec_eval.stoi(x, y, SR) > 0.8


def test_evaluate_tiny_codec_gives_finite_scores_for_every_system():
    codec = tiny_codec()
    clips = {"a": speech_like(0.8, seed=0), "b": speech_like(0.8, f0=210.0, seed=1)}
    result = codec_eval.evaluate(codec, clips, opus_kbps=(8, 12), progress=False)
    names = {"codec_1cb_100bps", "codec_2cb_200bps", "opus_8kbps", "opus_12kbps"}
    assert set(result["systems"]) == names
    assert result["clips"] == 2 and result["clip_names"] == ["a", "b"]
    for system in result["systems"].values():
        for metric in codec_eval.METRICS:
            if metric == "f0_rmse_cents" and system["kind"] == "codec":
                continue  # an untrained codec may never sound voiced: no frame to score
            assert system[metric]["n"] == 2 and math.isfinite(system[metric]["mean"]), (metric, system)
    assert result["systems"]["opus_12kbps"]["stoi"]["mean"] > 0.8
    table = codec_eval.format_table(result)
    assert all(name in table for name in names)
    with pytest.raises(ValueError):
        codec_eval.evaluate(codec, clips, codebooks=[4], opus_kbps=(), progress=False)


def test_load_clips_is_a_seeded_sample(tmp_path):
    rows = []
    for i in range(5):
        save_wav(tmp_path / f"c{i}.wav", speech_like(0.2, sr=16000, seed=i), 16000)
        rows.append(dict(audio=f"c{i}.wav", text="", speaker="s", lang="te", duration=0.2, split="test"))
    write_manifest(tmp_path / "m.jsonl", rows)
    first = codec_eval.load_clips(tmp_path / "m.jsonl", limit=3, seed=5)
    assert list(first) == list(codec_eval.load_clips(tmp_path / "m.jsonl", limit=3, seed=5))
    assert len(first) == 3 and all(len(x) == int(0.2 * SR) for x in first.values())  # resampled to 24 kHz
    assert len(codec_eval.load_folder_clips(tmp_path)) == 5


def test_cli_writes_json(tmp_path):
    cfg = Config()
    cfg.codec = CodecConfig(channels=[32, 64], n_codebooks=2, codebook_size=16)
    export_safetensors(tiny_codec().state_dict(), tmp_path / "codec.safetensors", cfg)
    rows = []
    for i in range(2):
        save_wav(tmp_path / f"u{i}.wav", speech_like(0.8, f0=120.0 + 60 * i, seed=i), SR)
        rows.append(dict(audio=f"u{i}.wav", text="", speaker="s", lang="te", duration=0.8, split="test"))
    write_manifest(tmp_path / "test.jsonl", rows)
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, str(ROOT / "codec_eval.py"), "--checkpoint", str(tmp_path / "codec.safetensors"),
                           "--manifest", str(tmp_path / "test.jsonl"), "--json", str(out), "--opus_kbps", "8"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["clips"] == 2
    assert set(result["systems"]) == {"codec_1cb_100bps", "codec_2cb_200bps", "opus_8kbps"}
    assert "| opus_8kbps |" in proc.stdout


def test_curve_scores_every_training_checkpoint(tmp_path):
    from config import to_dict

    cfg = Config()
    cfg.codec = CodecConfig(channels=[32, 64], n_codebooks=2, codebook_size=16)
    for step, elapsed in ((2, 60.0), (4, 120.0)):
        torch.save({"model": tiny_codec().state_dict(), "config": to_dict(cfg), "elapsed_s": elapsed},
                   tmp_path / f"step_{step:08d}.pt")
    save_wav(tmp_path / "u.wav", speech_like(0.8), SR)
    write_manifest(tmp_path / "val.jsonl", [dict(audio="u.wav", text="", speaker="s", lang="te",
                                                 duration=0.8, split="val")])
    codec_eval.main(["--curve", str(tmp_path), "--manifest", str(tmp_path / "val.jsonl"),
                     "--plot", str(tmp_path / "curve.png"), "--json", str(tmp_path / "curve.json")])
    rows = json.loads((tmp_path / "curve.json").read_text())["curve"]
    assert [(r["step"], r["elapsed_s"]) for r in rows] == [(2, 60.0), (4, 120.0)]
    assert all(math.isfinite(r["stoi"]) and math.isfinite(r["pesq_wb"]) for r in rows)
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_pitch_accuracy_tells_a_right_pitch_from_a_fixed_buzz():
    """A voice at 113 Hz decoded at 113 Hz scores near 1; decoded as a 100 Hz buzz with the same
    harmonics' envelope (what the codec did before its harmonic head) near 0; silence has no score."""
    from codec_eval import f0_track, pitch_accuracy
    sr = 24000
    t = np.arange(sr) / sr

    def voice(hz):
        return (0.1 * sum(np.sin(2 * np.pi * k * hz * t) / k for k in range(1, 8))).astype(np.float32)

    ref = f0_track(voice(113.0), sr)
    assert pitch_accuracy(ref, voice(113.0), sr) > 0.9
    assert pitch_accuracy(ref, voice(100.0), sr) < 0.1
    assert np.isnan(pitch_accuracy(f0_track(np.zeros(sr, np.float32), sr), voice(113.0), sr))


def test_pitch_scores_measure_cents_and_voicing():
    """20 cents sharp: accurate (within 50), RMSE about 20, voicing right; a voice that stops
    halfway: the voicing error is the share of frames it lost."""
    from codec_eval import f0_track, pitch_scores
    sr = 24000
    t = np.arange(sr) / sr

    def voice(hz):
        return (0.1 * sum(np.sin(2 * np.pi * k * hz * t) / k for k in range(1, 8))).astype(np.float32)

    ref = f0_track(voice(150.0), sr)
    sharp = pitch_scores(ref, voice(150.0 * 2 ** (20 / 1200)), sr)
    assert sharp["pitch_acc"] > 0.9 and 10 < sharp["f0_rmse_cents"] < 30 and sharp["voicing_error"] < 0.05
    half = voice(150.0) * (t < 0.5)
    cut = pitch_scores(ref, half.astype(np.float32), sr)
    assert 0.4 < cut["voicing_error"] < 0.6 and cut["f0_rmse_cents"] < 10


def test_speaker_identification_counts_who_is_heard():
    """Two bank voices told apart by pitch (a stand-in speaker encoder): the originals are all
    identified, and the confusions say who was heard as whom."""
    from codec_eval import f0_track, speaker_identification

    class PitchEncoder:  # low voice -> [1, 0], high voice -> [0, 1]
        def embed(self, pcm, sr):
            f0 = f0_track(pcm, sr)
            f0 = f0[~np.isnan(f0)]  # a decoded clip may be unvoiced throughout: heard as "high"
            return np.array([1.0, 0.0]) if len(f0) and np.median(f0) < 160 else np.array([0.0, 1.0])

    class Bank:
        def identify(self, emb):
            return ("low", 1.0) if emb[0] > emb[1] else ("high", 1.0)

    clips = {"a": ("low", speech_like(0.8, f0=110.0, seed=0)), "b": ("high", speech_like(0.8, f0=230.0, seed=1))}
    result = speaker_identification(tiny_codec(), clips, [1, 2], opus_kbps=(12,), encoder=PitchEncoder(), bank=Bank())
    assert set(result) == {"original", "codec_1cb_100bps", "codec_2cb_200bps", "opus_12kbps"}
    assert result["original"]["accuracy"] == 1.0 and result["original"]["n"] == 2
    assert result["opus_12kbps"]["confusions"] == {"low": {"low": 1}, "high": {"high": 1}}
    assert all(sum(n for row in r["confusions"].values() for n in row.values()) == 2 for r in result.values())
