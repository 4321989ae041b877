"""Many conversations on one worker: one batched step per tick for all of them.

A worker is one model thread. Its conversations are rows of one batch: row r of the S2S model's KV
caches and stream state (s2s_transformer.GeneratorBatch), of the codec decoder's state and of the
ear's state (telugu_asr.EarState) is conversation r. On every tick the worker takes the next frame
of each conversation that has one, and runs the ear, the S2S step and the codec decoder once over
that batch (continuous batching, as vLLM and Moshi's batched server do); then each conversation's
ContextManager (turn state, barge-in, endpointing) looks at its own frame, and the outputs go back
to the sessions in the event loop.

    tick:  frames of the conversations that have one ─▶ ear.step ─▶ GeneratorBatch.step ─▶
           codec.decode_step ─▶ per conversation: ContextManager.update, hooks, PCM16 ─▶ sessions

Ticks are driven by the frames, not by a clock: a tick starts as soon as a frame waits (after at
most server.batch_wait_ms for the other conversations' frames of the same period, so that they
share a step) and the next one right after it. A tick that takes longer than a frame does not
drift: meanwhile each conversation's frames queue, and the next tick takes the oldest frame of
every conversation that has one, so a worker that keeps up on average catches up.

Conversations join and leave between ticks (the last row moves into the hole, one row copied).
Each keeps its own position, sampling settings and random generator, so its output is the one it
gets alone (tests/test_s2s_model.py, tests/test_frame_scheduler.py).

Capacity: how many conversations a worker holds in real time. `measure_capacity` times the tick at
growing batch sizes with every KV cache full (the steady state of a long conversation) and keeps
the largest batch whose step fits `server.realtime_load` of a frame; or server.capacity sets it.
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from audio_io import pcm16_bytes
from config import Config

logger = logging.getLogger("s2s_server")
STATS_EVERY_S = 1.0
WORD_FLUSH_FRAMES = 8  # the ear heard nothing new for this long (320 ms): its pending word is complete
MAX_WORD_CHARS = 32  # longer than any Telugu word: a recogniser that emits no spaces still reaches the page
CAPACITY_BATCHES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass
class FrameOut:
    audio: bytes  # PCM16 LE, exactly frame_size samples
    agent_text: str
    user_text: str
    state: str | None  # the new turn state when it changed this frame
    barge_in: bool
    compute_ms: float  # the tick this frame was computed in (wall time)
    stats: dict | None  # the conversation's figures, every STATS_EVERY_S
    frame: int  # this frame's index in the conversation
    request: str = ""  # the v2 agent: the request it started answering on this frame, as it read it


class UserWords:
    """The ear's characters -> the page's user transcript, a word at a time: a word goes out when
    the ear hears the space after it, when it has heard nothing new for WORD_FLUSH_FRAMES (the
    last word of a turn has no space after it), or at MAX_WORD_CHARS. What goes out concatenates
    to exactly what the ear recognised, so a word cut in two by a long pause still reads as one."""

    def __init__(self):
        self.pending, self.quiet = "", 0

    def feed(self, piece: str) -> str:
        if not piece:
            self.quiet += 1
            if self.pending and self.quiet >= WORD_FLUSH_FRAMES:
                out, self.pending = self.pending, ""
                return out
            return ""
        self.quiet = 0
        self.pending += piece
        cut = self.pending.rfind(" ")
        if cut <= 0:
            if len(self.pending) < MAX_WORD_CHARS:
                return ""
            cut = len(self.pending)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out


class Conversation:
    """One conversation's state outside the batched tensors: its S2S generator (a row of the
    worker's GeneratorBatch once it joins), its ContextManager and its user transcript. The frames
    the client sent and the worker has not stepped yet wait in `frames`."""

    def __init__(self, models, cfg: Config, voice: str, temperature=None, top_k=None, seed=None,
                 text_temperature=None, text_top_k=None):
        import torch

        from context_manager import ContextManager

        self.models, self.cfg, self.voice = models, cfg, voice
        self.gen = self.v2 = None  # the S2S model's generator, or (the v2 agent) its voice_agent.Session
        if getattr(models, "brain", None) is None:
            with torch.inference_mode():
                self.gen = models.s2s.streaming(voice=models.voices[voice]["embedding"], temperature=temperature,
                                                top_k=top_k, seed=seed, codec=models.codec, tokenizer=models.tokenizer,
                                                text_temperature=text_temperature, text_top_k=text_top_k,
                                                now=self._minute())
        self.ctx = ContextManager(cfg.context, frame_ms=round(models.frame_ms))
        self.words = UserWords() if getattr(models, "ear", None) is not None else None
        self.silence = np.zeros(models.frame_size, dtype=np.float32)
        self.stats_every = max(1, round(STATS_EVERY_S * 1000 / models.frame_ms))
        self.frames: collections.deque = collections.deque()  # (pcm, t_in), guarded by the worker's lock
        self.leaving = None  # None, "stop" (after the queued frames) or "drop" (now)
        self.session = None  # the connection it answers to (the server's Session)
        self.batch: ConversationBatch | None = None  # its worker's batch, once joined
        self.row = -1  # its row in that batch

    @staticmethod
    def _minute():
        return dt.datetime.now().replace(second=0, microsecond=0)

    def finish(self, pcm: np.ndarray, out, agent: np.ndarray, heard: str | None, speech_prob: float | None,
               compute_ms: float, cpu_ms: float) -> FrameOut:
        """The per-conversation end of a tick: the context manager sees both sides, a barge-in or an
        endpoint becomes a hook on the generator for its next step, the frame becomes PCM16."""
        user_text = out.user_text_piece if heard is None else heard
        res = self.ctx.update(pcm, agent, user_text, out.agent_text_piece,
                              {"compute_ms": compute_ms, "cpu_ms": cpu_ms}, out.agent_word_prob, speech_prob)
        barge_in = "barge_in" in res.events
        if barge_in:
            # The model hears itself go quiet (forced PAD text and silence codes) and yields.
            self.gen.silence(self.cfg.context.yield_frames)
        elif res.prompt_agent:
            self.gen.prompt_answer()  # the user finished and waits: the agent starts its answer
        page_text = user_text if self.words is None else self.words.feed(heard)
        audio = self.silence if res.mute_agent else agent
        stats = self.stats() if self.ctx.frame % self.stats_every == 0 else None
        return FrameOut(pcm16_bytes(audio), "" if res.mute_agent else out.agent_text_piece, page_text,
                        res.state if "state" in res.events else None, barge_in, compute_ms, stats,
                        self.ctx.frame - 1)

    def finish_agent(self, pcm: np.ndarray, frame, compute_ms: float, cpu_ms: float) -> FrameOut:
        """The v2 agent's frame (voice_agent.AgentFrame; its ContextManager, self.ctx, has seen both
        sides already) -> what the session sends."""
        self.ctx.timings["compute_ms"].append(compute_ms)
        self.ctx.timings["cpu_ms"].append(cpu_ms)
        page_text = self.words.feed(frame.user_piece) if self.words is not None else frame.user_piece
        if frame.request and self.words is not None:  # the request's last word goes out before its reading
            page_text, self.words.pending = page_text + self.words.pending, ""
        stats = self.stats() if self.ctx.frame % self.stats_every == 0 else None
        return FrameOut(pcm16_bytes(frame.pcm), " " + frame.agent_piece if frame.agent_piece else "", page_text,
                        frame.state if "state" in frame.events else None, "barge_in" in frame.events, compute_ms,
                        stats, self.ctx.frame - 1, frame.request)

    def stats(self) -> dict:
        s = self.ctx.stats()
        return {"frames": s["frames"], "state": s["state"], "barge_ins": s["barge_ins"],
                "compute_ms": {k: round(v, 2) for k, v in s.get("compute_ms", {}).items()},
                "cpu_ms": {k: round(v, 2) for k, v in s.get("cpu_ms", {}).items()},
                "response_gap_ms": s["response_gap_ms"]}

    def summary(self) -> dict:
        return {"frames": self.ctx.frame, "transcript": self.ctx.transcript(), "stats": self.stats()}


class ConversationBatch:
    """The rows of one worker: conversation r is row r of the S2S GeneratorBatch, of the codec
    decoder's state and of the ear's state. Not thread-safe: its worker owns it. Models whose
    generators have no GeneratorBatch (the tests' scripted stand-ins) are stepped one by one."""

    def __init__(self, models):
        import torch

        import s2s_transformer

        self.torch, self.models = torch, models
        self.convs: list[Conversation] = []
        self.s2s = s2s_transformer.GeneratorBatch(models.s2s, models.codec, models.device) \
            if isinstance(models.s2s, s2s_transformer.S2SModel) else None
        with torch.inference_mode():
            self.decoder_state = models.codec.init_state(0, models.device)
            self.ear = getattr(models, "ear", None)
            self.ear_state = self.ear.init_state(0, models.device) if self.ear is not None else None

    def __len__(self) -> int:
        return len(self.convs)

    def add(self, conv: Conversation) -> None:
        with self.torch.inference_mode():
            if self.s2s is not None:
                self.s2s.add(conv.gen)
            fresh = self.models.codec.init_state(1, self.models.device)
            self.decoder_state = {k: self.torch.cat([v, fresh[k]]) for k, v in self.decoder_state.items()}
            if self.ear is not None:
                self.ear_state = self.ear_state.join(self.ear.init_state(1, self.models.device))
        conv.row = len(self.convs)
        self.convs.append(conv)

    def remove(self, conv: Conversation) -> None:
        """The last row moves into the leaving conversation's place, in every store alike."""
        r, last = conv.row, len(self.convs) - 1
        with self.torch.inference_mode():
            if self.s2s is not None:
                self.s2s.remove(conv.gen)
            for v in self.decoder_state.values():
                v[r] = v[last]
            self.decoder_state = {k: v[:last] for k, v in self.decoder_state.items()}
            if self.ear is not None:
                self.ear_state = self.ear_state.leave(r)
        self.convs[r] = self.convs[last]
        self.convs[r].row = r
        self.convs.pop()
        conv.row = -1

    def step(self, items: list[tuple[Conversation, np.ndarray]]) -> list[FrameOut]:
        """One frame for each of `items`' conversations (members of this batch, each once); the
        outputs in the same order."""
        if not items:
            return []
        torch = self.torch
        order = sorted(range(len(items)), key=lambda i: items[i][0].row)  # the stores' row order
        convs = [items[i][0] for i in order]
        pcm = np.stack([items[i][1] for i in order])
        rows = [c.row for c in convs]
        all_rows = len(rows) == len(self.convs)
        t0, cpu0 = time.perf_counter(), time.thread_time()
        with torch.inference_mode():
            index = torch.tensor(rows, device=self.models.device)
            frames = torch.from_numpy(pcm).to(self.models.device)
            heard, speech, user = [None] * len(convs), [None] * len(convs), list(frames)
            if self.ear is not None:
                pieces, feats, prob, self.ear_state = self.ear.step(frames, self.ear_state,
                                                                    rows=None if all_rows else index)
                heard, speech = pieces, prob[:, -1].tolist()
                if self.s2s is not None and self.models.s2s.cfg.user_input == "ear":
                    user = list(feats[:, -1])  # the S2S model hears through the ear: run it once
            minute = Conversation._minute()
            for c in convs:
                if c.gen.now != minute:  # the agent's clock (time questions) moves on each minute
                    c.gen.set_now(minute)
            if self.s2s is not None:
                outs = self.s2s.step([c.gen for c in convs], user)
            else:
                outs = [c.gen.step(f) for c, f in zip(convs, user)]
            agent = self._decode(outs, index, all_rows)
        compute_ms = (time.perf_counter() - t0) * 1000
        cpu_ms = (time.thread_time() - cpu0) * 1000 / len(convs)  # each conversation's share of the tick
        results = [c.finish(p, out, a, h, sp, compute_ms, cpu_ms)
                   for c, p, out, a, h, sp in zip(convs, pcm, outs, agent, heard, speech)]
        back = [None] * len(items)
        for i, out in zip(order, results):
            back[i] = out
        return back

    def _decode(self, outs, index, all_rows: bool) -> list[np.ndarray]:
        """The agent's audio of every row that has codes; silence during the acoustic delay. Decode
        even while muted: the decoder's state must follow the codes the model emits."""
        from s2s_transformer import put_rows, rows_of  # the rows of a stream state, as the encoder's

        audio = [np.zeros(self.models.frame_size, np.float32) for _ in outs]
        have = [i for i, o in enumerate(outs) if o.agent_codes is not None]
        if not have:
            return audio
        every = all_rows and len(have) == len(outs)
        index = index[have] if len(have) != len(outs) else index
        codes = self.torch.stack([outs[i].agent_codes.reshape(-1) for i in have])[:, :, None]
        state = rows_of(self.decoder_state, index, every)
        y, state = self.models.codec.decode_step(codes, state)
        self.decoder_state = put_rows(self.decoder_state, index, state, every)
        y = y.reshape(len(have), -1).float().cpu().numpy()
        for j, i in enumerate(have):
            audio[i] = y[j]
        return audio


class AgentBatch:
    """The rows of one worker when the agent is v2 (voice_agent.VoiceAgent: the ear, the brain, the
    mouth and the codec): the VoiceAgent owns every row's state, conversation r is its session r."""
    s2s = None  # no S2S generator batch (measure_capacity asks)

    def __init__(self, models, cfg: Config):
        import voice_agent

        self.models = models
        self.agent = voice_agent.VoiceAgent(models.ear, models.brain, models.mouth, cfg.context, getattr(models, "lm", None))
        self.convs: list[Conversation] = []

    def __len__(self) -> int:
        return len(self.convs)

    def add(self, conv: Conversation) -> None:
        conv.v2 = self.agent.session(conv.voice, None, conv.ctx)  # None: the clock tools read the wall clock
        conv.row = conv.v2.row
        self.convs.append(conv)

    def remove(self, conv: Conversation) -> None:
        r, last = conv.row, len(self.convs) - 1
        self.agent.close(conv.v2)
        self.convs[r] = self.convs[last]
        self.convs[r].row = r
        self.convs.pop()
        conv.row = -1

    def step(self, items: list[tuple[Conversation, np.ndarray]]) -> list[FrameOut]:
        if not items:
            return []
        t0, cpu0 = time.perf_counter(), time.thread_time()
        frames = self.agent.step([c.v2 for c, _ in items], [pcm for _, pcm in items])
        compute_ms = (time.perf_counter() - t0) * 1000
        cpu_ms = (time.thread_time() - cpu0) * 1000 / len(items)
        return [c.finish_agent(pcm, f, compute_ms, cpu_ms) for (c, pcm), f in zip(items, frames)]


def new_batch(models, cfg: Config):
    """A worker's batch: the v2 agent's when the models have a brain, else the S2S model's."""
    return AgentBatch(models, cfg) if getattr(models, "brain", None) is not None else ConversationBatch(models)


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc). Conversations that come and go free
    tensors of every size across several threads' malloc arenas; without this an hour-long server's
    RSS creeps up on memory it no longer uses."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Worker:
    """One model thread and its conversations. Sessions hand it frames from the event loop
    (`submit`); it steps them in ticks and hands each tick's outputs back through `deliver(tick)`,
    called on its own thread (the server moves it into the event loop). With batching off
    (server.batching false: the baseline) every conversation is its own batch of one, stepped
    one after another in the tick, as the server did before it batched."""

    def __init__(self, models, cfg: Config, index: int, deliver, capacity: int):
        self.models, self.cfg, self.index, self.deliver = models, cfg, index, deliver
        self.capacity = capacity
        self.shared: ConversationBatch | None = None  # batching: every conversation's rows
        self.members: list[Conversation] = []  # joined or joining, as the event loop sees them
        self.joining: list[Conversation] = []
        self.lock = threading.Condition()
        self.stopping = False
        self.tick_ms: collections.deque = collections.deque(maxlen=500)
        self.batch_sizes: collections.deque = collections.deque(maxlen=500)
        self.thread = threading.Thread(target=self._run, name=f"s2s-worker-{index}", daemon=True)
        self.thread.start()

    # --- from the event loop ----------------------------------------------------------------------
    def join(self, conv: Conversation) -> None:
        with self.lock:
            self.members.append(conv)
            self.joining.append(conv)
            self.lock.notify()

    def submit(self, conv: Conversation, pcm: np.ndarray, t_in: float) -> None:
        with self.lock:
            conv.frames.append((pcm, t_in))
            self.lock.notify()

    def leave(self, conv: Conversation, drop: bool) -> None:
        """stop: after its queued frames, then `deliver` reports it gone with its summary; drop:
        at the next tick, its queued frames unanswered (the client is gone)."""
        with self.lock:
            conv.leaving = "drop" if drop else "stop"
            if drop:
                conv.frames.clear()
            self.lock.notify()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify()
        self.thread.join(10)

    @property
    def load(self) -> int:
        return len(self.members)

    # --- the worker thread --------------------------------------------------------------------------
    def _run(self) -> None:
        import torch

        torch.set_num_threads(1)  # one core per worker: parallelism comes from the workers
        if self.cfg.server.batching:
            self.shared = new_batch(self.models, self.cfg)
        wait_s = self.cfg.server.batch_wait_ms / 1000 if self.cfg.server.batching else 0.0
        while True:
            with self.lock:
                while not self.stopping and not self._work_waiting():
                    self.lock.wait()
                if self.stopping:
                    return
                joined, left = self._membership()
                items = self._gather(wait_s)
            self._tick(items, joined, left)

    def _work_waiting(self) -> bool:
        return bool(self.joining) or any(c.frames or c.leaving for c in self.members)

    def _membership(self) -> tuple[list, list]:
        """Joins and leaves due before this tick (the lock is held)."""
        joined, self.joining = self.joining, []
        left = [c for c in self.members if c.leaving == "drop" or (c.leaving == "stop" and not c.frames)]
        for c in left:
            self.members.remove(c)
        return joined, left

    def _gather(self, wait_s: float) -> list:
        """The oldest frame of every conversation that has one (the lock is held). When some have
        none yet, wait up to wait_s (from the oldest waiting frame) for theirs to arrive, so that
        one step serves them all instead of each costing a step of its own."""
        ready = [c for c in self.members if c.frames]
        if ready and len(ready) < len(self.members) and wait_s > 0:
            deadline = min(c.frames[0][1] for c in ready) + wait_s
            while len(ready) < len(self.members) and not self.stopping and not self.joining:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self.lock.wait(remaining)
                ready = [c for c in self.members if c.frames]
        return [(c, *c.frames.popleft()) for c in ready]

    def _tick(self, items, joined, left) -> None:
        gone, failed = [], []
        t0 = time.perf_counter()
        try:
            for c in joined:  # joins first: a conversation may start and stop between two ticks
                if c.leaving != "drop":
                    batch = self.shared if self.shared is not None else new_batch(self.models, self.cfg)
                    batch.add(c)
                    c.batch = batch
            for c in left:
                if c.batch is not None:
                    c.batch.remove(c)
                    c.batch = None
                gone.append((c, c.summary() if c.leaving == "stop" else None))
            if left:
                _trim_heap()
            groups: dict[int, list] = {}
            for item in items:  # one group with batching, one per conversation without
                groups.setdefault(id(item[0].batch), []).append(item)
            for group in groups.values():
                outs = group[0][0].batch.step([(c, pcm) for c, pcm, _ in group])
                # Each group's frames go out as soon as they are computed (without batching, the
                # first conversation of a tick does not wait for the others).
                outputs = [(c, out, t_in) for (c, _, t_in), out in zip(group, outs)]
                self.deliver(Tick(self.index, outputs, [], [], 0.0, 0))
        except Exception as e:  # a model failure ends the conversations of this tick, not the worker
            logger.error("worker_error", exc_info=True, extra={"fields": {"worker": self.index, "error": repr(e)}})
            failed = [c for c, _, _ in items] or [c for c in joined]
            with self.lock:
                for c in failed:
                    c.leaving = "drop"
        tick_ms = (time.perf_counter() - t0) * 1000
        if items and not failed:
            self.tick_ms.append(tick_ms)
            self.batch_sizes.append(len(items))
        self.deliver(Tick(self.index, [], gone, failed, tick_ms, 0 if failed else len(items)))


@dataclass
class Tick:
    worker: int
    outputs: list  # (conversation, FrameOut, t_in)
    gone: list  # (conversation, summary or None): left the batch this tick
    failed: list  # conversations whose step raised
    tick_ms: float  # the whole tick (in its last report)
    batch: int  # conversations stepped (in its last report; 0 in the reports of outputs)


# --- capacity ----------------------------------------------------------------------------------------

def measure_capacity(models, cfg: Config, steps: int = 12, log=None) -> dict:
    """How many conversations one worker steps in real time: the tick at growing batch sizes with
    every KV cache full (an hour-long conversation's steady state, the slowest), on this thread
    (call it with one torch thread, as a worker runs). The capacity is the largest batch whose
    median tick stays under server.realtime_load of a frame: the rest of the frame is for the
    event loop, the network and jitter. With batching off the tick steps them one by one.
    Returns {capacity, tick_ms: {batch: ms}, budget_ms}."""
    import torch

    budget = cfg.server.realtime_load * models.frame_ms
    voice = next(iter(models.voices))
    rng = np.random.default_rng(0)
    shared = new_batch(models, cfg) if cfg.server.batching else None
    convs, tick_ms, capacity = [], {}, 0
    frame = lambda: (0.05 * rng.standard_normal(models.frame_size)).astype(np.float32)  # noqa: E731
    for size in CAPACITY_BATCHES:
        if size > max(1, cfg.server.max_sessions):
            break
        while len(convs) < size:
            conv = Conversation(models, cfg, voice, seed=len(convs))
            conv.batch = shared if shared is not None else new_batch(models, cfg)
            conv.batch.add(conv)
            convs.append(conv)
        for batch in {id(c.batch): c.batch for c in convs}.values():
            if batch.s2s is not None:  # a full window: each step attends to context_frames keys
                with torch.inference_mode():
                    for c in batch.s2s.caches:
                        c.k.normal_(), c.v.normal_()
            for conv in batch.convs:
                if batch.s2s is not None:
                    conv.gen.step_index = max(conv.gen.step_index, models.s2s.cfg.context_frames)
        times = []
        for i in range(steps + 2):
            t0 = time.perf_counter()
            if shared is not None:
                shared.step([(c, frame()) for c in convs])
            else:
                for c in convs:
                    c.batch.step([(c, frame())])
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1000)
        tick_ms[size] = round(statistics.median(times), 2)
        if log is not None:
            log(size, tick_ms[size])
        if tick_ms[size] > budget:
            break
        capacity = size
    return {"capacity": max(1, capacity), "tick_ms": tick_ms, "budget_ms": round(budget, 1)}
