"""s2s_eval.ListeningUser (`s2s_eval.py --agent v2 --interactive`): the replayed user waits for
the agent it talks to. A request after an answer comes the corpus's gap after this agent stops,
however long it talks; a backchannel comes at the corpus's offset into this agent's answer; a user
who hears nothing goes on after wait_s; the utterances are moved in the meta the scorer reads."""
import json
from types import SimpleNamespace

import numpy as np
import soundfile as sf

import s2s_eval

SR, FS = 24000, 960
FRAME_S = FS / SR


def dialogue(tmp_path):
    """Two requests and a backchannel on the user channel (tones), as dialogue_corpus writes them:
    request 0.4-1.4 s, the corpus's answer 1.6-3.6 s with "ఊ" at 2.6-2.8 s, request 4.1-5.0 s."""
    user = np.zeros(int(6.0 * SR), np.float32)
    tone = lambda a, b, f: (0.3 * np.sin(2 * np.pi * f * np.arange(int((b - a) * SR)) / SR)).astype(np.float32)  # noqa: E731
    for a, b, f in ((0.4, 1.4, 300), (2.6, 2.8, 500), (4.1, 5.0, 700)):
        user[int(a * SR):int(a * SR) + int((b - a) * SR)] = tone(a, b, f)
    path = tmp_path / "d.wav"
    sf.write(path, np.stack([user, np.zeros_like(user)], 1), SR)
    utts = [{"side": "user", "kind": "request", "turn": 0, "start": 0.4, "end": 1.4, "words": [], "text": "a"},
            {"side": "agent", "kind": "answer", "turn": 0, "start": 1.6, "end": 3.6, "text": "b"},
            {"side": "user", "kind": "backchannel", "turn": 0, "start": 2.6, "end": 2.8, "text": "ఊ"},
            {"side": "user", "kind": "request", "turn": 1, "start": 4.1, "end": 5.0, "words": [], "text": "c"},
            {"side": "agent", "kind": "answer", "turn": 1, "start": 5.2, "end": 5.9, "text": "d"}]
    meta = {"utterances": utts, "interruptions": [], "duration": 6.0, "turns": []}
    return {"audio": str(path), "meta": meta}


class Agent:
    """Speaks `talk` frames, starting `delay` frames after each request ends (it hears the end as
    the first quiet frame after loud ones)."""

    def __init__(self, delay, talk):
        self.delay, self.talk, self.loud_run, self.start, self.heard = delay, talk, 0, [], []

    def frame(self, t, user):
        loud = float(np.abs(user).max()) > 0.1
        if not loud and self.loud_run >= 10:  # a request (not the short backchannel) just ended
            self.start.append(t + self.delay)
        self.loud_run = self.loud_run + 1 if loud else 0
        self.heard.append(loud)
        speaking = any(s <= t < s + self.talk for s in self.start)
        pcm = np.full(FS, 0.1 if speaking else 0.0, np.float32)
        return SimpleNamespace(pcm=pcm, state="speaking" if speaking else "listening")


def play(listener, agent, limit=2000):
    frame, t = None, 0
    while t < limit:
        user = listener(t, frame)
        if user is None:
            return t
        assert user.shape == (FS,) and user.dtype == np.float32
        frame = agent.frame(t, user)
        t += 1
    raise AssertionError("the listening user never finished")


def onsets(heard):
    return [t for t in range(1, len(heard)) if heard[t] and not heard[t - 1]]


def test_the_user_waits_for_a_slow_agent(tmp_path):
    d = dialogue(tmp_path)
    agent = Agent(delay=5, talk=150)  # a 6 s answer where the corpus's agent spoke 2 s
    listener = s2s_eval.ListeningUser(d, SR, FS)
    play(listener, agent)
    first, back, second = onsets(agent.heard)[:3]
    answer = agent.start[0]
    assert abs(first - round(0.4 / FRAME_S)) <= 1  # the first request where the corpus has it
    assert abs(back - (answer + round(1.0 / FRAME_S))) <= 2  # "ఊ" 1.0 s into this agent's answer
    end = answer + agent.talk
    assert end + listener.QUIET_FRAMES <= second <= end + listener.QUIET_FRAMES + round(0.5 / FRAME_S) + 2
    moved = [u for u in listener.meta()["utterances"] if u["side"] == "user"]
    assert abs(moved[2]["start"] - second * FRAME_S) < 0.1 and moved[2]["end"] - moved[2]["start"] == 4.9 - 4.0
    assert d["meta"]["utterances"][3]["start"] == 4.1  # the dialogue's own meta is untouched


def test_a_user_who_hears_nothing_goes_on(tmp_path):
    d = dialogue(tmp_path)
    agent = Agent(delay=10_000, talk=0)  # never answers
    listener = s2s_eval.ListeningUser(d, SR, FS, wait_s=2.0)
    n = play(listener, agent)
    second = [t for t in onsets(agent.heard) if t > round(2.0 / FRAME_S)][-1]
    request_end = round(1.55 / FRAME_S)  # the first clip (with its 0.15 s of room) ends
    assert abs(second - (request_end + round(2.0 / FRAME_S))) <= 8
    assert n < round(20 / FRAME_S)  # and the conversation ends
    assert json.dumps(listener.meta())  # JSON-able, for the report
