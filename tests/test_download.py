"""download_datasets.sh against a loopback HTTP server serving tiny archives in the real corpora's
layouts (tar.gz, zip, tar.bz2 as published): download, checksum, extraction, markers, re-runs,
a corrupted archive, an unreachable host, --dry-run, resuming a partial file, the disk check."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "download_datasets.sh"
UNREACHABLE = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused, at once


def tone(sr: int, fmt: str, seconds: float = 0.9) -> bytes:
    t = np.arange(int(sr * seconds)) / sr
    buf = io.BytesIO()
    sf.write(buf, 0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)), sr, format=fmt)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def corpus_archives() -> dict[str, bytes]:
    """URL path -> archive, laid out as the real ones are inside."""
    flac16, flac48, wav22, wav48 = tone(16000, "FLAC"), tone(48000, "FLAC"), tone(22050, "WAV"), tone(48000, "WAV")
    return {
        "/resources/12/train-clean-100.tar.gz": tar_bytes({
            "LibriSpeech/SPEAKERS.TXT": b"; ID |SEX| SUBSET | MINUTES | NAME\n19 | F | train-clean-100 | 25.19 | Kara\n",
            "LibriSpeech/train-clean-100/19/198/19-198-0000.flac": flac16,
            "LibriSpeech/train-clean-100/19/198/19-198.trans.txt": b"19-198-0000 NORTHANGER ABBEY\n"}, "w:gz"),
        "/resources/66/te_in_female.zip": zip_bytes({
            "line_index.tsv": "tef_00001_00000000001\tనమస్కారం\n".encode(), "tef_00001_00000000001.wav": wav48,
            "LICENSE": b"CC-BY-SA-4.0\n"}),
        "/resources/66/te_in_male.zip": zip_bytes({
            "line_index.tsv": "tem_00002_00000000002\tనమస్కారం\n".encode(), "tem_00002_00000000002.wav": wav48}),
        "/datashare/VCTK-Corpus-0.92.zip": zip_bytes({
            "speaker-info.txt": b"ID  AGE  GENDER  ACCENTS  REGION COMMENTS\np225  23  F  English  Southern  England\n",
            "wav48_silence_trimmed/p225/p225_001_mic1.flac": flac48,
            "wav48_silence_trimmed/p225/p225_001_mic2.flac": flac48,
            "txt/p225/p225_001.txt": b"Please call Stella.\n"}),
        "/keithito/LJSpeech-1.1.tar.bz2": tar_bytes({
            "LJSpeech-1.1/README": b"LJ Speech Dataset\n",
            "LJSpeech-1.1/metadata.csv": b"LJ001-0001|Printing, in the only sense|Printing, in the only sense\n",
            "LJSpeech-1.1/wavs/LJ001-0001.wav": wav22}, "w:bz2"),
    }


def indictts_parquet() -> bytes:
    """A shard as the Hub stores IndicTTS: audio {bytes, path} (Audio feature), text, gender ClassLabel."""
    from datasets import Audio, ClassLabel, Dataset, Features, Value
    features = Features({"audio": {"bytes": Value("binary"), "path": Value("string")}, "text": Value("string"),
                         "gender": ClassLabel(names=["female", "male"])})
    rows = {"audio": [{"bytes": tone(48000, "WAV"), "path": f"{g}.wav"} for g in ("f", "m")],
            "text": ["తెలుగు", "వాక్యం"], "gender": [0, 1]}
    buf = io.BytesIO()
    Dataset.from_dict(rows, features=features).cast_column("audio", Audio(decode=False)).to_parquet(buf)
    return buf.getvalue()


HUB_REPO, HUB_SHA = "SPRINGLab/IndicTTS_Telugu", "0123456789abcdef0123456789abcdef01234567"


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD with byte ranges, as the real hosts serve them (http.server's own has no Range),
    plus the three HF Hub routes snapshot_download uses: revision info, file tree, resolve."""

    def do_HEAD(self):
        self.respond(send_body=False)

    def do_GET(self):
        self.respond(send_body=True)

    def respond(self, send_body: bool):
        self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        if self.path.startswith(f"/api/datasets/{HUB_REPO}/"):
            self.send_hub_listing(send_body)
            return
        body = self.server.files.get(self.path.replace(f"/resolve/{HUB_SHA}/", "/resolve/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        ranges = self.headers.get("Range", "") if self.server.honours_ranges else ""
        if ranges.startswith("bytes="):
            start = int(ranges[6:].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        if self.path.startswith("/datasets/"):
            self.send_header("X-Repo-Commit", HUB_SHA)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.end_headers()
        if send_body:
            self.wfile.write(body[start:])

    def send_hub_listing(self, send_body: bool):
        prefix = f"/datasets/{HUB_REPO}/resolve/"
        files = {p[len(prefix):]: d for p, d in self.server.files.items() if p.startswith(prefix)}
        if "/tree/" in self.path:
            listing = [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()} for f, d in files.items()]
        else:
            listing = {"id": HUB_REPO, "sha": HUB_SHA, "siblings": [{"rfilename": f} for f in files]}
        data = json.dumps(listing).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.honours_ranges = corpus_archives(), [], True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def checksums_file(tmp_path: Path, server, names=("train-clean-100.tar.gz", "VCTK-Corpus-0.92.zip", "LJSpeech-1.1.tar.bz2")) -> Path:
    """The shipped checksums are the real corpora's; the tiny archives get theirs from this file."""
    lines = []
    for path, data in server.files.items():
        name = path.rsplit("/", 1)[1]
        if name in names:
            digest = hashlib.sha256(data).hexdigest() if name.endswith("bz2") else hashlib.md5(data).hexdigest()
            lines.append(f"{digest}  {name}")
    out = tmp_path / "checksums.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def download(server, dest: Path, *args, checksums: Path | None = None, **env_overrides):
    env = {**os.environ, "no_proxy": "*", "NO_PROXY": "*", "CONNECT_TIMEOUT": "5", "PYTHON": sys.executable,
           "OPENSLR_BASE": f"{server.base}/resources", "VCTK_URL": f"{server.base}/datashare/VCTK-Corpus-0.92.zip",
           "LJSPEECH_URL": f"{server.base}/keithito/LJSpeech-1.1.tar.bz2", "HF_ENDPOINT": UNREACHABLE}
    env.pop("DOWNLOAD_CHECKSUMS", None)
    if checksums:
        env["DOWNLOAD_CHECKSUMS"] = str(checksums)
    env.update(env_overrides)
    return subprocess.run(["bash", str(SCRIPT), "--dest", str(dest), "--reserve-gb", "0", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def gets(server) -> list[str]:
    return [path for method, path, _ in server.requests if method == "GET"]


def test_codec_corpora_download_verify_extract_then_rerun_does_nothing(server, tmp_path):
    dest = tmp_path / "raw"
    result = download(server, dest, "--only", "codec", checksums=checksums_file(tmp_path, server))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (dest / "librispeech/LibriSpeech/train-clean-100/19/198/19-198-0000.flac").is_file()
    assert (dest / "vctk/wav48_silence_trimmed/p225/p225_001_mic1.flac").is_file()
    assert (dest / "ljspeech/LJSpeech-1.1/wavs/LJ001-0001.wav").is_file()
    for marker in ("librispeech/.train-clean-100.tar.gz.done", "vctk/.VCTK-Corpus-0.92.zip.done",
                   "ljspeech/.LJSpeech-1.1.tar.bz2.done"):
        assert (dest / marker).is_file(), marker
    assert not list(dest.rglob("*.tar.gz")) and not list(dest.rglob("*.part"))  # archives go once extracted
    assert "md5 checksum OK" in result.stdout and "sha256 checksum OK" in result.stdout
    assert not (dest / "slr66").exists()  # --only codec

    server.requests.clear()
    again = download(server, dest, "--only", "codec", checksums=checksums_file(tmp_path, server))
    assert again.returncode == 0 and server.requests == [], again.stdout
    assert again.stdout.count("already downloaded and extracted") == 3

    # what it laid out is what prepare_speaker_data.py reads
    prepared = subprocess.run([sys.executable, str(ROOT / "prepare_speaker_data.py"), "--data_dir", str(dest),
                               "--out", str(tmp_path / "prepared"), "--workers", "1"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert prepared.returncode == 0, prepared.stderr
    assert "librispeech, vctk, ljspeech" in prepared.stdout
    assert len((tmp_path / "prepared/train.jsonl").read_text().splitlines()) == 3


def test_telugu_records_checksums_and_reports_the_unreachable_hub(server, tmp_path):
    dest = tmp_path / "raw"
    result = download(server, dest, "--only", "telugu")
    assert result.returncode == 1, result.stdout + result.stderr
    # SLR66 publishes no checksum: the first download records one
    for gender in ("female", "male"):
        assert (dest / f"slr66/te_in_{gender}/line_index.tsv").is_file()
        assert (dest / f"slr66/te_in_{gender}.zip.sha256").is_file() and (dest / f"slr66/.te_in_{gender}.zip.done").is_file()
    assert "recorded sha256" in result.stdout
    # IndicTTS's hub is unreachable: named, the rest still done, non-zero exit, summary
    assert f"cannot reach {UNREACHABLE}" in result.stderr and "FAILED:" in result.stdout
    assert "indictts" in result.stdout.split("FAILED:")[1]
    assert "Common Voice Telugu is gated" in result.stdout and f"{dest}/commonvoice" in result.stdout

    # a later download that differs from the recorded checksum is refused and deleted
    (dest / "slr66/.te_in_female.zip.done").unlink()
    server.files["/resources/66/te_in_female.zip"] = server.files["/resources/66/te_in_female.zip"][:-10] + b"corrupted!"
    result = download(server, dest, "--only", "telugu")
    assert result.returncode == 1
    assert "checksum mismatch for te_in_female.zip" in result.stderr and "te_in_female.zip.sha256" in result.stderr
    assert not (dest / "slr66/te_in_female.zip").exists() and not (dest / "slr66/.te_in_female.zip.done").exists()


def test_indictts_comes_from_the_hub_as_parquet(server, tmp_path):
    dest = tmp_path / "raw"
    server.files[f"/datasets/{HUB_REPO}/resolve/data/train-00000-of-00001.parquet"] = indictts_parquet()
    server.files[f"/datasets/{HUB_REPO}/resolve/README.md"] = b"# Telugu Indic TTS Dataset\n"
    result = download(server, dest, "--only", "telugu", HF_ENDPOINT=server.base, HF_HUB_DISABLE_TELEMETRY="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (dest / "indictts/data/train-00000-of-00001.parquet").is_file()
    assert "train-00000-of-00001.parquet" in (dest / "indictts/SHA256SUMS").read_text()
    assert (dest / "indictts/.hub.done").is_file()
    assert "disk: needs ~0.0 GB" in result.stdout  # the Hub's own file sizes, not the 6.4 GB estimate

    server.requests.clear()
    assert download(server, dest, "--only", "telugu", HF_ENDPOINT=server.base).returncode == 0
    assert server.requests == []

    prepared = subprocess.run([sys.executable, str(ROOT / "prepare_speaker_data.py"), "--data_dir", str(dest),
                               "--out", str(tmp_path / "prepared"), "--workers", "1"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert prepared.returncode == 0, prepared.stderr
    speakers = {json.loads(line)["speaker"] for line in (tmp_path / "prepared/train.jsonl").read_text().splitlines()}
    assert speakers == {"indictts_female", "indictts_male", "slr66_tef_00001", "slr66_tem_00002"}


def test_corrupt_archive_and_unreachable_host_do_not_stop_the_others(server, tmp_path):
    dest = tmp_path / "raw"
    good = checksums_file(tmp_path, server, names=("LJSpeech-1.1.tar.bz2",))
    lj = "/keithito/LJSpeech-1.1.tar.bz2"
    server.files[lj] = server.files[lj][:100] + bytes(len(server.files[lj]) - 100)  # damaged in transit
    # LibriSpeech gets no override: the tiny archive cannot match the published md5 either
    result = download(server, dest, "--only", "codec", checksums=good, VCTK_URL=f"{UNREACHABLE}/VCTK-Corpus-0.92.zip")
    assert result.returncode == 1
    assert "checksum mismatch for LJSpeech-1.1.tar.bz2" in result.stderr
    assert "checksum mismatch for train-clean-100.tar.gz: expected md5 2a93770f6d5c6c964bc36631d331a522" in result.stderr
    assert f"cannot reach {UNREACHABLE}" in result.stderr and "vctk" in result.stdout.split("FAILED:")[1]
    assert not list(dest.rglob("*.done"))

    # fixed upstream: only what is missing is fetched, and it completes
    server.files = corpus_archives()
    result = download(server, dest, "--only", "codec", checksums=checksums_file(tmp_path, server))
    assert result.returncode == 0, result.stderr
    assert (dest / "ljspeech/.LJSpeech-1.1.tar.bz2.done").is_file() and (dest / "vctk/.VCTK-Corpus-0.92.zip.done").is_file()


def test_partial_download_resumes(server, tmp_path):
    dest = tmp_path / "raw"
    lj = server.files["/keithito/LJSpeech-1.1.tar.bz2"]
    (dest / "ljspeech").mkdir(parents=True)
    (dest / "ljspeech/LJSpeech-1.1.tar.bz2.part").write_bytes(lj[: len(lj) // 2])
    result = download(server, dest, "--only", "codec", checksums=checksums_file(tmp_path, server))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming at" in result.stdout
    ranged = [r for m, p, r in server.requests if m == "GET" and p.endswith("LJSpeech-1.1.tar.bz2")]
    assert ranged == [f"bytes={len(lj) // 2}-"]
    assert (dest / "ljspeech/LJSpeech-1.1/metadata.csv").is_file()

    # a server that ignores Range: the part is dropped and the download starts over
    server.honours_ranges = False
    (dest / "ljspeech/.LJSpeech-1.1.tar.bz2.done").unlink()
    (dest / "ljspeech/LJSpeech-1.1.tar.bz2.part").write_bytes(lj[:100])
    result = download(server, dest, "--only", "codec", checksums=checksums_file(tmp_path, server))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "downloading from the start" in result.stdout and (dest / "ljspeech/.LJSpeech-1.1.tar.bz2.done").is_file()


def test_dry_run_fetches_nothing(server, tmp_path):
    dest = tmp_path / "raw"
    result = download(server, dest, "--dry-run", "--librispeech", "train-clean-100 dev-clean")
    assert result.returncode == 0, result.stderr
    assert server.requests == [] and not dest.exists()
    assert "would fetch" in result.stdout and "dev-clean.tar.gz (~0.3 GB)" in result.stdout
    assert "IndicTTS_Telugu" in result.stdout and "disk: needs ~" in result.stdout


def test_not_enough_disk_fails_before_downloading(server, tmp_path):
    result = download(server, tmp_path / "raw", "--only", "codec", "--reserve-gb", "100000000")
    assert result.returncode == 2 and "not enough disk space" in result.stderr
    assert gets(server) == []


def test_usage_errors(server, tmp_path):
    assert download(server, tmp_path, "--help").stdout.startswith("Usage:")
    bad = download(server, tmp_path, "--only", "english")
    assert bad.returncode == 2 and "--only must be codec, telugu or all" in bad.stderr
    bad = download(server, tmp_path, "--librispeech", "train-clean-101")
    assert bad.returncode == 2 and "unknown LibriSpeech split" in bad.stderr
