"""The agent, v2 (#25): it hears with the ear, answers with the brain, speaks with the mouth, each
trained on its own with the data and loss that suit it, joined here frame by frame.

    user pcm ─▶ ear.step ─pieces, speech prob─▶ Session: words heard, quiet frames, ContextManager
                 └─CTC log-probs─▶ ear_lm beam search: the request as the LM reads it
                    the user paused: brain.end_of_turn_prob(words so far) ≥ threshold
                    (a whole request), or quiet for max_wait: brain.reply ─▶ answer text
    mouth.say(answer) ─▶ mouth.step ─codes─▶ codec.decode_step ─▶ agent pcm
    ContextManager: turn state, barge-in (mouth.stop), the transcript of both sides

Turn-taking has two halves. Silence says the user paused (the ear's speech probability, frame by
frame); the brain says whether the words so far make a request (its WAIT/AGENT prediction,
brain_data.dialogue_stream), so a pause inside "ఈ రోజు ... తేదీ ఎంత" is waited out while a
finished "ఈ రోజు తేదీ ఎంత" is answered after two quiet frames. Words the user says over the
agent without interrupting it ("ఊ") are backchannels, not requests; a barge-in makes them the
start of the next request, unless they read as a backchannel and the user is quiet again at once:
then the agent says the rest of its answer (context.resume_frames).

The page shows the ear's greedy characters as they come (a word at a time); the brain reads the
request as the ear's language model reads it (ear_lm.py: a prefix beam search over the same CTC
output, which turns తారిు back into తారీఖు), and that reading is the answer frame's `request`.

    agent = VoiceAgent(ear, brain, mouth)                         # or voice_agent.load()
    session = agent.session(voice="lakshmi", now=datetime.now())
    frames = agent.step([session], [pcm_frame])                   # one AgentFrame per session

`step` runs the ear, the mouth and the codec once over every session that has a frame (a worker's
batch), and the brain for the sessions whose turn ended on this frame.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

import agent_brain
import agent_mouth
import dialogue_domain as domain
import ear_lm
import telugu_asr
from config import ContextConfig
from context_manager import INTERRUPTED, SPEAKING, ContextManager
from s2s_transformer import frame_db, put_rows, rows_of


@dataclass
class AgentFrame:
    pcm: np.ndarray  # [frame_size] float32: the agent's audio for this frame (silence when listening)
    user_piece: str  # text the ear recognised on this frame
    agent_piece: str  # words the mouth finished saying on this frame
    state: str  # ContextManager's turn state
    events: list[str] = field(default_factory=list)  # ContextManager's, plus "answer" when the brain replied
    answer: str = ""  # the brain's whole answer, on the frame it was written
    request: str = ""  # on the same frame: the request it answers, as the brain read it
    timings: dict = field(default_factory=dict)


@dataclass
class Session:
    """One conversation: its voice, clock, turn bookkeeping and brain context; its row in the
    agent's batch is `row` while it is stepped there."""
    voice: str
    context: ContextManager
    brain: agent_brain.Conversation
    heard: str = ""  # the user's words since the last answer (or barge-in)
    over_agent: str = ""  # words heard while the agent spoke: a backchannel unless it was a barge-in
    quiet: int = 0  # frames since the ear last heard speech
    asked: str | None = None  # `heard` when the brain last said "not a whole request yet"
    thinking: object = None  # the brain's answer being written (agent_brain.Brain.reply_steps)
    request: str = ""  # what the brain is answering
    resume: str = ""  # after a barge-in: the rest of the answer, said again if it was a backchannel
    resume_left: int = 0  # frames left to decide that
    beams: ear_lm.Beams | None = None  # `heard` as the LM reads it (None: no LM)
    over_beams: ear_lm.Beams | None = None  # `over_agent` as the LM reads it
    row: int = -1


class VoiceAgent:
    def __init__(self, ear: telugu_asr.Ear, brain: agent_brain.Brain, mouth: agent_mouth.Mouth,
                 context: ContextConfig | None = None, lm: ear_lm.CharLM | None = None):
        self.ear, self.brain, self.mouth, self.codec = ear, brain, mouth, mouth.codec
        self.cfg = context or ContextConfig()
        self.decoder = telugu_asr.lm_decoder(lm, self.cfg)  # None: the brain reads the greedy transcript
        self.frame_size = self.codec.frame_size
        self.frame_ms = int(round(1000 * self.frame_size / self.codec.sample_rate))
        self.sessions: list[Session] = []
        self.ear_state = ear.init_state(0)
        self.mouth_state = mouth.init_state(0, torch.zeros(0, mouth.voice_table.shape[1]))
        self.codec_state = self.codec.init_state(0)

    # --- sessions join and leave ----------------------------------------------------------------
    @torch.inference_mode()
    def session(self, voice: str, now: dt.datetime | None = None, context: ContextManager | None = None) -> Session:
        """A new conversation in the last row. now: the moment its clock tools read (None: the wall
        clock); context: its ContextManager, when the caller keeps one (the server's Conversation)."""
        s = Session(voice, context or ContextManager(self.cfg, self.frame_ms), self.brain.conversation(now, voice))
        s.row = len(self.sessions)
        if self.decoder is not None:
            s.beams, s.over_beams = self.decoder.start(), self.decoder.start()
        self.sessions.append(s)
        self.ear_state = self.ear_state.join(self.ear.init_state(1))
        self.mouth_state = self.mouth_state.join(self.mouth.init_state(1, [voice]))
        fresh = self.codec.init_state(1)
        self.codec_state = {k: torch.cat([v, fresh[k]]) for k, v in self.codec_state.items()}
        return s

    @torch.inference_mode()
    def close(self, s: Session) -> None:
        """The session leaves; the last row moves into its place."""
        r, last = s.row, len(self.sessions) - 1
        order = [last if i == r else i for i in range(last)]  # rows kept, in their new order
        self.ear_state = self.ear_state.leave(r)
        self.mouth_state = self.mouth_state.rows(order)
        self.codec_state = {k: v[order] for k, v in self.codec_state.items()}
        self.sessions[r] = self.sessions[last]
        self.sessions[r].row = r
        self.sessions.pop()
        s.row = -1

    # --- one frame ------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, sessions: list[Session], frames: list[np.ndarray]) -> list[AgentFrame]:
        """One user frame per session in, one agent frame per session out. Sessions not in the
        list keep their place: their ear and codec rows are not stepped; their mouth row is (a
        session without a frame this tick is late, and its answer moves on with the clock)."""
        t0 = time.perf_counter()
        rows = torch.tensor([s.row for s in sessions])
        pcm = torch.from_numpy(np.stack([np.asarray(f, np.float32) for f in frames]))
        pieces, features, speech, _ = self.ear.step(pcm, self.ear_state, rows)
        log_probs = self.ear.heads(features)[0].numpy() if self.decoder is not None else [None] * len(sessions)
        t1 = time.perf_counter()
        answers = {}
        for s, piece, p, lp in zip(sessions, pieces, speech[:, -1].tolist(), log_probs):
            answers[s.row] = self._listen(s, piece, p, lp)
        t2 = time.perf_counter()
        codes, spoken, _ = self.mouth.step(self.mouth_state)
        audio, self.codec_state = self._decode(codes, rows)
        t3 = time.perf_counter()
        out = []
        for k, (s, piece, p) in enumerate(zip(sessions, pieces, speech[:, -1].tolist())):
            agent_pcm = audio[k]
            said = " ".join(spoken[s.row])
            res = s.context.update(frames[k], agent_pcm, user_text=piece, agent_text=(" " + said) if said else "",
                                   user_speech_prob=p)
            if "barge_in" in res.events:
                s.resume = self.mouth.stop(self.mouth_state, s.row)
                s.resume_left = self.cfg.resume_frames if s.resume else 0
                s.heard, s.over_agent, s.asked = s.over_agent, "", None  # what they said over it starts the request
                if self.decoder is not None:
                    s.beams, s.over_beams = s.over_beams, self.decoder.start()
            if res.mute_agent:
                agent_pcm = np.zeros_like(agent_pcm)
            events = list(res.events) + (["answer"] if answers[s.row] else [])
            out.append(AgentFrame(agent_pcm, piece, "" if res.mute_agent else said, res.state, events,
                                  answers[s.row] or "", s.request if answers[s.row] else "",
                                  {"ear_ms": (t1 - t0) * 1000, "brain_ms": (t2 - t1) * 1000,
                                   "mouth_codec_ms": (t3 - t2) * 1000}))
        return out

    def _listen(self, s: Session, piece: str, speech_prob: float, log_probs) -> str | None:
        """The user's side of one frame: collect the words, and answer when the request is over."""
        speaking_agent = s.context.state in (SPEAKING, INTERRUPTED) or self.mouth.speaking(self.mouth_state, s.row)
        if speaking_agent and s.context.state != INTERRUPTED:
            s.over_agent += piece
            if self.decoder is not None:
                s.over_beams = self.decoder.advance(s.over_beams, log_probs)
        else:
            s.heard += piece
            if self.decoder is not None:
                s.beams = self.decoder.advance(s.beams, log_probs)
        s.quiet = 0 if speech_prob >= self.cfg.ear_vad_threshold else s.quiet + 1
        if s.over_agent and s.context.state != INTERRUPTED and \
                (not speaking_agent or s.quiet >= self.cfg.vad_hangover_frames):
            s.over_agent = ""  # the user went quiet again (or the agent finished) with no barge-in: a backchannel
            if self.decoder is not None:
                s.over_beams = self.decoder.start()
        words = " ".join(s.heard.split())
        if s.resume_left > 0:  # a barge-in a moment ago: an interruption, or only "ఊ"?
            s.resume_left -= 1
            reading = self.decoder.finish(s.beams) if self.decoder is not None else words
            if s.context.state != INTERRUPTED and s.quiet >= self.cfg.endpoint_quiet_frames and is_backchannel(reading):
                self.mouth.say(self.mouth_state, s.row, s.resume)  # it was "ఊ": go on with the answer
                s.heard, s.asked, s.resume_left = "", None, 0
                if self.decoder is not None:
                    s.beams = self.decoder.start()
                return None
            if s.resume_left > 0 and is_backchannel(reading):
                return None  # not decided yet: no answer to a backchannel
            s.resume_left = 0  # a real interruption: the rest of the answer is dropped
        if s.thinking is None:
            if not words or speaking_agent or s.quiet < self.cfg.endpoint_quiet_frames or piece.strip():
                return None
            if self.decoder is not None:
                words = self.decoder.finish(s.beams) or words
            if s.quiet < self.cfg.max_wait_frames:  # a pause: is it the end of the request?
                if s.asked == words:
                    return None
                if self.brain.end_of_turn_prob(s.brain, words) < self.cfg.end_of_turn_prob:
                    s.asked = words
                    return None
            s.thinking, s.heard, s.asked, s.request = self.brain.reply_steps(s.brain, words), "", None, words
            if self.decoder is not None:
                s.beams = self.decoder.start()
        return self._think(s)

    def _think(self, s: Session) -> str | None:
        """Write up to brain_pieces_per_tick pieces of the answer: a long answer takes a few
        frames rather than stalling every conversation of the worker for one. The mouth starts
        on the frame the answer is whole."""
        for _ in range(self.cfg.brain_pieces_per_tick):
            try:
                next(s.thinking)
            except StopIteration as done:
                s.thinking = None
                if done.value.text:
                    self.mouth.say(self.mouth_state, s.row, done.value.text)
                return done.value.text
        return None

    def _decode(self, codes, rows):
        """The codec's streaming decoder over the stepped rows (all rows' states kept)."""
        all_rows = len(rows) == len(self.sessions) and bool((rows == torch.arange(len(rows))).all())
        pcm, new = self.codec.decode_step(codes[rows].unsqueeze(-1), rows_of(self.codec_state, rows, all_rows))
        return pcm[:, 0].float().numpy(), put_rows(self.codec_state, rows, new, all_rows)


BACKCHANNEL_WORDS = {w for b in domain.BACKCHANNELS for w in b.split()} | {"ఉ", "ఊఊ", "హ్మ్", "ఓ"}


def is_backchannel(reading: str) -> bool:
    """What a listener says to show they are listening, not to take the turn: at most two words,
    each a known backchannel, or at most 2 characters in all (the ear's reading of a short "ఊ";
    3 would let "ఆపు", stop, through)."""
    words = reading.split()
    return len(words) <= 2 and (all(w in BACKCHANNEL_WORDS for w in words) or len("".join(words)) <= 2)


# --- offline: a whole recording as one conversation ------------------------------------------------

def converse(agent: VoiceAgent, user_pcm: np.ndarray | None, voice: str, now=None, user=None) -> dict:
    """Play `user_pcm` (24 kHz) as the user's side, frame by frame, as the server would; the same
    report as s2s_transformer.converse (agent_pcm, pieces with times, levels, step times).

    user: instead of a recording, a user who listens: user(t, frame) -> the user's frame t (float32
    [frame_size]) given the agent's frame t - 1 (None at t = 0), or None when the conversation is
    over (s2s_eval.py --interactive). The report's user_pcm is what was played."""
    fs = agent.frame_size
    if user is None:
        n = -(-len(user_pcm) // fs)
        recording = np.zeros(n * fs, np.float32)
        recording[:len(user_pcm)] = user_pcm
        user = lambda t, _: recording[t * fs:(t + 1) * fs] if t < n else None  # noqa: E731
    if isinstance(now, str):
        now = dt.datetime.fromisoformat(now)
    s = agent.session(voice, now)
    try:
        played, agent_out = [], []
        pieces = {"user": [], "agent": []}
        answers, requests, agent_db, user_loud, muted, step_ms = [], [], [], [], [], []
        f = None
        for t in itertools.count():
            frame = user(t, f)
            if frame is None:
                break
            t0 = time.perf_counter()
            f = agent.step([s], [frame])[0]
            step_ms.append((time.perf_counter() - t0) * 1000)
            played.append(np.asarray(frame, np.float32))
            agent_out.append(f.pcm)
            t_end = round((t + 1) * agent.frame_ms / 1000, 3)
            if f.user_piece:
                pieces["user"].append({"t": t_end, "piece": f.user_piece})
            if f.agent_piece:
                pieces["agent"].append({"t": t_end, "piece": " " + f.agent_piece})
            if f.answer:
                answers.append({"t": t_end, "text": f.answer})
                requests.append({"t": t_end, "text": f.request})
            agent_db.append(frame_db(f.pcm))
            user_loud.append(bool(s.context.user_vad.loud))
            muted.append("barge_in" in f.events or f.state == INTERRUPTED)
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32)  # noqa: E731
        return {"agent_pcm": cat(agent_out), "user_pcm": cat(played), "n_frames": len(played),
                "frame_ms": agent.frame_ms, "pieces": pieces, "answers": answers, "requests": requests,
                "user_text": " ".join("".join(p["piece"] for p in pieces["user"]).split()),
                "agent_text": " ".join("".join(p["piece"] for p in pieces["agent"]).split()),
                "user_loud": user_loud, "agent_db": agent_db, "muted": muted, "step_ms": step_ms,
                "frame_total_ms": step_ms, "context": s.context}
    finally:
        agent.close(s)


def load(ear=None, brain=None, mouth=None, context: ContextConfig | None = None, lm=None) -> VoiceAgent:
    """The agent from the shipped checkpoints (or the given paths). lm: the ear's language model
    (default the shipped one, where there is one; "none": the brain reads the greedy transcript)."""
    return VoiceAgent(telugu_asr.load(ear), agent_brain.load(brain), agent_mouth.load(mouth), context,
                      ear_lm.load_optional(lm))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="the v2 agent on a recording: what it heard, answered and said")
    p.add_argument("inputs", nargs="+", help="user recordings (any rate; one conversation each)")
    p.add_argument("--voice", default="lakshmi")
    p.add_argument("--now", help="ISO time of the conversation (default now)")
    p.add_argument("--out", help="write the agent's side of the first input here (WAV)")
    p.add_argument("--ear"), p.add_argument("--brain"), p.add_argument("--mouth")
    p.add_argument("--lm", help="the ear's language model (default the shipped one; none: greedy)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from audio_io import load_audio, save_wav

    agent = load(args.ear, args.brain, args.mouth, lm=args.lm)
    for i, path in enumerate(args.inputs):
        try:
            pcm = load_audio(path, agent.codec.sample_rate)
        except Exception as e:  # noqa: BLE001  (a bad file is reported on its line; the others go on)
            print(json.dumps({"path": path, "error": f"{type(e).__name__}: {e}"}, ensure_ascii=False))
            continue
        run = converse(agent, pcm, args.voice, args.now)
        print(json.dumps({"path": path, "heard": run["user_text"], "requests": run["requests"],
                          "answers": run["answers"],
                          "said": run["agent_text"], "step_ms_p50": round(float(np.median(run["step_ms"])), 2)},
                         ensure_ascii=False))
        if args.out and i == 0:
            save_wav(args.out, run["agent_pcm"], agent.codec.sample_rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
