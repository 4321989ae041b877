"""The mouth (agent_mouth.py, train_mouth.py): streaming equals offline, a row in a batch equals
the row alone, barge-in, bad input, and the real trainer run through its command line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import agent_mouth
from config import load_config

ROOT = Path(__file__).resolve().parent.parent
TEXT = "నమస్కారం, నేను మీకు ఎలా సహాయం చేయగలను?"
OTHER = "ఈ రోజు వాతావరణం చాలా బాగుంది."


@pytest.fixture(scope="module")
def mouth():
    torch.manual_seed(0)
    cfg = load_config("tiny", ["mouth.d_model=64", "mouth.n_layers=2", "mouth.frame_hidden=64"])
    model = agent_mouth.build(cfg).eval()
    with torch.no_grad():  # durations of a few frames per symbol, so an answer takes frames
        model.duration[-1].bias.fill_(1.0)
    return model


def run(mouth, state, steps):
    out = []
    for _ in range(steps):
        codes, spoken, state = mouth.step(state)
        out.append((codes.clone(), spoken))
    return out


def test_streaming_equals_offline(mouth):
    offline, words = mouth.synthesize(TEXT, "ravi")
    assert offline.shape[0] == mouth.codec.n_codebooks and offline.shape[1] > 10
    state = mouth.init_state(1, ["ravi"])
    mouth.say(state, 0, TEXT)
    steps = run(mouth, state, offline.shape[1] + 3)
    streamed = torch.stack([c[0] for c, _ in steps[:offline.shape[1]]], dim=1)
    assert torch.equal(streamed, offline)
    assert all(torch.equal(c[0], mouth.silence_codes) for c, _ in steps[offline.shape[1]:])
    said = [w for _, spoken in steps for w in spoken[0]]
    assert said == [w for w, _ in words] == TEXT.replace(",", "").replace("?", "").split()


def test_row_in_batch_equals_row_alone(mouth):
    alone = mouth.init_state(1, ["priya"])
    mouth.say(alone, 0, TEXT)
    ref = run(mouth, alone, 40)
    batch = mouth.init_state(3, ["kiran", "priya", "lakshmi"])
    mouth.say(batch, 0, OTHER)
    got = run(mouth, batch, 5)  # row 1 joins later, rows 0 and 2 are doing other things
    mouth.say(batch, 1, TEXT)
    mouth.say(batch, 2, OTHER)
    got = run(mouth, batch, 40)
    for (c_ref, s_ref), (c, s) in zip(ref, got):
        assert torch.equal(c[1], c_ref[0]) and s[1] == s_ref[0]


def test_stop_and_queue(mouth):
    state = mouth.init_state(2, "lakshmi")
    mouth.say(state, 0, TEXT)
    mouth.say(state, 0, OTHER)
    run(mouth, state, 3)
    assert mouth.speaking(state, 0) and not mouth.speaking(state, 1)
    mouth.stop(state, 0)
    codes, spoken, state = mouth.step(state)
    assert torch.equal(codes, mouth.silence_codes.expand(2, -1)) and spoken == [[], []]
    assert not mouth.speaking(state, 0)


@pytest.mark.parametrize("text", ["", "   ", "hello", "నమస్కారం @ మీకు", "¿?"])
def test_bad_text_is_a_clear_error(mouth, text):
    with pytest.raises(agent_mouth.MouthTextError, match="say"):
        agent_mouth.encode_text(text)
    state = mouth.init_state(1, ["ravi"])
    with pytest.raises(agent_mouth.MouthTextError):
        mouth.say(state, 0, text)
    assert not mouth.speaking(state, 0)


def test_numbers_are_spoken_as_words():
    spoken, ids = agent_mouth.encode_text("మూడు గంటలకు 5 నిమిషాలు")
    assert "5" not in spoken and ids[0] == agent_mouth.BOS and ids[-1] == agent_mouth.EOS


def test_unknown_voice(mouth):
    with pytest.raises(KeyError, match="unknown voice"):
        mouth.init_state(1, ["nobody"])


def _train(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "train_mouth.py"), *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_train_resume_export_via_cli(tmp_path):
    """The user's commands on a corpus the test synthesises: prepare, train 4 steps, resume to 6,
    export, load; the resumed run ends where an unbroken 6-step run ends."""
    data = tmp_path / "data"
    _train(["--prepare", "--limit", "2", "--answer_draws", "20", "--voices", "lakshmi", "ravi", "--data", str(data)],
           ROOT)
    small = ["--config", "tiny", "--data", str(data), "--val_texts", "0", "--no_tensorboard",
             "--set", "mouth.voices=[lakshmi,ravi]", "--set", "mouth.d_model=32", "--set", "mouth.n_layers=1",
             "--set", "mouth.frame_hidden=32", "--set", "train_mouth.batch_size=2",
             "--set", "train_mouth.save_every_steps=2"]
    _train(small + ["--out_dir", str(tmp_path / "a"), "--max_steps", "4"], ROOT)
    out = _train(small + ["--out_dir", str(tmp_path / "a"), "--max_steps", "6", "--resume"], ROOT)
    assert "resumed from" in out and "step 4" in out
    _train(small + ["--out_dir", str(tmp_path / "b"), "--max_steps", "6"], ROOT)
    a = torch.load(tmp_path / "a" / "step_00000006.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "step_00000006.pt", weights_only=True)
    for k in b["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    _train(small + ["--out_dir", str(tmp_path / "a"), "--export", str(tmp_path / "mouth.safetensors")], ROOT)
    mouth = agent_mouth.load(tmp_path / "mouth.safetensors")
    codes, _ = mouth.synthesize(TEXT, "ravi")
    assert codes.shape[0] == 8 and codes.dtype == torch.long
    meta = json.loads((tmp_path / "mouth.json").read_text())
    assert meta["mouth"]["voices"] == ["lakshmi", "ravi"]
