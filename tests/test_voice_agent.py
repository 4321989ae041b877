"""The v2 agent (voice_agent.py): turn-taking with the ear's speech probability and the brain's
end-of-request judgement, backchannels and barge-in, and sessions that join and leave a batch
without changing each other's audio."""
import datetime as dt

import numpy as np
import pytest
import torch

import agent_brain as ab
import agent_mouth
import brain_data as bd
import ear_lm
import telugu_asr as ta
import voice_agent as va
from config import Config, ContextConfig, load_config
from context_manager import SPEAKING
from telugu_tokenizer import Tokenizer

FS = 960


@pytest.fixture(scope="module")
def mouth():
    torch.manual_seed(0)
    cfg = load_config("tiny", ["mouth.d_model=32", "mouth.n_layers=1", "mouth.frame_hidden=32"])
    model = agent_mouth.build(cfg).eval()
    with torch.no_grad():
        model.duration[-1].bias.fill_(0.7)  # about a frame per character: an answer takes a second or two
    return model


@pytest.fixture(scope="module")
def brain():
    torch.manual_seed(0)
    return ab.Brain(Config().brain.__class__(d_model=32, n_layers=1, n_heads=2, context_tokens=128,
                                             max_answer_tokens=12), bd.BrainVocab(Tokenizer.load())).eval()


@pytest.fixture(scope="module")
def ear():
    torch.manual_seed(0)
    cfg = Config()
    cfg.asr.d_model, cfg.asr.n_layers, cfg.asr.n_heads, cfg.asr.context_frames = 32, 1, 2, 16
    model = ta.Ear(cfg).eval()
    with torch.no_grad():
        model.ctc_head.bias.normal_(0, 3.0)
    return model


class ScriptedEar:
    """The ear's streaming API, hearing what the script says: (piece, speech probability) a frame."""

    def __init__(self, script):
        self.script = list(script)
        self.real = None

    def init_state(self, batch=1):
        return _Rows(batch)

    def step(self, pcm, state, rows=None):
        piece, p = self.script.pop(0) if self.script else ("", 0.0)
        return [piece] * pcm.shape[0], None, torch.full((pcm.shape[0], 1), p), state


class _Rows:
    def __init__(self, n):
        self.n = n

    def join(self, other):
        return _Rows(self.n + other.n)

    def leave(self, row):
        return _Rows(self.n - 1)


class ScriptedBrain:
    """Says 'సరే.' to whatever it hears; a request is whole when it ends in ఎంత."""

    def __init__(self, pieces: int = 1):
        self.asked, self.replied, self.pieces = [], [], pieces

    def conversation(self, now=None, voice="lakshmi"):
        return ab.Conversation(None)

    def end_of_turn_prob(self, convo, heard):
        self.asked.append(heard)
        return 0.9 if heard.endswith("ఎంత") else 0.1

    def reply_steps(self, convo, heard):
        self.replied.append(heard)
        for _ in range(self.pieces):  # one yield a piece written
            yield
        return ab.Answer(text="సరే.")


def speech(words, frames_per_word=4):
    """A script: each word heard over a few loud frames (its text on the last one), a space after it."""
    out = []
    for w in words:
        out += [("", 0.9)] * (frames_per_word - 1) + [(w + " ", 0.9)]
    return out


def quiet(n):
    return [("", 0.05)] * n


def agent_with(ear, brain, mouth, **ctx):
    return va.VoiceAgent(ear, brain, mouth, ContextConfig(**ctx))


def play(agent, session, n):
    return [agent.step([session], [np.zeros(FS, np.float32)])[0] for _ in range(n)]


def test_a_whole_request_is_answered_after_a_short_pause(mouth):
    brain = ScriptedBrain()
    script = speech(["ఐదు", "ప్లస్", "మూడు", "ఎంత"]) + quiet(40)
    agent = agent_with(ScriptedEar(script), brain, mouth)
    s = agent.session("ravi")
    frames = play(agent, s, len(script))
    answered = [i for i, f in enumerate(frames) if "answer" in f.events]
    assert brain.replied == ["ఐదు ప్లస్ మూడు ఎంత"]
    assert answered == [16 + ContextConfig().endpoint_quiet_frames - 1]  # two quiet frames after the last word
    assert any(np.abs(f.pcm).max() > 0 for f in frames[answered[0]:])  # and the mouth speaks it


class MishearingEar(ScriptedEar):
    """A scripted ear that also writes CTC log-probs: each character of a frame's piece a slot,
    where a confused character wins by 0.55 to 0.45, so the greedy pieces misspell it."""

    def __init__(self, script, confusions):
        super().__init__(script)
        self.confusions, self.last = confusions, None

    def step(self, pcm, state, rows=None):
        piece, p = self.script.pop(0) if self.script else ("", 0.0)
        rows_lp = []
        for ch in piece or [None]:
            q = np.full(ta.VOCAB_SIZE, 1e-4)
            if ch is None:
                q[ta.BLANK] = 1.0
            elif ch in self.confusions:
                q[ta.CHAR_ID[self.confusions[ch]]], q[ta.CHAR_ID[ch]] = 0.55, 0.45
            else:
                q[ta.CHAR_ID[ch]] = 1.0
            rows_lp.append(np.log(q / q.sum()))
        self.last = torch.tensor(np.stack(rows_lp))[None].float()
        heard = "".join(self.confusions.get(ch, ch) for ch in piece)  # greedy: the louder, wrong one
        return [heard] * pcm.shape[0], torch.zeros(pcm.shape[0], 1, 1), torch.full((pcm.shape[0], 1), p), state

    def heads(self, features):
        return self.last, None


def test_the_brain_reads_the_request_through_the_ears_language_model(mouth):
    """The page's pieces are the ear's greedy characters; the brain answers the LM's reading of
    the same CTC output, and the answer frame says which request it answered."""
    lm = ear_lm.CharLM.count(["ఈ రోజు తారీఖు ఎంత", "ఈ రోజు ఏ వారం", "సమయం ఎంత"], order=5)
    brain = ScriptedBrain()
    script = speech(["ఈ", "రోజు", "తారీఖు", "ఎంత"]) + quiet(10)
    agent = va.VoiceAgent(MishearingEar(script, {"ో": "ా", "ీ": "ి"}), brain, mouth, ContextConfig(), lm)
    s = agent.session("ravi")
    frames = play(agent, s, len(script))
    assert "".join(f.user_piece for f in frames).split() == ["ఈ", "రాజు", "తారిఖు", "ఎంత"]
    assert brain.replied == ["ఈ రోజు తారీఖు ఎంత"]
    assert [f.request for f in frames if f.answer] == ["ఈ రోజు తారీఖు ఎంత"]


def test_a_long_answer_is_written_over_a_few_frames(mouth):
    """brain_pieces_per_tick pieces a frame: 20 pieces take 3 frames, and the worker never stalls
    on one answer."""
    brain = ScriptedBrain(pieces=20)
    script = speech(["సమయం", "ఎంత"]) + quiet(20)
    agent = agent_with(ScriptedEar(script), brain, mouth, brain_pieces_per_tick=8)
    s = agent.session("ravi")
    frames = play(agent, s, len(script))
    ended = 8 + ContextConfig().endpoint_quiet_frames - 1
    assert [i for i, f in enumerate(frames) if "answer" in f.events] == [ended + 2]


def test_a_pause_inside_a_request_is_waited_out(mouth):
    brain = ScriptedBrain()
    script = speech(["ఈ", "రోజు"]) + quiet(12) + speech(["తేదీ", "ఎంత"]) + quiet(30)
    agent = agent_with(ScriptedEar(script), brain, mouth)
    s = agent.session("kiran")
    play(agent, s, len(script))
    assert brain.replied == ["ఈ రోజు తేదీ ఎంత"]
    assert brain.asked[0] == "ఈ రోజు"  # asked once in the pause, and told to wait


def test_a_long_silence_answers_anyway(mouth):
    brain = ScriptedBrain()
    script = speech(["నమస్కారం"]) + quiet(40)
    agent = agent_with(ScriptedEar(script), brain, mouth, max_wait_frames=10)
    s = agent.session("priya")
    frames = play(agent, s, len(script))
    assert brain.replied == ["నమస్కారం"]
    assert [i for i, f in enumerate(frames) if "answer" in f.events] == [4 + 10 - 1]


def test_a_backchannel_is_not_a_request_and_a_barge_in_is(mouth):
    brain = ScriptedBrain()
    agent = agent_with(ScriptedEar([]), brain, mouth)
    s = agent.session("lakshmi")
    mouth.say(agent.mouth_state, s.row, "ఈ రోజు వాతావరణం చాలా బాగుంది, బయటకు వెళ్ళవచ్చు.")
    agent.ear.script = quiet(6) + [("ఊ ", 0.9)] + quiet(10)  # a short "ఊ" over the agent, then quiet
    frames = play(agent, s, 17)
    assert frames[-1].state == SPEAKING and not brain.replied and s.heard == ""
    agent.ear.script = speech(["ఆపండి"], 6) + quiet(30)  # speaks over it for longer: a barge-in
    frames = play(agent, s, 36)
    cut = next(i for i, f in enumerate(frames) if "barge_in" in f.events)
    assert brain.replied == ["ఆపండి"]  # the words said over the agent began the request
    said_after = " ".join(f.agent_piece for f in frames[cut:]).split()
    assert set(said_after) <= {"సరే"}  # the old answer was dropped; only the new one is spoken


def test_what_reads_as_a_backchannel():
    assert all(va.is_backchannel(r) for r in ["ఊ", "ఉప", "అవును", "సరే", "ఊ ఊ", "హా", ""])
    assert not any(va.is_backchannel(r) for r in ["ఆపు", "ఆపు ఆపు", "ఆపండి", "సమయం ఎంత", "అవును అవును అవును"])


def test_a_backchannel_that_stops_the_agent_lets_it_go_on(mouth):
    """A "ఊ" long enough to trip the barge-in (the agent goes quiet at once, as for any
    interruption) is only a backchannel: once the user is quiet again the agent says the rest of
    its answer, from the word it was cut in, and nothing answers the "ఊ"."""
    brain = ScriptedBrain()
    agent = agent_with(ScriptedEar([]), brain, mouth)
    s = agent.session("lakshmi")
    answer = "ఈ రోజు వాతావరణం చాలా బాగుంది, బయటకు వెళ్ళవచ్చు."
    mouth.say(agent.mouth_state, s.row, answer)
    agent.ear.script = quiet(6) + [("", 0.9)] * 3 + [("ఊ ", 0.9)] + quiet(80)
    frames = play(agent, s, 90)
    cut = next(i for i, f in enumerate(frames) if "barge_in" in f.events)
    assert cut == 8 and not brain.replied and not brain.asked
    said = " ".join(f.agent_piece for f in frames).split()
    assert said[-1] == "వెళ్ళవచ్చు" and said.count("వెళ్ళవచ్చు") == 1  # the whole answer, to its last word
    assert any(f.state == SPEAKING for f in frames[cut + 3:])  # and it spoke again after the cut
    # the same, but the user goes on talking: an interruption, and the rest is dropped
    agent.mouth.say(agent.mouth_state, s.row, answer)
    agent.ear.script = quiet(6) + speech(["వద్దు", "ఆపండి"], 5) + quiet(40)
    frames = play(agent, s, 56)
    said = " ".join(f.agent_piece for f in frames).split()
    assert "వెళ్ళవచ్చు" not in said and brain.replied == ["వద్దు ఆపండి"]


@pytest.mark.parametrize("with_lm", [False, True])
def test_sessions_in_a_batch_sound_as_they_do_alone(ear, brain, mouth, with_lm):
    """Two conversations stepped together, one joining late and one leaving early, give each the
    audio and text it gets alone (greedy brain, deterministic mouth and codec; the LM's beams are
    each session's own)."""
    lm = ear_lm.CharLM.count(["ఈ రోజు తారీఖు ఎంత", "సమయం ఎంత"], order=4) if with_lm else None
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(60 * FS) * 0.1).astype(np.float32)
    b = (rng.standard_normal(60 * FS) * 0.1).astype(np.float32)
    now = dt.datetime(2024, 3, 15, 10, 20)

    readings = {}  # voice -> the LM's reading of what it heard, alone

    def alone(pcm, voice, n):
        agent = va.VoiceAgent(ear, brain, mouth, None, lm)
        s = agent.session(voice, now)
        frames = [agent.step([s], [pcm[t * FS:(t + 1) * FS]])[0] for t in range(n)]
        readings[voice] = s.beams.best() if with_lm else None
        return frames

    ref_a, ref_b = alone(a, "ravi", 60), alone(b, "priya", 45)
    agent = va.VoiceAgent(ear, brain, mouth, None, lm)
    sa = agent.session("ravi", now)
    got_a, got_b = [], []
    for t in range(60):
        if t == 10:
            sb = agent.session("priya", now)
        if 10 <= t < 55:
            fa, fb = agent.step([sa, sb], [a[t * FS:(t + 1) * FS], b[(t - 10) * FS:(t - 9) * FS]])
            got_a.append(fa)
            got_b.append(fb)
        else:
            got_a.append(agent.step([sa], [a[t * FS:(t + 1) * FS]])[0])
        if t == 54:
            assert (sb.beams.best() if with_lm else None) == readings["priya"]
            agent.close(sb)
    for got, ref in ((got_a, ref_a), (got_b, ref_b)):
        assert [f.user_piece for f in got] == [f.user_piece for f in ref]
        assert [f.answer for f in got] == [f.answer for f in ref]
        assert [f.request for f in got] == [f.request for f in ref]
        assert np.allclose(np.stack([f.pcm for f in got]), np.stack([f.pcm for f in ref]), atol=1e-5)
    assert len(agent.sessions) == 1 and sa.row == 0
    assert (sa.beams.best() if with_lm else None) == readings["ravi"]
    if with_lm:
        assert len(readings["ravi"]) > 10  # the random ear says a lot: the beams had work to do
