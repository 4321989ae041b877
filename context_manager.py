"""One conversation's bookkeeping: who is speaking, whose turn it is, when the user barges in, what
was said, and how long each frame took.

The S2S model decides what to say; this module watches both channels frame by frame and enforces
the rules of a polite conversation on top of it:

    LISTENING --user speaks--> LISTENING --user stops--> THINKING --agent audio--> SPEAKING
    SPEAKING --user speaks over the agent for barge_in_frames--> INTERRUPTED (agent muted, client
    flushes its playback buffer) --user stops or yield_frames pass--> LISTENING

Memory stays flat for an hour-long session: the model's KV cache is a sliding window (owned by the
model), the turn history keeps the last `history_turns` turns and timings a fixed ring buffer.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

from config import ContextConfig

LISTENING, THINKING, SPEAKING, INTERRUPTED = "listening", "thinking", "speaking", "interrupted"


class VoiceActivity:
    """Energy VAD with onset/hangover smoothing: cheap, causal, and good enough to tell speech from
    a room at the 40 ms frame rate. The noise floor is the quietest frame of the last
    `noise_window_frames` (minimum statistics): speech has pauses, a room does not, so the floor
    finds a noisy room within that window and never climbs onto continuous speech."""

    def __init__(self, cfg: ContextConfig):
        self.cfg = cfg
        self.levels = collections.deque([-70.0] * cfg.noise_window_frames, maxlen=cfg.noise_window_frames)
        self.active = False  # smoothed: speaking, with onset and hangover
        self.loud = False  # raw: this frame alone is above the threshold
        self._run = 0  # consecutive frames disagreeing with `active`

    @property
    def noise_db(self) -> float:
        return min(self.levels)

    def update(self, pcm: np.ndarray, speech_prob: float | None = None) -> bool:
        """speech_prob: the ear's probability that this frame is speech (telugu_asr). When given
        (and context.ear_vad_threshold > 0) it decides instead of the energy: a cough, a door or the
        agent's echo is loud but not speech, and a quiet speaker is speech."""
        db = 10 * math.log10(float(np.mean(np.square(pcm, dtype=np.float64))) + 1e-10) if len(pcm) else -100.0
        if speech_prob is not None and self.cfg.ear_vad_threshold > 0:
            loud = self.loud = speech_prob >= self.cfg.ear_vad_threshold
        else:
            loud = self.loud = db > max(self.noise_db + self.cfg.vad_margin_db, self.cfg.vad_min_db)
        self.levels.append(db)
        self._run = self._run + 1 if loud != self.active else 0
        needed = self.cfg.vad_onset_frames if not self.active else self.cfg.vad_hangover_frames
        if self._run >= needed:
            self.active, self._run = loud, 0
        return self.active


@dataclass
class Turn:
    side: str  # "user" | "agent"
    start_frame: int
    end_frame: int = -1
    text: str = ""
    interrupted: bool = False


@dataclass
class FrameResult:
    state: str
    mute_agent: bool  # the server sends silence instead of the agent's audio this frame
    events: list[str] = field(default_factory=list)  # "state", "barge_in", "user_turn_end", "agent_turn_end"
    prompt_agent: bool = False  # the user is waiting: the agent's next text token should be a word


class ContextManager:
    def __init__(self, cfg: ContextConfig | None = None, frame_ms: int = 40):
        self.cfg = cfg or ContextConfig()
        self.frame_ms = frame_ms
        self.user_vad, self.agent_vad = VoiceActivity(self.cfg), VoiceActivity(self.cfg)
        self.state = LISTENING
        self.frame = 0
        self.history: collections.deque[Turn] = collections.deque(maxlen=self.cfg.history_turns)
        self.current: dict[str, Turn | None] = {"user": None, "agent": None}
        self.last: dict[str, Turn | None] = {"user": None, "agent": None}
        self.timings: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=self.cfg.timing_window))
        self._barge_run = 0
        self._yield_left = 0
        self.barge_ins = 0
        self.user_speech_end_frame: int | None = None  # for the response gap
        self._waiting, self._answer_started = 0, False  # endpointing: frames in "thinking", and any agent word since
        self._quiet = 0  # frames since the user was last loud (raw VAD): the early endpoint's silence
        self._text_quiet = 0  # frames since the user's transcript last grew: its last word is complete
        self.response_gaps_ms: collections.deque = collections.deque(maxlen=self.cfg.history_turns)

    # --- per frame ------------------------------------------------------------------------------
    def update(self, user_pcm: np.ndarray, agent_pcm: np.ndarray, user_text: str = "",
               agent_text: str = "", timings: dict | None = None,
               agent_word_prob: float | None = None, user_speech_prob: float | None = None) -> FrameResult:
        """Call once per frame with both channels (the agent's audio as the model produced it).
        agent_word_prob: the model's probability that its text this frame is a word, not PAD
        (StepOutput.agent_word_prob), for the early endpoint. user_speech_prob: the ear's speech
        probability for the user's frame, which then drives the user's voice activity."""
        events: list[str] = []
        user_on = self.user_vad.update(user_pcm, user_speech_prob)
        agent_on = self.agent_vad.update(agent_pcm)
        before = self.state
        self._quiet = 0 if self.user_vad.loud else self._quiet + 1
        self._text_quiet = 0 if user_text.strip() else self._text_quiet + 1
        if self.user_vad.loud:
            self._answer_started = False  # the user speaks (again): the next answer is still owed
        elif agent_text.strip():
            self._answer_started = True

        self._track_turn("user", user_on, user_text, events)
        if user_on:
            self.user_speech_end_frame = None
        elif events and "user_turn_end" in events:
            self.user_speech_end_frame = self.frame

        if self.state == INTERRUPTED:
            self._yield_left -= 1
            if self._yield_left <= 0 or not user_on:
                self.state = LISTENING
        elif self.state == SPEAKING and self.user_vad.loud:
            # Raw loudness, not the smoothed flag: the hangover must not turn a short "ఊ" into a barge-in.
            self._barge_run += 1
            if self._barge_run >= self.cfg.barge_in_frames:
                self.state, self._yield_left = INTERRUPTED, self.cfg.yield_frames
                self.barge_ins += 1
                events.append("barge_in")
                if self.current["agent"] is not None:
                    self.current["agent"].interrupted = True
        else:
            self._barge_run = 0

        mute = self.state == INTERRUPTED
        self._track_turn("agent", agent_on and not mute, "" if mute else agent_text, events)
        if self.state not in (INTERRUPTED,):
            if agent_on and not mute:
                if self.state != SPEAKING and self.user_speech_end_frame is not None:
                    self.response_gaps_ms.append((self.frame - self.user_speech_end_frame) * self.frame_ms)
                    self.user_speech_end_frame = None
                self.state = SPEAKING
            elif self.state == SPEAKING:
                self.state = LISTENING
            elif not user_on and self.user_speech_end_frame is not None:
                self.state = THINKING
            else:
                self.state = LISTENING
        # Endpointing: a user who finished and hears nothing gets an answer started, once per turn
        # (any agent text since the user last spoke disarms it). Late: the VAD hangover has passed
        # (THINKING) and respond_after_frames more. Early, inside the hangover: the user has been
        # quiet for endpoint_quiet_frames, the transcript has stopped growing (its last word is
        # in), and the model itself wants to speak (a word has probability >= endpoint_word_prob).
        # The model read the whole request, so its wish to answer separates the end of a request
        # from a pause inside one; silence alone cannot.
        self._waiting = self._waiting + 1 if self.state == THINKING else 0
        late = 0 <= self.cfg.respond_after_frames < self._waiting
        early = (0 < self.cfg.endpoint_word_prob <= 1 and agent_word_prob is not None
                 and agent_word_prob >= self.cfg.endpoint_word_prob and self.state == LISTENING
                 and self.current["user"] is not None and self._quiet >= self.cfg.endpoint_quiet_frames
                 and self._text_quiet >= 1)
        prompt = (late or early) and not self._answer_started
        if self.state != before:
            events.append("state")
        for name, ms in (timings or {}).items():
            self.timings[name].append(ms)
        self.frame += 1
        return FrameResult(self.state, mute, events, prompt)

    def _track_turn(self, side: str, on: bool, text: str, events: list[str]) -> None:
        turn = self.current[side]
        if on and turn is None:
            turn = self.current[side] = Turn(side, self.frame)
        if turn is not None:
            turn.text += text
            if not on:
                turn.end_frame = self.frame
                self.history.append(turn)
                self.current[side], self.last[side] = None, turn
                events.append(f"{side}_turn_end")
        elif text:
            # The transcript lags the audio: late pieces belong to the turn that just ended.
            last = self.last[side]
            if last is not None and self.frame - last.end_frame <= self.cfg.text_lag_frames:
                last.text += text
            elif text.strip():  # text with no detected speech (a very quiet voice) is kept too
                self.last[side] = Turn(side, self.frame, self.frame, text)
                self.history.append(self.last[side])

    # --- reports ----------------------------------------------------------------------------------
    def percentiles(self, name: str, qs=(50, 95, 99)) -> dict:
        values = self.timings.get(name)
        if not values:
            return {}
        return {f"p{q}": float(np.percentile(values, q)) for q in qs}

    def transcript(self) -> list[dict]:
        turns = list(self.history) + [t for t in self.current.values() if t is not None]
        return [dict(side=t.side, text=t.text.strip(), start_s=t.start_frame * self.frame_ms / 1000,
                     end_s=(t.end_frame if t.end_frame >= 0 else self.frame) * self.frame_ms / 1000,
                     interrupted=t.interrupted) for t in sorted(turns, key=lambda t: t.start_frame)]

    def stats(self) -> dict:
        out = {name: self.percentiles(name) for name in self.timings}
        gaps = list(self.response_gaps_ms)
        out.update(frames=self.frame, state=self.state, barge_ins=self.barge_ins,
                   response_gap_ms={"p50": float(np.median(gaps)), "p95": float(np.percentile(gaps, 95))} if gaps else {})
        return out
