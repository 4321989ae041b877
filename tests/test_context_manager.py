"""The context manager on scripted frame sequences: turn states, barge-in, backchannels, history,
bounded memory."""
import numpy as np

from config import ContextConfig
from context_manager import INTERRUPTED, LISTENING, SPEAKING, THINKING, ContextManager, VoiceActivity

N = 960
rng = np.random.default_rng(0)


def silence():
    return (1e-4 * rng.standard_normal(N)).astype(np.float32)


def speech():
    t = np.arange(N) / 24000
    return (0.1 * np.sin(2 * np.pi * 150 * t) + 1e-4 * rng.standard_normal(N)).astype(np.float32)


def run(cm, script):
    """script: list of (n_frames, user_on, agent_on, user_text, agent_text); returns FrameResults."""
    out = []
    for n, u, a, ut, at in script:
        for i in range(n):
            out.append(cm.update(speech() if u else silence(), speech() if a else silence(),
                                 ut if i == min(3, n - 1) else "", at if i == min(3, n - 1) else "",
                                 {"step_ms": 5.0}))  # text lags the audio by a few frames
    return out


def test_vad_onset_and_hangover():
    vad = VoiceActivity(ContextConfig())
    states = [vad.update(silence()) for _ in range(20)]
    states += [vad.update(speech()) for _ in range(10)]
    states += [vad.update(silence()) for _ in range(20)]
    assert not any(states[:20])
    assert states[21] and all(states[22:30])  # on after 2 frames
    assert all(states[30:37]) and not any(states[38:])  # off after 8 frames of silence


def test_turn_taking_states_and_response_gap():
    cm = ContextManager()
    res = run(cm, [(20, 0, 0, "", ""), (25, 1, 0, "ఈ రోజు", ""), (5, 0, 0, " ఏ వారం", ""),
                   (6, 0, 0, "", ""), (30, 0, 1, "", "ఈ రోజు సోమవారం"), (20, 0, 0, "", "")])
    states = [r.state for r in res]
    assert states[0] == LISTENING
    assert THINKING in states[45:75]
    assert SPEAKING in states[75:110]
    assert states[-1] == LISTENING
    turns = cm.transcript()
    assert [t["side"] for t in turns] == ["user", "agent"]
    assert turns[0]["text"] == "ఈ రోజు ఏ వారం"  # the lagging transcript piece joined the user's turn
    assert turns[1]["text"] == "ఈ రోజు సోమవారం" and not turns[1]["interrupted"]
    gap = cm.stats()["response_gap_ms"]["p50"]
    assert 0 < gap <= 400


def test_endpointing_prompts_a_silent_agent_once_per_user_turn():
    """The user finished and the agent says nothing: after respond_after_frames of "thinking" the
    agent is prompted (its next text token must be a word), until any agent text arrives."""
    script = [(10, 0, 0, "", ""), (25, 1, 0, "ఈ రోజు ఏ వారం", ""), (20, 0, 0, "", "")]
    res = run(ContextManager(ContextConfig(respond_after_frames=2)), script)
    thinking = [i for i, r in enumerate(res) if r.state == THINKING]
    prompted = [i for i, r in enumerate(res) if r.prompt_agent]
    assert thinking and prompted == [i for i in thinking if i >= thinking[0] + 2]
    assert not any(r.prompt_agent for r in res[:thinking[0]])  # never while the user speaks

    # The prompted agent's first word disarms it, though its audio has not started yet.
    cm = ContextManager(ContextConfig(respond_after_frames=2))
    res = run(cm, script[:2])
    out = []
    for i in range(20):
        out.append(cm.update(silence(), silence(), "", "ఈ" if i == 12 else ""))
    assert [r.state for r in out[8:]] == [THINKING] * 12
    first = next(i for i, r in enumerate(out) if r.prompt_agent)
    assert all(r.prompt_agent for r in out[first:12]) and not any(r.prompt_agent for r in out[12:])

    # The next user turn arms it again; -1 turns endpointing off (the model alone decides).
    res = run(cm, [(15, 0, 1, "", "సోమవారం"), (10, 0, 0, "", ""), (25, 1, 0, "సరే", ""), (20, 0, 0, "", "")])
    assert any(r.prompt_agent for r in res[-20:])
    off = run(ContextManager(ContextConfig(respond_after_frames=-1)), script)
    assert THINKING in [r.state for r in off] and not any(r.prompt_agent for r in off)


def test_early_endpoint_needs_both_silence_and_the_models_wish_to_speak():
    """Inside the VAD hangover the agent is prompted only where the user has been quiet for
    endpoint_quiet_frames AND the model gives a word at least endpoint_word_prob: a pause in the
    request (model quiet) or the model's wish alone over speech never fires it."""
    cfg = ContextConfig(respond_after_frames=2, endpoint_word_prob=0.2, endpoint_quiet_frames=3)

    def feed(cm, frames):  # frames: (user_on, word_prob)
        return [cm.update(speech() if u else silence(), silence(), "", "", None, p) for u, p in frames]

    # The request, a 200 ms pause with the model quiet, more request, then the model wants to speak.
    cm = ContextManager(cfg)
    res = feed(cm, [(0, 0.0)] * 10 + [(1, 0.9)] * 15 + [(0, 0.01)] * 5 + [(1, 0.0)] * 10 + [(0, 0.0)] * 2
               + [(0, 0.5)] * 5)
    prompted = [i for i, r in enumerate(res) if r.prompt_agent]
    assert prompted and prompted[0] == 10 + 15 + 5 + 10 + 2  # the first wish after 3 quiet frames
    assert all(r.state == LISTENING for r in res[prompted[0]:])  # inside the hangover: early, not late
    # The agent's first word disarms it.
    out = [cm.update(silence(), silence(), "", "ఈ" if i == 0 else "", None, 0.5) for i in range(4)]
    assert not any(r.prompt_agent for r in out)

    # A transcript still growing (the last word's tokens are arriving) holds it back a frame.
    cm = ContextManager(cfg)
    feed(cm, [(0, 0.0)] * 10 + [(1, 0.0)] * 15 + [(0, 0.0)] * 2)
    held = cm.update(silence(), silence(), "రం", "", None, 0.5)
    assert not held.prompt_agent and cm.update(silence(), silence(), "", "", None, 0.5).prompt_agent

    # Off (endpoint_word_prob 0): the same frames prompt only after the hangover, as before.
    late = feed(ContextManager(ContextConfig(respond_after_frames=2, endpoint_word_prob=0.0)),
                [(0, 0.0)] * 10 + [(1, 0.0)] * 15 + [(0, 0.5)] * 20)
    first = next(i for i, r in enumerate(late) if r.prompt_agent)
    assert late[first].state == THINKING and first > 10 + 15 + 8


def test_barge_in_mutes_agent_within_a_few_frames():
    cm = ContextManager()
    res = run(cm, [(10, 0, 0, "", ""), (20, 0, 1, "", "నమస్కారం"), (15, 1, 1, "ఆపండి", ""), (30, 0, 0, "", "")])
    onset = 30
    barge = [i for i, r in enumerate(res) if "barge_in" in r.events]
    assert len(barge) == 1
    assert barge[0] - onset <= 5  # VAD onset + barge_in_frames: within 200 ms
    assert res[barge[0]].mute_agent and res[barge[0]].state == INTERRUPTED
    assert all(r.mute_agent for r in res[barge[0]:onset + 15])  # agent stays quiet while the user talks
    assert not res[-1].mute_agent and res[-1].state == THINKING  # the user spoke; the agent may answer
    agent_turns = [t for t in cm.transcript() if t["side"] == "agent"]
    assert agent_turns[0]["interrupted"]
    assert cm.stats()["barge_ins"] == 1


def test_backchannel_does_not_interrupt():
    cm = ContextManager()
    res = run(cm, [(10, 0, 0, "", ""), (20, 0, 1, "", "సమాధానం"), (2, 1, 1, "ఊ", ""), (20, 0, 1, "", "")])
    assert not any("barge_in" in r.events for r in res)
    assert not any(r.mute_agent for r in res)


def test_memory_stays_bounded_over_an_hour():
    cfg = ContextConfig(history_turns=10, timing_window=100)
    cm = ContextManager(cfg)
    for _ in range(300):  # 300 short exchanges
        run(cm, [(3, 1, 0, "ప్రశ్న", ""), (9, 0, 0, "", ""), (3, 0, 1, "", "జవాబు"), (9, 0, 0, "", "")])
    assert len(cm.history) == 10
    assert len(cm.timings["step_ms"]) == 100
    assert cm.percentiles("step_ms")["p50"] == 5.0


def test_noisy_room_is_not_speech_for_long():
    """A steady room at about -50 dBFS counts as silence within the noise window (2 s)."""
    vad = VoiceActivity(ContextConfig())
    room = lambda: (0.0045 * rng.standard_normal(N)).astype(np.float32)  # ~ -47 dBFS
    states = [vad.update(room()) for _ in range(100)]
    assert not any(states[60:])
    loud = [vad.update(speech() * 3) for _ in range(5)]
    assert loud[-1]  # speech above the room is still heard


def test_the_ears_speech_probability_decides_when_given():
    """A loud non-speech frame (prob 0) is not the user speaking; a quiet voice (prob 1) is."""
    cm = ContextManager()
    for _ in range(20):
        cm.update(silence(), silence(), user_speech_prob=0.0)
    for _ in range(10):
        res = cm.update(speech() * 3, silence(), user_speech_prob=0.05)  # a door slams for 400 ms
    assert cm.current["user"] is None and res.state == LISTENING
    for _ in range(10):
        cm.update(silence() * 5, silence(), "ఊ", user_speech_prob=0.9)  # a whisper the ear hears
    assert cm.current["user"] is not None
    off = ContextManager(ContextConfig(ear_vad_threshold=0.0))  # 0: the energy rule even with an ear
    for _ in range(20):
        off.update(silence(), silence(), user_speech_prob=0.0)
    for _ in range(5):
        off.update(speech(), silence(), user_speech_prob=0.0)
    assert off.current["user"] is not None
