"""telugu_tts (espeak-ng through ctypes) and synthetic_corpus (the corpus build), on tiny inputs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import audio_io
import synthetic_corpus
import telugu_tts

ROOT = Path(__file__).resolve().parents[1]
TEXT = "ఈ రోజు వాతావరణం చాలా బాగుంది, మీరు ఎలా ఉన్నారు?"  # no digits: normalisation leaves it as is


def _f0(pcm, sr=audio_io.SAMPLE_RATE):
    """Median autocorrelation pitch of the voiced 40 ms frames."""
    frame, hop, out = int(0.04 * sr), int(0.01 * sr), []
    for i in range(0, len(pcm) - frame, hop):
        x = pcm[i:i + frame] - pcm[i:i + frame].mean()
        if np.sqrt(np.mean(x**2)) < 0.02:
            continue
        ac = np.correlate(x, x, "full")[frame - 1:]
        lag = sr // 400 + int(np.argmax(ac[sr // 400: sr // 60]))
        if ac[lag] > 0.5 * ac[0]:
            out.append(sr / lag)
    return float(np.median(out))


def _centroid(pcm, sr=audio_io.SAMPLE_RATE, n=1024):
    spec = np.abs(np.fft.rfft(pcm[: len(pcm) // n * n].reshape(-1, n) * np.hanning(n), axis=1))
    loud = spec.sum(1) > 0.05 * spec.sum(1).max()
    return float((spec[loud] * np.fft.rfftfreq(n, 1 / sr)).sum() / spec[loud].sum())


def test_synthesize_audio_and_word_timings():
    pcm, words = telugu_tts.synthesize(TEXT, "lakshmi")
    native, _ = telugu_tts.engine().synth(telugu_tts.spoken_text(TEXT), telugu_tts.VOICES["lakshmi"])
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    # resampled to 24 kHz (espeak's output length varies by a few samples from call to call: its
    # flutter/pitch state carries over between utterances)
    assert len(pcm) / len(native) == pytest.approx(24000 / telugu_tts.engine().sample_rate, rel=0.005)
    duration = len(pcm) / 24000
    assert duration > 1.0 and np.sqrt(np.mean(pcm**2)) > 0.01
    assert [w["word"] for w in words] == [t.strip(",?") for t in TEXT.split()]
    assert words[0]["start"] >= 0 and words[-1]["end"] <= duration
    for a, b in zip(words, words[1:]):
        assert a["start"] <= a["end"] <= b["start"] <= b["end"]
    # the comma pause belongs to no word: "బాగుంది," ends before "మీరు" starts
    assert words[5]["start"] - words[4]["end"] > 0.05


def test_catalogue_voices_sound_different():
    female, _ = telugu_tts.synthesize(TEXT, "lakshmi")
    male, _ = telugu_tts.synthesize(TEXT, "ravi")
    other_male, _ = telugu_tts.synthesize(TEXT, "kiran")
    assert _f0(female) > 1.5 * _f0(male)
    assert abs(_centroid(male) - _centroid(other_male)) > 0.15 * _centroid(male)


def test_catalogue_roles():
    catalogue = telugu_tts.voices()
    assert len(catalogue) >= 24
    agents = telugu_tts.voices("agent")
    assert len(agents) == 4 and sorted(v.gender for v in agents) == ["female", "female", "male", "male"]
    assert set(agents) <= set(telugu_tts.voices("train"))
    train_variants = {v.variant for v in telugu_tts.voices("train")}
    for role in ("val", "test"):
        held = telugu_tts.voices(role)
        assert len(held) >= 3 and {v.gender for v in held} == {"female", "male"}
        assert not train_variants & {v.variant for v in held}  # genuinely unseen timbres
    assert not {v.variant for v in telugu_tts.voices("val")} & {v.variant for v in telugu_tts.voices("test")}
    for v in catalogue:  # every variant file exists in the shipped espeak-ng data
        telugu_tts._check_variant(v.variant, telugu_tts.engine().data_path)


def test_clear_errors():
    with pytest.raises(telugu_tts.TTSError, match="known voices.*lakshmi"):
        telugu_tts.synthesize(TEXT, "nobody")
    with pytest.raises(telugu_tts.TTSError, match="nothing to speak"):
        telugu_tts.synthesize(" ,. ", "ravi")
    with pytest.raises(telugu_tts.TTSError, match="/nonexistent/libespeak-ng.so"):
        telugu_tts._Espeak(library_path="/nonexistent/libespeak-ng.so")
    with pytest.raises(telugu_tts.TTSError, match="not found"):
        telugu_tts.synthesize(TEXT, telugu_tts.Voice("x", "te+no_such_variant", "male"))


def test_cli_writes_wav(tmp_path):
    out = tmp_path / "ravi.wav"
    run = subprocess.run([sys.executable, "telugu_tts.py", TEXT, "--voice", "ravi", "--out", str(out), "--words"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    info = sf.info(str(out))
    assert info.samplerate == 24000 and info.channels == 1 and info.subtype == "PCM_16"
    assert len(json.loads(run.stdout)) == len(TEXT.split())
    assert audio_io.load_audio(out).size == info.frames
    bad = subprocess.run([sys.executable, "telugu_tts.py", TEXT, "--voice", "nobody", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "lakshmi" in bad.stderr


SENTENCES = {
    "greeting": ["నమస్కారం, మీరు ఎలా ఉన్నారు?", "శుభోదయం అండి.", "మిమ్మల్ని కలవడం సంతోషంగా ఉంది.", "మళ్ళీ కలుద్దాం."],
    "weather": ["ఈ రోజు వాతావరణం చాలా బాగుంది.", "రేపు వర్షం పడే అవకాశం ఉంది.", "ఇక్కడ చాలా వేడిగా ఉంది.",
                "చలికాలం వచ్చేసింది."],
    "food": ["నాకు బిర్యానీ అంటే ఇష్టం.", "అన్నం తిన్నారా?", "ఈ కూర చాలా రుచిగా ఉంది.", "ఒక కప్పు కాఫీ ఇవ్వండి."],
}
BUILD_VOICES = ["lakshmi", "train_m1", "val_andrea", "val_michel", "test_shelby", "test_m8"]


def test_build_splits_fields_and_idempotence(tmp_path):
    tsv = tmp_path / "sentences.tsv"
    tsv.write_text("category\tsentence\n" + "".join(f"{c}\t{s}\n" for c, ss in SENTENCES.items() for s in ss),
                   encoding="utf-8")
    out = tmp_path / "corpus"
    kwargs = dict(sentences_path=tsv, per_voice_train=6, per_voice_heldout=3, heldout_sentence_fraction=0.25,
                  workers=2, seed=0, progress=False, voices=BUILD_VOICES)
    paths = synthetic_corpus.build(out, **kwargs)

    rows = {split: list(audio_io.read_manifest(paths[split])) for split in ("train", "val", "test")}
    speakers = {split: {r["speaker"] for r in rs} for split, rs in rows.items()}
    texts = {split: {r["text"] for r in rs} for split, rs in rows.items()}
    assert speakers == {"train": {"lakshmi", "train_m1"}, "val": {"val_andrea", "val_michel"},
                        "test": {"test_shelby", "test_m8"}}
    assert not texts["train"] & (texts["val"] | texts["test"])  # sentence-disjoint
    assert len(rows["train"]) == 12 and len(rows["val"]) == len(rows["test"]) == 6
    for split, rs in rows.items():
        for r in rs:
            assert {"audio", "text", "speaker", "lang", "duration", "split", "words", "category", "gender"} <= set(r)
            assert r["split"] == split and r["lang"] == "te" and r["gender"] in ("female", "male")
            pcm = audio_io.load_audio(r["audio"])
            assert abs(len(pcm) / 24000 - r["duration"]) < 1e-3 and sf.info(r["audio"]).samplerate == 24000
            assert len(r["words"]) == len(r["text"].split())
            assert all(0 <= w["start"] <= w["end"] <= r["duration"] for w in r["words"])
    summary = json.loads(paths["corpus"].read_text(encoding="utf-8"))
    assert len(summary["heldout_sentence_ids"]) == 3  # one per category
    assert summary["counts"] == {"train": 12, "val": 6, "test": 6} and summary["total_hours"] > 0

    wavs = sorted((out / "wavs").rglob("*.wav"))
    mtimes = {p: p.stat().st_mtime_ns for p in wavs}
    manifests = {split: paths[split].read_bytes() for split in ("train", "val", "test")}
    again = synthetic_corpus.build(out, **kwargs)
    assert {p: p.stat().st_mtime_ns for p in sorted((out / "wavs").rglob("*.wav"))} == mtimes
    assert {split: again[split].read_bytes() for split in ("train", "val", "test")} == manifests
