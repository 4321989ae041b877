"""The frame scheduler (frame_scheduler.py) and the server around it: conversations stepped in one
batched tick (ear, S2S, codec, context manager) give what each gives alone, whoever joins and
leaves around them; ticks take the next frame of every conversation that has one; admission by
capacity (the busy error at once, the admitted ones served); /health and /metrics; the ear as the
server's hearing; capacity measured at start-up."""
import dataclasses
import json
import threading
import time

import numpy as np
import pytest
import torch

import frame_scheduler as fsched
import streaming_server_advanced as server_mod
from test_asr import small_ear
from test_server import (FS, VOICES, http_get, pcm16, recv_json, run, server_config,  # noqa: F401 (fixtures)
                         serve, speechlike, tiny_checkpoints, tiny_models)
from websockets.asyncio.client import connect

torch.set_num_threads(1)
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def fixed_clock(monkeypatch):
    """The agent's clock moves on each minute; a test that compares two runs must not straddle one."""
    import datetime as dt
    monkeypatch.setattr(fsched.Conversation, "_minute", staticmethod(lambda: dt.datetime(2026, 12, 7, 10, 30)))


@pytest.fixture(scope="module")
def ear():
    return small_ear(window=12)


def frames_of(pcm):
    return [pcm[i * FS:(i + 1) * FS] for i in range(len(pcm) // FS)]


def assert_same_frames(got, want):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        assert (g.agent_text, g.user_text, g.state, g.barge_in, g.frame) == \
            (w.agent_text, w.user_text, w.state, w.barge_in, w.frame), t
        # PCM16 of the decoder's float output: a batched conv may round a last bit differently
        diff = np.abs(np.frombuffer(g.audio, "<i2").astype(int) - np.frombuffer(w.audio, "<i2").astype(int))
        assert diff.max() <= 1, t


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_conversations_in_one_tick_equal_each_alone(tiny_models, ear, fixed_clock, temperature):
    """The whole per-frame path: ear, S2S, codec decoder and context manager, each conversation a
    row of one ConversationBatch, joining and leaving at different ticks, some ticks without a
    frame from some of them; every output frame (audio, both transcripts, turn state, barge-ins)
    is the one the conversation gets alone. Greedy, and sampled with each one's seed."""
    models = dataclasses.replace(tiny_models, ear=ear)
    cfg = server_config()
    plan = {0: (0, 40, set()), 1: (4, 20, {9, 10}), 2: (8, 30, {15}), 3: (26, 12, set())}  # first tick, frames, skips
    audio = {i: frames_of(speechlike(n * FS / 24000 + 0.01, seed=i)) for i, (_, n, _) in plan.items()}

    def conversation(i):
        return fsched.Conversation(models, cfg, VOICES[i % 4], seed=10 + i, temperature=temperature)

    alone = {}
    for i in plan:
        batch, conv = fsched.ConversationBatch(models), conversation(i)
        batch.add(conv)
        alone[i] = [batch.step([(conv, f)])[0] for f in audio[i]]

    batch, convs, got = fsched.ConversationBatch(models), {}, {i: [] for i in plan}
    for tick in range(60):
        for i, (first, _, _) in plan.items():
            if tick == first:
                convs[i] = conversation(i)
                batch.add(convs[i])
        items = [(c, audio[i][len(got[i])]) for i, c in convs.items() if c.row >= 0 and tick not in plan[i][2]]
        for (c, _), out in zip(items, batch.step(items[::-1])[::-1]):  # any order in, the same order out
            got[next(i for i, x in convs.items() if x is c)].append(out)
        for i, c in convs.items():
            if c.row >= 0 and len(got[i]) == plan[i][1]:
                batch.remove(c)
    assert len(batch) == 0
    for i in plan:
        assert_same_frames(got[i], alone[i])
    assert any(f.user_text for f in alone[0]), "the ear's words reach the page"


def test_a_tick_takes_the_next_frame_of_every_conversation_that_has_one(tiny_models, fixed_clock):
    """Frames that queued while a tick ran (a tick longer than a frame) are not lost or merged:
    each tick takes one frame of every conversation that has one, in order, until all are done."""
    cfg = server_config()
    ticks = []
    worker = fsched.Worker(tiny_models, cfg, 0, ticks.append, capacity=4)
    try:
        a = fsched.Conversation(tiny_models, cfg, VOICES[0], seed=1)
        b = fsched.Conversation(tiny_models, cfg, VOICES[1], seed=2)
        pcm = frames_of(speechlike(0.2))
        with worker.lock:  # everything arrives at once, as after a long tick
            worker.members += [a, b]
            worker.joining += [a, b]
            for i, f in enumerate(pcm):
                a.frames.append((f, time.perf_counter()))
                if i < 2:
                    b.frames.append((f, time.perf_counter()))
            worker.lock.notify()
        deadline = time.monotonic() + 30
        while sum(len(t.outputs) for t in ticks) < len(pcm) + 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        worker.stop()
    assert [t.batch for t in ticks if t.batch] == [2, 2] + [1] * (len(pcm) - 2)
    for conv in (a, b):
        assert [out.frame for t in ticks for c, out, _ in t.outputs if c is conv] == list(range(conv.ctx.frame))
    assert a.ctx.frame == len(pcm) and b.ctx.frame == 2


def test_beyond_capacity_the_next_client_is_busy_at_once_and_the_admitted_are_served(serve):
    st = serve(workers=1, capacity=2, max_sessions=10)
    pcm = speechlike(1.2, seed=3)

    async def scenario():
        a, b = await connect(st.url), await connect(st.url)
        for ws in (a, b):
            await recv_json(ws, "ready")
            await ws.send(json.dumps({"type": "start"}))
            await recv_json(ws, "started")
        health = json.loads(http_get(st.http + "/health")[2])
        assert health["sessions"] == 2 and health["max_sessions"] == 2
        assert health["capacity"]["per_worker"] == 2 and health["capacity"]["source"] == "config"
        t0 = time.monotonic()
        async with connect(st.url) as c:
            first = json.loads(await c.recv())
            await c.wait_closed()
        refused_s = time.monotonic() - t0
        assert first["type"] == "error" and first["code"] == "busy" and c.close_code == 1013
        assert refused_s < 2.0  # at once: nothing waits for a slot
        for ws in (a, b):  # the admitted conversations carry on, every frame answered
            await ws.send(bytes([1]) + pcm16(pcm))
            await ws.send(json.dumps({"type": "stop"}))
        counts = []
        for ws in (a, b):
            stopped = await recv_json(ws, "stopped", timeout=30)
            counts.append(stopped["frames"])
            await ws.close()
        return counts

    assert run(scenario()) == [len(pcm) // FS] * 2
    assert st.server.metrics.errors["busy"] == 1


def test_a_connection_that_starts_when_the_workers_are_full_is_busy(serve):
    """Admission counts conversations: a connection made while there was room, whose start comes
    after others filled the workers, gets the busy error (1013) instead of a conversation."""
    st = serve(workers=1, capacity=1, max_sessions=10)

    async def scenario():
        a, b = await connect(st.url), await connect(st.url)
        await recv_json(a, "ready")
        await recv_json(b, "ready")
        await a.send(json.dumps({"type": "start"}))
        await recv_json(a, "started")
        await b.send(json.dumps({"type": "start"}))
        first = await recv_json(b, "error")
        await b.wait_closed()
        await a.close()
        return first, b.close_code

    first, code = run(scenario())
    assert first["code"] == "busy" and code == 1013


def test_health_and_metrics_report_sessions_capacity_and_ticks(serve):
    st = serve(workers=2, capacity=3)

    async def two():
        async def one(seed):
            async with connect(st.url) as ws:
                await recv_json(ws, "ready")
                await ws.send(json.dumps({"type": "start", "seed": seed}))
                await ws.send(bytes([1]) + pcm16(speechlike(0.8, seed=seed)))
                await ws.send(json.dumps({"type": "stop"}))
                return await recv_json(ws, "stopped", timeout=30)
        import asyncio
        return await asyncio.gather(one(1), one(2))

    stopped = run(two())
    assert [s["frames"] for s in stopped] == [20, 20]
    health = json.loads(http_get(st.http + "/health")[2])
    assert health["capacity"]["sessions"] == 6 and health["capacity"]["per_worker"] == 3
    assert health["capacity"]["batching"] is True and health["workers"] == 2
    assert health["tick_ms"]["p50"] > 0 and len(health["worker_stats"]) == 2
    for w in health["worker_stats"]:
        assert {"worker", "conversations", "capacity", "tick_ms", "batch_mean"} <= set(w)
    assert sum(w["batch_mean"] > 0 for w in health["worker_stats"]) == 2  # one conversation on each worker
    metrics = http_get(st.http + "/metrics")[2].decode()
    for line in ("s2s_capacity 6", 's2s_worker_conversations{worker="0"}', "s2s_tick_seconds_count",
                 "s2s_tick_batch_bucket", 's2s_worker_tick_p50_seconds{worker="1"}', "s2s_frames_total 40"):
        assert line in metrics, line


def test_the_ear_is_the_servers_hearing(serve, tiny_models, ear, fixed_clock):
    """With an ear, the page's user transcript is the ear's, a word at a time, and what it sends
    adds up to what the ear alone recognises in the same audio; the turn history keeps it."""
    models = dataclasses.replace(tiny_models, ear=ear)
    st = serve(models=models, workers=1, send_queue_frames=200)  # the client sends faster than real time
    pcm = speechlike(3.0, seed=5, level=0.2)

    async def session():
        texts = []
        async with connect(st.url) as ws:
            await recv_json(ws, "ready")
            await ws.send(json.dumps({"type": "start"}))
            for i in range(0, len(pcm), 12000):  # half a second a message
                await ws.send(bytes([1]) + pcm16(pcm[i:i + 12000]))
            await ws.send(json.dumps({"type": "stop"}))
            while True:
                m = await ws.recv()
                if isinstance(m, bytes) and m[0] == 3:
                    texts.append(m[1:].decode("utf-8"))
                if isinstance(m, str) and json.loads(m)["type"] == "stopped":
                    return texts, json.loads(m)

    texts, stopped = run(session())
    state, heard = ear.init_state(1), ""
    quantized = np.frombuffer(pcm16(pcm), "<i2").astype(np.float32) / 32768.0  # what the server hears
    for f in frames_of(quantized):
        pieces, _, _, state = ear.step(torch.from_numpy(f)[None], state)
        heard += pieces[0]
    sent = "".join(texts)
    assert heard and heard.startswith(sent) and " " not in heard[len(sent):].strip()  # a word may still wait
    assert all(" " not in t.strip() for t in texts)  # one word a piece
    said = "".join(t["text"] for t in stopped["transcript"] if t["side"] == "user")
    assert said.replace(" ", "") == heard.replace(" ", "")  # the turn history holds what the ear heard


def test_capacity_is_measured_at_start_up(tiny_models):
    cfg = server_config(capacity=0, max_sessions=4)
    report = fsched.measure_capacity(tiny_models, cfg, steps=3)
    assert 1 <= report["capacity"] <= 4 and report["budget_ms"] == pytest.approx(0.6 * 40)
    assert set(report["tick_ms"]) <= set(fsched.CAPACITY_BATCHES) and report["tick_ms"][1] > 0
    server = server_mod.Server(tiny_models, cfg, workers=1)
    try:
        assert server.capacity_report["source"] == "measured at start-up" and server.session_limit >= 1
    finally:
        for w in server.worker_pool:
            w.stop()


def test_the_ears_speech_probability_is_the_users_voice_activity(tiny_models, fixed_clock):
    """A silent room the ear calls speech is the user speaking; a loud tone it calls not speech is
    not (context.ear_vad_threshold): the ear, not the energy, decides."""
    silent = np.zeros(FS * 15, np.float32)
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(FS * 15) / 24000)).astype(np.float32)
    for bias, pcm, speaking in ((20.0, silent, True), (-20.0, tone, False)):
        ear = small_ear()
        with torch.no_grad():
            ear.speech_head.bias.fill_(bias)
        models = dataclasses.replace(tiny_models, ear=ear)
        batch, conv = fsched.ConversationBatch(models), fsched.Conversation(models, server_config(), VOICES[0])
        batch.add(conv)
        for f in frames_of(pcm):
            batch.step([(conv, f)])
        assert conv.ctx.user_vad.active is speaking


def test_an_s2s_model_that_hears_through_the_ear_gets_the_ticks_ear_features(fixed_clock):
    """s2s.user_input "ear": the tick runs the ear once and hands its features to the S2S step, which
    then steps exactly as a lone generator that runs the ear on the pcm itself."""
    import s2s_transformer
    import telugu_codec_fixed
    from test_server import tiny_config

    ear = small_ear(window=12)
    cfg = tiny_config()
    cfg.s2s.user_input, cfg.s2s.ear_dim = "ear", ear.d_model
    torch.manual_seed(4)
    codec = telugu_codec_fixed.Codec(cfg.codec).eval()
    model = s2s_transformer.S2SModel(cfg).eval()
    models = server_mod.Models(codec, model, None, {"v": {"gender": "", "embedding": None}}, ear=ear)
    pcm = frames_of(speechlike(0.6, seed=7))
    batch = fsched.ConversationBatch(models)
    convs = [fsched.Conversation(models, server_config(), "v", seed=s, temperature=0.8) for s in (1, 2)]
    for c in convs:
        batch.add(c)
    lone = [model.streaming(codec=codec, ear=ear, seed=s, temperature=0.8, now=convs[0].gen.now) for s in (1, 2)]
    for f in pcm:
        batch.step([(c, f) for c in convs])
        for c, g in zip(convs, lone):
            g.step(torch.from_numpy(f))
            assert c.gen.prev_agent_text == g.prev_agent_text and torch.equal(c.gen.prev_codes, g.prev_codes)
    with pytest.raises(ValueError, match="hears through the ear"):
        server_mod.load_models(cfg, random_weights=True, use_asr=False)
