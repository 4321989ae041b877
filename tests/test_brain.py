"""The brain and its tools (agent_tools.py, brain_data.py, agent_brain.py, train_brain.py): the tools
give exactly the domain's answers, a call survives the token stream, the cached reply equals the
whole-sequence model, the reply loop runs calls and refuses to guess, and the trainer trains,
resumes, exports and evaluates."""
import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import agent_brain as ab
import agent_tools as tools
import brain_data as bd
import dialogue_corpus
import dialogue_domain as domain
from config import BrainConfig
from telugu_tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vocab():
    return bd.BrainVocab(Tokenizer.load())


def small_brain(vocab, seed=0):
    torch.manual_seed(seed)
    return ab.Brain(BrainConfig(d_model=32, n_layers=2, n_heads=2, context_tokens=96, max_answer_tokens=24),
                    vocab).eval()


# --- tools ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("intent", sorted(tools.TOOL_INTENTS))
def test_each_tool_gives_the_domains_answer(intent):
    """For held-out and training turns at random moments, the tool's result is the very words the
    domain's answer holds, and the reply without its call is the domain's reply."""
    rng = random.Random(intent)
    for i in range(25):
        now = dt.datetime(2020, 1, 1) + dt.timedelta(minutes=rng.randrange(5_000_000))
        ctx = domain.Context(now=now, agent_voice=rng.choice(sorted(domain.AGENT_NAMES)),
                             previous_answer=rng.choice(["సరే, నేను వేచి ఉంటాను.", "ఈ రోజు సోమవారం."]))
        t = domain.sample_turn(rng, rng.choice(["train", "heldout"]), ctx, intent)
        segments = tools.reply_segments(t.intent, t.slots, t.agent_text)
        assert tools.spoken(segments) == t.agent_text
        calls = [v for k, v in segments if k == "call"]
        results = [v for k, v in segments if k == "result"]
        if calls:
            assert tools.run(calls[0], tools.ToolContext(now, ctx.agent_voice, ctx.previous_answer)) == results[0]


def test_calculator_reads_telugu_number_words():
    assert tools.calculate(["ఇరవై", "మూడు", "+", "నలభై", "ఎనిమిది"]) == 71
    assert tools.calculate(["పన్నెండు", "×", "పన్నెండు"]) == 144
    assert tools.calculate(["ముప్పై", "ఐదు", "max", "ఏడు"]) == 35
    assert tools.run(tools.Call("calc", ["నూట", "యాభై", "-", "ఒకటి"]), tools.ToolContext()) == domain.number_words(149)
    with pytest.raises(tools.ToolError, match="not a number"):
        tools.calculate(["ఇరవై", "మూఢు", "+", "ఐదు"])  # a word the ear garbled
    with pytest.raises(tools.ToolError, match="whole number"):
        tools.calculate(["ఏడు", "÷", "రెండు"])
    with pytest.raises(tools.ToolError, match="nothing said yet"):
        tools.run(tools.Call("previous"), tools.ToolContext(previous_answer=None))


def test_clock_tools_read_the_conversations_moment():
    ctx = tools.ToolContext(dt.datetime(2024, 12, 31, 23, 30), "kiran")
    assert tools.run(tools.Call("time", ["+", "ఒకటి"]), ctx) == domain.time_words(0, 30)
    assert tools.run(tools.Call("weekday", ["+", "ఒకటి"]), ctx) == domain.WEEKDAY_TE["wednesday"]
    assert tools.run(tools.Call("year"), ctx) == domain.number_words(2024)
    assert tools.run(tools.Call("name"), ctx) == domain.AGENT_NAMES["kiran"]


# --- the token stream -------------------------------------------------------------------------------

def test_a_call_survives_the_token_stream(vocab):
    call = tools.Call("calc", ["ఇరవై", "మూడు", "×", "ఐదు"])
    ids = vocab.call(call)
    assert ids[0] == vocab.CALL and ids[-1] == vocab.CALL_END
    assert vocab.parse_call(ids[1:-1]) == call
    with pytest.raises(tools.ToolError):
        vocab.parse_call(vocab.text("ఐదు"))  # no tool name


def test_dialogue_stream_trains_the_agents_side_and_the_end_of_a_request(vocab):
    spec = dialogue_corpus.plan_dialogue("train", 11, augment=False)
    ids, w = bd.dialogue_stream(vocab, spec, random.Random(0), wait_share=1.0)
    assert len(ids) == len(w) and ids[0] == 2
    user_open = False
    for t, weight in zip(ids, w):
        if t == vocab.USER:
            user_open = True
        if t == vocab.AGENT:
            user_open = False
        if t in (vocab.AGENT, vocab.WAIT):
            assert weight == 1.0  # a whole request, or not yet
        elif user_open:
            assert weight == 0.0  # the user's words are heard, not predicted
    waits = sum(t == vocab.WAIT for t in ids)
    assert waits == sum(len(bd.asr_text(t["user_text"]).split()) >= 2 for t in spec["turns"]) and waits >= 1
    assert sum(t == vocab.END for t in ids) == len(spec["turns"])
    assert all(w[i] == 1.0 for i, t in enumerate(ids) if t == vocab.END)
    short, short_w = bd.fit(ids, w, 40, vocab)
    assert len(short) <= 40 and short[0] == 2 and short[1] == vocab.USER and len(short_w) == len(short)


def test_the_agents_readings_replace_the_replayed_errors(vocab):
    """A rendered dialogue trains on what the agent read, word for word, with the reply of the
    true request."""
    spec = dialogue_corpus.plan_dialogue("train", 5, seed=1, augment=False)
    readings = ["ఒక వింత మాట", "మరొక వింత మాట", "ఇంకొక వింత మాట", "చివరి వింత మాట"] * 3
    readings = readings[:len(spec["turns"])]
    ids, _ = bd.dialogue_stream(vocab, spec, random.Random(0), readings=readings)
    text = vocab.decode(ids)
    assert all(r in text for r in readings)
    assert bd.asr_text(spec["turns"][0]["user_text"]) not in text
    assert text.count("వింత మాట") == len(spec["turns"])
    bank = bd.EarReadings([{"plan": 5, "seed": 1, "readings": readings}])
    data = bd.TrainingDialogues(vocab, None, 0, 4096, wait_share=0.0, readings=bank, readings_share=1.0)
    assert vocab.decode(data.item(0)[0]) == text


def test_ear_errors_replay_what_was_measured():
    pairs = [("ఐదు ప్లస్ మూడు", "ఐదు ప్లన్ మూడు"), ("రేపు ఏ వారం", "రేపు ఏ వరం"), ("సమయం ఎంత", "సమయం ఎంత")] * 20
    e = bd.EarErrors.measure(pairs)
    assert e.cer == round(40 / 660, 4) and e.subs["స"]["న"] == 20  # 2 edits in 33 characters
    rng = random.Random(0)
    assert e.corrupt("ఐదు ప్లస్ మూడు", rng, 0.0) == "ఐదు ప్లస్ మూడు"
    noisy = [e.corrupt("ప్లస్ వారం " * 20, random.Random(i), 1.0) for i in range(20)]
    assert any("ప్లన్" in n for n in noisy) and any("వరం" in n for n in noisy)
    assert all(len(n) > 0.8 * len("ప్లస్ వారం " * 20) - 2 for n in noisy)


# --- the model --------------------------------------------------------------------------------------

def test_cached_reply_equals_the_whole_sequence(vocab):
    brain = small_brain(vocab)
    spec = dialogue_corpus.plan_dialogue("train", 5, augment=False)
    ids, _ = bd.dialogue_stream(vocab, spec, random.Random(0))
    x = torch.tensor([ids[:60]])
    full = brain(x)[0]
    cache = [None] * len(brain.transformer.blocks)
    first = brain._cached_forward(x[:, :25], cache, 0)
    one = brain._cached_forward(x[:, 25:26], cache, 25)
    rest = brain._cached_forward(x[:, 26:], cache, 26)
    for got, want in ((first, full[24]), (one, full[25]), (rest, full[59])):
        assert torch.allclose(got[0], want, atol=1e-5)


class ScriptedBrain(ab.Brain):
    """A brain whose next piece is read from a script: the reply loop's own bookkeeping on test."""

    def __init__(self, vocab, script):
        super().__init__(BrainConfig(d_model=16, n_layers=1, n_heads=2, context_tokens=96, max_answer_tokens=30),
                         vocab)
        self.script = list(script)

    def _cached_forward(self, ids, cache, start):
        logits = torch.zeros(1, self.vocab.size)
        logits[0, self.script.pop(0) if self.script else self.vocab.END] = 1.0
        return logits


def test_reply_runs_the_call_and_speaks_its_result(vocab):
    script = [*vocab.text("ఐదు ప్లస్ మూడు సమానం"), *vocab.call(tools.Call("calc", ["ఐదు", "+", "మూడు"])),
              *vocab.text("."), vocab.END]
    brain = ScriptedBrain(vocab, script)
    convo = brain.conversation(dt.datetime(2024, 3, 15, 10, 20), "ravi")
    a = brain.reply(convo, "ఐదు ప్లస్ మూడు ఎంత")
    assert a.text == "ఐదు ప్లస్ మూడు సమానం ఎనిమిది."
    assert [c.text() for c in a.calls] == ["⟦calc ఐదు + మూడు⟧"]
    assert domain.is_correct("add", {"a": 5, "b": 3, "result": 8}, a.text)
    assert convo.ctx.previous_answer == a.text and convo.history[-1] == vocab.END
    assert vocab.decode(convo.history).count("<USER>") == 1


def test_a_call_that_cannot_run_is_not_guessed(vocab):
    script = [*vocab.text("సమాధానం"), *vocab.call(tools.Call("calc", ["మూఢు", "+", "ఐదు"])), vocab.END]
    brain = ScriptedBrain(vocab, script)
    a = brain.reply(brain.conversation(), "మూఢు ప్లస్ ఐదు ఎంత")
    assert a.text == tools.UNHEARD_NUMBER and a.calls[0].tool == "error"


def test_end_of_turn_prob_reads_without_committing(vocab):
    brain = small_brain(vocab)
    convo = brain.conversation()
    brain.remember(convo, "నమస్కారం", "నమస్కారం, చెప్పండి.")
    before = (list(convo.history), convo.position, [c[0].clone() for c in convo.cache])
    p = brain.end_of_turn_prob(convo, "ఈ రోజు")
    assert 0.0 < p < 1.0
    assert convo.history == before[0] and convo.position == before[1]
    assert all(torch.equal(c[0], k) for c, k in zip(convo.cache, before[2]))


def test_an_untrained_reply_still_ends_its_turn(vocab):
    brain = small_brain(vocab)
    convo = brain.conversation()
    for text in ("నమస్కారం", "ఐదు ప్లస్ మూడు ఎంత", "సమయం ఎంత"):
        brain.reply(convo, text)
        assert convo.history[-1] == vocab.END
    assert convo.position <= brain.cfg.context_tokens


def test_load_without_a_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_brain.py"):
        ab.load(tmp_path / "missing.safetensors")


# --- the trainer -------------------------------------------------------------------------------------

def run(args, cwd):
    r = subprocess.run([sys.executable, str(ROOT / "train_brain.py"), *args], cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def test_trainer_trains_resumes_exports_and_evaluates(tmp_path):
    out = tmp_path / "run"
    small = ["--config", "tiny", "--out_dir", str(out), "--val_turns", "3", "--set", "brain.d_model=32",
             "--set", "brain.n_layers=1", "--set", "brain.n_heads=2", "--set", "train_brain.batch_size=2",
             "--set", "train_brain.eval_every_steps=2", "--set", "train_brain.save_every_steps=2",
             "--set", "brain.max_answer_tokens=8"]
    run([*small, "--max_steps", "2"], tmp_path)
    first = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    assert first[-1]["step"] == 2 and "true" in first[-1]["val"]
    stdout = run([*small, "--max_steps", "4", "--resume"], tmp_path)
    assert "resumed from" in stdout and "step 2" in stdout
    assert json.loads((out / "curve.jsonl").read_text().splitlines()[-1])["step"] == 4
    shipped = tmp_path / "brain.safetensors"
    run([*small, "--export", str(shipped)], tmp_path)
    brain = ab.load(shipped)
    assert brain.cfg.d_model == 32 and brain.reply(brain.conversation(), "నమస్కారం").ids
    run(["--eval", "--checkpoint", str(shipped), "--turns", "4", "--splits", "heldout_val",
         "--json", str(tmp_path / "eval.json")], tmp_path)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["heldout_val"]["true"]) >= {"all"}
    # the agent's readings of two training dialogues (the shipped ear and LM), then a sitting that
    # starts from the exported weights and trains on them only
    readings = tmp_path / "readings.jsonl"
    run(["--render_readings", "2", "--readings", str(readings)], tmp_path)
    rows = [json.loads(x) for x in readings.read_text().splitlines()]
    assert [r["plan"] for r in rows] == [0, 1] and all(r["readings"] and all(r["readings"]) for r in rows)
    assert "2 dialogues" in run(["--render_readings", "2", "--readings", str(readings)], tmp_path)  # nothing redone
    again = tmp_path / "again"
    stdout = run([*small, "--out_dir", str(again), "--init", str(shipped), "--max_steps", "6", "--readings",
                  str(readings), "--set", "brain.readings_share=1.0"], tmp_path)
    assert "started from" in stdout and "step 4" in stdout and "2 dialogues as the agent read them" in stdout
    assert json.loads((again / "curve.jsonl").read_text().splitlines()[-1])["step"] == 6
