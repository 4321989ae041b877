"""prepare_speaker_data.py as a user runs it: tiny fake corpora in each real layout, with broken
files in every one, through a subprocess; then the manifests, the audio, the rejects, the splits,
and a second run that must change nothing."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "prepare_speaker_data.py"
FIELDS = ("audio", "text", "speaker", "lang", "duration", "split")

# Broken files planted in every corpus, and the words their rejection reason must contain.
BROKEN = {"garbage": "cannot decode", "empty": "empty", "clipped": "clipped", "short": "too short"}


def speech_like(sr: int, seconds: float = 0.9, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A voiced tone with a syllable-rate envelope and a little noise, framed by silence to trim."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 110 + 40 * seed % 120
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    pcm = 0.2 * voiced + 0.01 * rng.standard_normal(t.size)
    pad = np.zeros(int(0.2 * sr))
    pcm = np.concatenate([pad, pcm, pad]).astype(np.float32)
    return np.stack([pcm] * channels, axis=1) if channels > 1 else pcm


def broken_audio(kind: str, sr: int) -> np.ndarray | bytes:
    if kind == "garbage":
        return b"RIFF\x24\x00\x00\x00WAVEfmt this is not audio" * 20
    if kind == "empty":
        return b""
    if kind == "clipped":
        return np.clip(10.0 * speech_like(sr), -1, 1)
    return speech_like(sr, seconds=0.1)[int(0.2 * sr):int(0.3 * sr)]  # "short": 0.1 s, no padding


def write_audio(path: Path, audio, sr: int, fmt: str = "WAV") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(audio, bytes):
        path.write_bytes(audio)
    else:
        sf.write(path, audio, sr, format=fmt, **({"subtype": "PCM_16"} if fmt == "WAV" else {}))


def audio_bytes(audio, sr: int) -> bytes:
    if isinstance(audio, bytes):
        return audio
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --- one builder per real layout; each returns {planted source path fragment: expected reason} ----

def make_librispeech(root: Path) -> dict:
    expected = {}
    for n, spk in enumerate(("19", "26", "32")):
        chapter = root / "librispeech/LibriSpeech/train-clean-100" / spk / "198"
        lines = []
        for i in range(2):
            utt = f"{spk}-198-{i:04d}"
            write_audio(chapter / f"{utt}.flac", speech_like(16000, seed=n * 10 + i), 16000, "FLAC")
            lines.append(f"{utt} HELLO FROM SPEAKER {spk}")
        if spk == "19":
            for i, kind in enumerate(BROKEN, start=10):
                utt = f"{spk}-198-{i:04d}"
                write_audio(chapter / f"{utt}.flac", broken_audio(kind, 16000), 16000, "FLAC")
                lines.append(f"{utt} BROKEN {kind.upper()}")
                expected[f"{utt}.flac"] = BROKEN[kind]
        (chapter / f"{spk}-198.trans.txt").write_text("\n".join(lines) + "\n")
    return expected


def make_vctk(root: Path) -> dict:
    expected = {}
    base = root / "vctk"
    for n, spk in enumerate(("p225", "p226", "p227")):
        for i in range(1, 3):
            utt = f"{spk}_{i:03d}"
            write_audio(base / "wav48_silence_trimmed" / spk / f"{utt}_mic1.flac", speech_like(48000, seed=n + i), 48000, "FLAC")
            write_audio(base / "wav48_silence_trimmed" / spk / f"{utt}_mic2.flac", speech_like(48000, seed=99), 48000, "FLAC")
            (base / "txt" / spk).mkdir(parents=True, exist_ok=True)
            (base / "txt" / spk / f"{utt}.txt").write_text(f"Please call Stella {spk}.\n")
    for i, kind in enumerate(BROKEN, start=10):
        utt = f"p226_{i:03d}"
        write_audio(base / "wav48_silence_trimmed/p226" / f"{utt}_mic1.flac", broken_audio(kind, 48000), 48000, "FLAC")
        expected[f"{utt}_mic1.flac"] = BROKEN[kind]
    return expected


def make_ljspeech(root: Path) -> dict:
    base, expected, lines = root / "ljspeech/LJSpeech-1.1", {}, []
    for i in range(1, 3):
        write_audio(base / "wavs" / f"LJ001-{i:04d}.wav", speech_like(22050, seed=i), 22050)
        lines.append(f"LJ001-{i:04d}|Printing, in the only sense {i}|Printing, in the only sense {i}")
    for i, kind in enumerate(BROKEN, start=10):
        write_audio(base / "wavs" / f"LJ002-{i:04d}.wav", broken_audio(kind, 22050), 22050)
        lines.append(f"LJ002-{i:04d}|broken {kind}|broken {kind}")
        expected[f"LJ002-{i:04d}.wav"] = BROKEN[kind]
    (base / "metadata.csv").write_text("\n".join(lines) + "\n")
    return expected


def make_slr66(root: Path) -> dict:
    expected = {}
    for gender, speakers in (("female", ("tef_00001", "tef_00002")), ("male", ("tem_00003", "tem_00004"))):
        folder, lines = root / "slr66" / f"te_in_{gender}", []
        for n, spk in enumerate(speakers):
            for i in range(2):
                utt = f"{spk}_0000{n}{i}1234"
                write_audio(folder / f"{utt}.wav", speech_like(48000, seed=n * 3 + i + len(gender)), 48000)
                lines.append(f"{utt}\tనమస్కారం {i}")
        if gender == "male":
            for i, kind in enumerate(BROKEN):
                utt = f"tem_00003_9999{i}"
                write_audio(folder / f"{utt}.wav", broken_audio(kind, 48000), 48000)
                lines.append(f"{utt}\tపాడైన ఫైలు")
                expected[f"{utt}.wav"] = BROKEN[kind]
            lines.append("tem_00004_77777\tఫైలు లేదు")  # listed, never recorded
            expected["tem_00004_77777.wav"] = "missing"
        (folder / "line_index.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected


def make_indictts(root: Path) -> dict:
    from datasets import Audio, ClassLabel, Dataset, Features, Value
    rows = {"audio": [], "text": [], "gender": []}
    for gender in (0, 1):
        for i in range(2):
            rows["audio"].append({"bytes": audio_bytes(speech_like(48000, seed=gender * 5 + i), 48000), "path": f"{gender}_{i}.wav"})
            rows["text"].append("తెలుగు వాక్యం")
            rows["gender"].append(gender)
    expected = {}
    for kind in BROKEN:
        expected[f"#row={len(rows['text'])}"] = BROKEN[kind]
        rows["audio"].append({"bytes": audio_bytes(broken_audio(kind, 48000), 48000), "path": f"{kind}.wav"})
        rows["text"].append(kind)
        rows["gender"].append(1)
    features = Features({"audio": {"bytes": Value("binary"), "path": Value("string")}, "text": Value("string"),
                         "gender": ClassLabel(names=["female", "male"])})
    # Dataset(Audio).encode needs torchcodec; a struct cast to Audio(decode=False) is what the Hub stores.
    ds = Dataset.from_dict(rows, features=features).cast_column("audio", Audio(decode=False))
    (root / "indictts/data").mkdir(parents=True)
    ds.to_parquet(str(root / "indictts/data/train-00000-of-00001.parquet"))
    return expected


def make_commonvoice(root: Path) -> dict:
    base = root / "commonvoice/cv-corpus-20.0-2024-12-06/te"
    lines, expected = ["client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes"], {}
    for n, client in enumerate(("a" * 128, "b" * 128)):
        for i in range(2):
            clip = f"common_voice_te_{n}{i}.mp3"
            write_audio(base / "clips" / clip, speech_like(48000, seed=20 + n * 2 + i), 48000, "MP3")
            lines.append(f"{client}\t{clip}\tx\t\"ఇది\" ఒక వాక్యం\t\t2\t0")
    for i, kind in enumerate(BROKEN):
        clip = f"common_voice_te_9{i}.mp3"
        write_audio(base / "clips" / clip, broken_audio(kind, 48000), 48000, "MP3")
        lines.append(f"{'b' * 128}\t{clip}\tx\tపాడైన\t\t2\t0")
        expected[clip] = BROKEN[kind]
    lines.append(f"{'a' * 128}\tcommon_voice_te_missing.mp3\tx\tలేదు\t\t2\t0")
    expected["common_voice_te_missing.mp3"] = "missing"
    (base / "validated.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected


def make_folder(root: Path) -> dict:
    base, expected = root / "folder", {}
    write_audio(base / "anitha/hello.wav", speech_like(44100, seed=40, channels=2), 44100)  # stereo 44.1 kHz
    (base / "anitha/hello.txt").write_text("నమస్తే\n", encoding="utf-8")
    write_audio(base / "anitha/second.wav", speech_like(16000, seed=41), 16000)
    write_audio(base / "ravi/one.wav", speech_like(24000, seed=42), 24000)
    write_audio(base / "ravi/two.wav", speech_like(8000, seed=43), 8000)
    for kind in BROKEN:
        write_audio(base / "ravi" / f"bad_{kind}.wav", broken_audio(kind, 16000), 16000)
        expected[f"bad_{kind}.wav"] = BROKEN[kind]
    return expected


BUILDERS = {"librispeech": make_librispeech, "vctk": make_vctk, "ljspeech": make_ljspeech, "slr66": make_slr66,
            "indictts": make_indictts, "commonvoice": make_commonvoice, "folder": make_folder}


def run(*args, cwd=ROOT, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("prepared")
    expected = {corpus: build(data) for corpus, build in BUILDERS.items()}
    result = run(SCRIPT, "--data_dir", data, "--out", out, "--workers", 2, "--val_speakers", 1, "--test_speakers", 1)
    assert result.returncode == 0, result.stdout + result.stderr
    return data, out, expected, result


def test_every_corpus_is_found_and_manifests_are_complete(prepared):
    _, out, _, result = prepared
    rows = [row for split in ("train", "val", "test") for row in read_jsonl(out / f"{split}.jsonl")]
    corpora = {row["audio"].split("/")[1] for row in rows}
    assert corpora == set(BUILDERS), result.stdout
    for row in rows:
        assert all(field in row for field in FIELDS), row
        assert row["lang"] == ("en" if row["audio"].split("/")[1] in ("librispeech", "vctk", "ljspeech") else "te")
        assert row["duration"] > 0.5 and "words" not in row
    by_audio = {row["audio"]: row for row in rows}
    assert by_audio["wavs/vctk/p225/p225_001.wav"]["text"] == "Please call Stella p225."
    assert by_audio["wavs/librispeech/19/19-198-0000.wav"]["speaker"] == "librispeech_19"
    assert by_audio["wavs/slr66/tef_00001/tef_00001_0000001234.wav"]["text"] == "నమస్కారం 0"
    assert by_audio["wavs/folder/anitha/hello.wav"]["text"] == "నమస్తే"
    assert by_audio["wavs/commonvoice/aaaaaaaaaaaaaaaa/common_voice_te_00.wav"]["text"] == '"ఇది" ఒక వాక్యం'
    assert {row["speaker"] for row in rows if "/indictts/" in row["audio"]} == {"indictts_female", "indictts_male"}
    assert len([r for r in rows if "/slr66/" in r["audio"]]) == 8


def test_audio_is_24k_mono_pcm16_and_normalised(prepared):
    _, out, _, _ = prepared
    rows = [row for split in ("train", "val", "test") for row in read_jsonl(out / f"{split}.jsonl")]
    for row in rows:
        info = sf.info(str(out / row["audio"]))
        assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16"), row["audio"]
        assert abs(info.frames / 24000 - row["duration"]) < 2e-3
    pcm, _ = sf.read(str(out / rows[0]["audio"]))
    assert 0.02 < np.sqrt(np.mean(pcm**2)) < 0.2 and np.abs(pcm).max() <= 0.96  # about -23 dBFS, no clipping
    # 0.2 s of silence on each side was trimmed to the 0.1 s margin
    assert by_corpus_duration(rows, "ljspeech") < 0.9 + 2 * 0.15


def by_corpus_duration(rows, corpus):
    return max(r["duration"] for r in rows if f"/{corpus}/" in r["audio"])


def test_every_broken_file_is_rejected_with_its_reason(prepared):
    _, out, expected, result = prepared
    rejected = read_jsonl(out / "rejected.jsonl")
    assert "Traceback" not in result.stderr
    for corpus, planted in expected.items():
        for fragment, reason in planted.items():
            hits = [r for r in rejected if r["corpus"] == corpus and r["source"].endswith(fragment)]
            assert len(hits) == 1, (corpus, fragment, rejected)
            assert reason in hits[0]["reason"].lower(), (corpus, fragment, hits[0])
    assert len(rejected) == sum(len(p) for p in expected.values()), rejected


def test_splits_are_speaker_disjoint_and_held_out_per_corpus(prepared):
    _, out, _, _ = prepared
    speakers = {split: {r["speaker"] for r in read_jsonl(out / f"{split}.jsonl")} for split in ("train", "val", "test")}
    assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"] or speakers["val"] & speakers["test"])
    for split in ("val", "test"):  # one speaker each from the corpora with at least 3 speakers
        assert {s.split("_")[0] for s in speakers[split]} == {"librispeech", "vctk", "slr66"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["train_only_corpora"]) == {"ljspeech", "indictts", "commonvoice", "folder"}
    assert summary["corpora"]["vctk"]["utterances"] == 6 and summary["corpora"]["vctk"]["rejected"] == 4
    assert summary["splits"]["train"]["hours"] > 0 and summary["rejected"]["by_reason"]["clipped"] == 7
    assert sum(s["utterances"] for s in summary["speakers"].values()) == sum(c["utterances"] for c in summary["corpora"].values())


def test_rerun_is_idempotent(prepared):
    data, out, _, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in (out / "wavs").rglob("*.wav")}
    manifests = {s: (out / f"{s}.jsonl").read_text() for s in ("train", "val", "test", "rejected")}
    result = run(SCRIPT, "--data_dir", data, "--out", out, "--workers", 2, "--val_speakers", 1, "--test_speakers", 1)
    assert result.returncode == 0, result.stderr
    assert "already prepared" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "wavs").rglob("*.wav")} == before
    assert {s: (out / f"{s}.jsonl").read_text() for s in manifests} == manifests


def test_corpora_flag_and_max_per_speaker(prepared, tmp_path):
    data, _, _, _ = prepared
    result = run(SCRIPT, "--data_dir", data, "--out", tmp_path, "--corpora", "vctk,ljspeech", "--workers", 1,
                 "--max_per_speaker", 1, "--val_speakers", 0, "--test_speakers", 0)
    assert result.returncode == 0, result.stderr
    # one utterance a speaker is taken, before cleaning: a broken one shows up as a reject instead
    taken = [r["speaker"] for r in read_jsonl(tmp_path / "train.jsonl") + read_jsonl(tmp_path / "rejected.jsonl")]
    assert sorted(taken) == ["ljspeech_LJ", "vctk_p225", "vctk_p226", "vctk_p227"]


def test_clear_errors(tmp_path):
    result = run(SCRIPT, "--data_dir", tmp_path / "nope", "--out", tmp_path / "out")
    assert result.returncode != 0 and "does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run(SCRIPT, "--data_dir", tmp_path / "empty", "--out", tmp_path / "out")
    assert result.returncode != 0 and "no known corpus" in result.stderr
    assert "slr66/*/line_index.tsv" in result.stderr and "wav48_silence_trimmed" in result.stderr
    result = run(SCRIPT, "--data_dir", tmp_path / "empty", "--out", tmp_path / "out", "--corpora", "vctk")
    assert result.returncode != 0 and "'vctk' not found" in result.stderr


def test_synthetic_flag_calls_synthetic_corpus_build(tmp_path):
    """--synthetic hands over to synthetic_corpus.build; a stub stands in for the real module."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "synthetic_corpus.py").write_text(
        "import json\nfrom pathlib import Path\n"
        "def build(out_dir, **kwargs):\n"
        "    Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
        "    (Path(out_dir) / 'called.json').write_text(json.dumps(kwargs))\n"
        "    return {'train': Path(out_dir) / 'train.jsonl'}\n")
    launcher = (f"import sys, runpy; sys.path.insert(0, {str(stub)!r}); sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    result = run("-c", launcher, SCRIPT, "--synthetic", "--out", tmp_path / "syn", "--workers", 3, "--seed", 7, "--per_voice", 5)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "syn/called.json").read_text()) == {"workers": 3, "seed": 7, "per_voice_train": 5}


def test_mp3_falls_back_to_pyav_where_libsndfile_cannot_read_it(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    import prepare_speaker_data as prep
    mp3 = tmp_path / "clip.mp3"
    write_audio(mp3, speech_like(48000), 48000, "MP3")

    def libsndfile_before_1_1(*args, **kwargs):
        raise RuntimeError("Error opening: Format not recognised.")

    monkeypatch.setattr(prep.sf, "read", libsndfile_before_1_1)
    pcm, sr = prep.decode(str(mp3))
    assert sr == 48000 and abs(len(pcm) - 1.3 * 48000) < 0.05 * 48000 and pcm.dtype == np.float32
    (tmp_path / "junk.mp3").write_bytes(b"ID3 but nothing after it")
    with pytest.raises(prep.AudioError, match="cannot decode audio.*PyAV"):
        prep.decode(str(tmp_path / "junk.mp3"))
