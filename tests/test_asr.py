"""The ear (telugu_asr.py, train_asr.py): streaming equals offline, batch rows are independent, the
CLI reports bad files and carries on, and the trainer runs, resumes exactly, exports and evaluates
on a tiny corpus synthesised here."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint_io as ckio
import telugu_asr as ta
import telugu_tts
from audio_io import save_wav, write_manifest
from config import Config
from telugu_text import asr_text

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "మిమ్మల్ని కలవడం చాలా సంతోషంగా ఉంది."


def small_cfg(window=12) -> Config:
    cfg = Config()
    cfg.asr.d_model, cfg.asr.n_layers, cfg.asr.n_heads, cfg.asr.context_frames = 64, 2, 2, window
    return cfg


def small_ear(window=12, seed=0) -> ta.Ear:
    torch.manual_seed(seed)
    ear = ta.Ear(small_cfg(window)).eval()
    # random weights emit blanks almost everywhere; a bias off blank makes the CTC output non-trivial
    with torch.no_grad():
        ear.ctc_head.bias.normal_(0, 3.0)
    return ear


def test_alphabet_roundtrip_and_text_form():
    ids = ta.encode_text(SENTENCE + " 7 ok")
    assert ta.BLANK not in ids and ta.decode_ids(ids) == asr_text(SENTENCE + " 7 ok")
    assert asr_text(SENTENCE) == "మిమ్మల్ని కలవడం చాలా సంతోషంగా ఉంది"  # punctuation is not heard
    assert "ఏడు" in asr_text("7")  # numbers as spoken (telugu_text.normalize_text)


@pytest.mark.parametrize("chunks", [[1] * 40, [3, 7, 1, 2, 10, 17], [40]])
def test_streaming_equals_offline_for_any_chunking(chunks):
    ear = small_ear(window=12)  # 40 frames: the window slides well past its 12 frames
    pcm = torch.randn(2, 40 * ear.frame_size) * 0.1
    log_probs, speech, features = ear(pcm)
    state, got_f, got_s, text = ear.init_state(2), [], [], ["", ""]
    start = 0
    for n in chunks:
        pieces, f, s, state = ear.step(pcm[:, start * ear.frame_size:(start + n) * ear.frame_size], state)
        got_f.append(f)
        got_s.append(s)
        text = [t + p for t, p in zip(text, pieces)]
        start += n
    assert torch.allclose(torch.cat(got_f, 1), features, atol=1e-4)
    assert torch.allclose(torch.cat(got_s, 1), torch.sigmoid(speech), atol=1e-5)
    offline = [ta.collapse(row[None], torch.tensor([ta.BLANK]))[0][0] for row in log_probs.argmax(-1)]
    assert text == offline and any(text)


def test_batch_rows_are_independent_and_step_rejects_partial_frames():
    ear = small_ear()
    pcm = torch.randn(2, 20 * ear.frame_size) * 0.1
    both = ear.init_state(2)
    _, f2, _, _ = ear.step(pcm, both)
    for b in range(2):
        _, f1, _, _ = ear.step(pcm[b:b + 1], ear.init_state(1))
        assert torch.allclose(f1[0], f2[b], atol=1e-5)
    with pytest.raises(ValueError, match="whole frames"):
        ear.step(pcm[:, :100], ear.init_state(2))


def test_greedy_words_have_timings():
    space, ka, a = ta.CHAR_ID[" "], ta.CHAR_ID["క"], ta.CHAR_ID["అ"]
    text, words = ta.words_from_ids([0, ka, ka, 0, ka, space, 0, 0, a, 0], 0.02)
    assert text == "కక అ"
    assert words == [["కక", 0.02, 0.1], ["అ", 0.16, 0.18]]
    assert ta.char_error_rate("కక అ", "కక అ") == 0.0 and ta.char_error_rate("", "కక") == 1.0


def export_small(path: Path, ear: ta.Ear):
    ckio.export_safetensors(ear.state_dict(), path, ear.cfg)
    return path


def test_cli_transcribes_good_files_and_reports_bad_ones(tmp_path):
    ckpt = export_small(tmp_path / "ear.safetensors", small_ear())
    good = tmp_path / "good.wav"
    stereo16k = np.random.default_rng(0).standard_normal((16000, 2)).astype(np.float32) * 0.1
    save_wav(good, stereo16k, 16000)  # any rate and channel count
    empty = tmp_path / "empty.wav"
    save_wav(empty, np.zeros(0, np.float32), 24000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    r = subprocess.run([sys.executable, "telugu_asr.py", "transcribe", str(junk), str(good), str(empty),
                        "--checkpoint", str(ckpt)], capture_output=True, text=True, cwd=ROOT)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1 and [x["path"] for x in lines] == [str(junk), str(good), str(empty)]
    assert "error" in lines[0] and "error" in lines[2]
    assert set(lines[1]) == {"path", "text", "words"} and all(len(w) == 3 for w in lines[1]["words"])
    r = subprocess.run([sys.executable, "telugu_asr.py", "transcribe", str(good), "--checkpoint",
                        str(tmp_path / "missing.safetensors")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "no ear checkpoint" in r.stderr


def make_corpus(root: Path) -> Path:
    """Eight synthetic clips in two training voices and two in a val voice (also the test set)."""
    root.mkdir(parents=True, exist_ok=True)
    texts = ["నమస్కారం", "ఈ రోజు వాతావరణం బాగుంది", "మీ పేరు ఏమిటి", "నాకు టీ కావాలి"]
    rows = {"train": [], "val": []}
    for split, voices in (("train", ["train_f1", "train_m1"]), ("val", ["val_andrea"])):
        for voice in voices:
            for k, text in enumerate(texts if split == "train" else texts[:2]):
                pcm, words = telugu_tts.synthesize(text, voice)
                path = root / f"{voice}_{k}.wav"
                save_wav(path, pcm)
                rows[split].append({"audio": path.name, "text": text, "speaker": voice, "lang": "te",
                                    "duration": round(len(pcm) / 24000, 3), "split": split, "words": words})
    for split in rows:
        write_manifest(root / f"{split}.jsonl", rows[split])
    write_manifest(root / "test.jsonl", rows["val"])
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ear_corpus"))


def train_cmd(corpus, out_dir, steps, *extra):
    return [sys.executable, "train_asr.py", "--config", "tiny", "--data_dir", str(corpus), "--out_dir", str(out_dir),
            "--max_steps", str(steps), "--batch_seconds", "6", "--set", "asr.d_model=32", "--set", "asr.n_layers=1",
            "--set", "asr.n_heads=2", "--set", "train_asr.num_workers=0", "--set", "train_asr.eval_every_steps=2",
            "--set", "train_asr.save_every_steps=2", "--set", "train_asr.warmup_steps=1", *extra]


def test_train_resumes_exactly_exports_and_evaluates(corpus, tmp_path):
    run = lambda cmd: subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # noqa: E731
    r = run(train_cmd(corpus, tmp_path / "straight", 4))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(train_cmd(corpus, tmp_path / "split", 2))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(train_cmd(corpus, tmp_path / "split", 4, "--resume"))
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr[-2000:]
    a = ckio.load_checkpoint(tmp_path / "straight" / "step_00000004.pt")["model"]
    b = ckio.load_checkpoint(tmp_path / "split" / "step_00000004.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # a killed run continues as if never stopped
    curve = [json.loads(line) for line in (tmp_path / "straight" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [2, 4] and "val_andrea" in curve[-1]["val_cer"]

    shipped = tmp_path / "ear.safetensors"
    r = run([sys.executable, "train_asr.py", "--export", str(shipped), "--out_dir", str(tmp_path / "straight")])
    assert r.returncode == 0 and shipped.exists() and ckio.config_json_path(shipped).exists(), r.stderr[-2000:]
    assert ta.load(shipped).cfg.asr.d_model == 32
    report = tmp_path / "report.json"
    r = run([sys.executable, "train_asr.py", "--eval", "--checkpoint", str(shipped), "--manifest",
             str(corpus / "val.jsonl"), "--augmented", "--json", str(report)])
    assert r.returncode == 0 and "| val_andrea |" in r.stdout, r.stderr[-2000:]
    scores = json.loads(report.read_text())[str(corpus / "val.jsonl")]
    assert scores["clips"] == 2 and set(scores["clean"]) == set(scores["augmented"]) == {"val_andrea", "all"}


def test_export_keeps_the_runs_step_and_minutes(tmp_path):
    """`train_asr.py --export` copies the step the run's weights were trained to (and the minutes
    over all its sittings), not step 0."""
    import train_asr
    from safetensors import safe_open

    run = tmp_path / "run"
    ear = small_ear()
    train_asr.export(ear, ear.cfg, run / "asr.safetensors", 6)  # as an eval of an older run wrote it: no minutes
    curve = [(2, 1.0), (4, 2.5),  # the first sitting, killed after step 4
             (4, 1.5), (6, 3.0)]  # resumed from step 2: step 4 again, then 6
    (run / "curve.jsonl").write_text("".join(json.dumps({"step": s, "minutes_this_sitting": m, "val_cer": {}}) + "\n"
                                             for s, m in curve), encoding="utf-8")
    assert train_asr.run_minutes(run, 6) == 5.5 and train_asr.run_minutes(run, 4) == 4.0
    assert train_asr.run_minutes(run, 5) is None and train_asr.run_minutes(tmp_path, 6) is None

    def metadata(path):
        with safe_open(str(path), "pt") as f:
            return f.metadata()

    shipped = tmp_path / "ear.safetensors"
    assert train_asr.main(["--export", str(shipped), "--out_dir", str(run)]) == 0
    assert metadata(shipped) == {"step": "6", "minutes": "5.5"}
    assert ta.load(shipped).cfg.asr.d_model == 64
    train_asr.export(ear, ear.cfg, run / "asr.safetensors", 8, 12.0)  # a newer run records its minutes
    assert train_asr.main(["--export", str(shipped), "--out_dir", str(run)]) == 0
    assert metadata(shipped) == {"step": "8", "minutes": "12.0"}


def test_speech_labels_follow_the_words():
    from train_asr import pad_with_quiet, speech_labels

    words = [{"word": "a", "start": 0.10, "end": 0.30}]
    labels = speech_labels(words, 24000, 960, 24000)
    assert labels.shape == (25,) and labels[2:8].all() and labels[:2].sum() == 0 and labels[8:].sum() == 0
    pcm, moved = pad_with_quiet(np.zeros(24000, np.float32), words, 24000, 0.5, np.random.default_rng(0))
    shift = moved[0]["start"] - 0.10
    assert len(pcm) >= 24000 and 0 <= shift <= 0.5 and moved[0]["end"] - moved[0]["start"] == pytest.approx(0.2)


@pytest.mark.skipif(not ta.SHIPPED.exists(), reason="no shipped ear yet")
def test_shipped_ear_hears_a_voice_and_sentence_it_never_trained_on():
    """A loose check that the shipped weights hear (its real figures are in README, from --eval)."""
    import synthetic_corpus as sc

    _, heldout = sc.split_sentences(sc.read_sentences(sc.DEFAULT_SENTENCES), 0.1, 0)  # the corpus's split
    sentence = heldout[0].text
    ear = ta.load()
    pcm, _ = telugu_tts.synthesize(sentence, "test_shelby")
    text, words = ear.transcribe(pcm)
    assert ta.char_error_rate(text, sentence) < 0.3, (text, sentence)
    assert words and words[-1][2] <= len(pcm) / 24000 + 0.2
    # silence in, (almost) nothing out, and the speech head says so
    _, _, speech, _ = ear.step(torch.zeros(1, 25 * ear.frame_size), ear.init_state(1))
    assert speech.max() < 0.5


def test_speech_in_another_language_trains_an_empty_transcript(tmp_path):
    """Rows with lang != "te" (synthetic_corpus --foreign_clips) are speech with nothing to write."""
    import synthetic_corpus
    from train_asr import EarClips

    sentences = synthetic_corpus.english_sentences(5)
    assert len(set(sentences)) == 5 and all(s.replace(",", "").replace("'", "").rstrip(".").replace(" ", "").isalpha()
                                            for s in sentences)
    rows = []
    for k, (text, voice, lang) in enumerate([(sentences[0], "en+m1", "en"), ("నమస్కారం", "te+f1", "te")]):
        pcm, words = telugu_tts.synthesize(text, telugu_tts.Voice(f"v{k}", voice, "unknown"))
        save_wav(tmp_path / f"{k}.wav", pcm)
        rows.append({"audio": f"{k}.wav", "text": text, "speaker": f"v{k}", "lang": lang,
                     "duration": len(pcm) / 24000, "split": "train", "words": words})
    write_manifest(tmp_path / "train.jsonl", rows)
    cfg = small_cfg()
    cfg.asr.augment_prob = 0.0
    data = EarClips([tmp_path / "train.jsonl"], cfg, seed=0)
    (_, english, speech_en), (_, telugu, _) = data[(0, 0)], data[(0, 1)]
    assert english == [] and speech_en.sum() > 10  # heard as speech, written as nothing
    assert telugu == ta.encode_text("నమస్కారం")


def test_long_recordings_stream_to_the_same_transcript():
    """Past 4 windows transcribe() streams in chunks (memory stays flat); the words are the same as
    one offline pass over the whole recording."""
    ear = small_ear(window=3)  # 4 windows = 12 frames: a 30-frame clip takes the streaming path
    pcm = torch.randn(30 * ear.frame_size) * 0.1
    text, words = ear.transcribe(pcm)
    padded = torch.nn.functional.pad(pcm, (0, ear.frame_size))[None]
    offline = ta.words_from_ids(ear(padded)[0][0].argmax(-1).tolist(), ear.frame_size / 2 / ear.sample_rate)
    assert (text, words) == offline and text


def test_conversations_join_and_leave_a_batch_and_step_as_alone():
    """A frame scheduler's ear: rows join (EarState.join) and leave (EarState.leave) between steps,
    and a step may take only the rows that have a frame; each row hears what it hears alone."""
    ear = small_ear(window=6)
    fs, n = ear.frame_size, 14
    pcm = [torch.randn(n * fs, generator=torch.Generator().manual_seed(i)) * 0.1 for i in range(3)]
    alone = []
    for x in pcm:
        state, feats = ear.init_state(1), []
        for f in range(n):
            _, feat, _, state = ear.step(x[f * fs:(f + 1) * fs][None], state)
            feats.append(feat[0, 0])
        alone.append(torch.stack(feats))
    # a from tick 0, b joins at 3 and skips tick 5, c joins at 6; a leaves when done (b's row moves)
    state, members, got, at = ear.init_state(0), [], {i: [] for i in range(3)}, [0, 0, 0]
    for tick in range(n + 6):
        for i, start in ((0, 0), (1, 3), (2, 6)):
            if tick == start:
                state, members = state.join(ear.init_state(1)), members + [i]
        step = [i for i in members if not (i == 1 and tick == 5)]
        if step:
            x = torch.stack([pcm[i][at[i] * fs:(at[i] + 1) * fs] for i in step])
            _, feat, _, state = ear.step(x, state, rows=torch.tensor([members.index(i) for i in step]))
            for j, i in enumerate(step):
                got[i].append(feat[j, 0])
                at[i] += 1
        for i in list(members):
            if at[i] == n:
                row = members.index(i)
                state = state.leave(row)
                members[row] = members[-1]
                members.pop()
    for i in range(3):
        torch.testing.assert_close(torch.stack(got[i]), alone[i], atol=1e-5, rtol=1e-4)
