"""The server with the v2 agent (voice_agent.py: ear, brain, mouth) behind it: the same protocol,
one audio frame out per frame in, conversations on one worker kept apart, /health says which agent."""
import asyncio
import json

import numpy as np
import pytest
import torch

import agent_brain as ab
import agent_mouth
import brain_data as bd
import streaming_server_advanced as server_mod
import telugu_asr as ta
from config import Config, load_config
from telugu_tokenizer import Tokenizer
from test_server import ServerThread, connect, http_get, pcm16, run, server_config, speechlike, wait_until

FS = 960


@pytest.fixture(scope="module")
def v2_models():
    torch.manual_seed(0)
    cfg = Config()
    cfg.asr.d_model, cfg.asr.n_layers, cfg.asr.n_heads, cfg.asr.context_frames = 32, 1, 2, 16
    ear = ta.Ear(cfg).eval()
    with torch.no_grad():
        ear.ctc_head.bias.normal_(0, 3.0)  # an untrained ear that still writes something
        ear.speech_head.bias.fill_(2.0)  # and hears speech, so turns end and the brain answers
    brain = ab.Brain(cfg.brain.__class__(d_model=32, n_layers=1, n_heads=2, context_tokens=128, max_answer_tokens=10),
                     bd.BrainVocab(Tokenizer.load())).eval()
    mouth = agent_mouth.build(load_config("tiny", ["mouth.d_model=32", "mouth.n_layers=1",
                                                   "mouth.frame_hidden=32"])).eval()
    voices, _ = server_mod.load_voices(None, None)
    return server_mod.Models(mouth.codec, None, None, voices, {"agent": "v2"}, ear, brain, mouth)


def test_v2_frames_in_equal_frames_out_and_sessions_are_apart(v2_models):
    pcm = speechlike(2.4, seed=2)

    async def one(url, voice):
        out = []
        async with connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(json.dumps({"type": "start", "voice": voice}))
            for i in range(0, len(pcm), 480):
                await ws.send(bytes([1]) + pcm16(pcm[i:i + 480]))
                await asyncio.sleep(0.002)
            await ws.send(json.dumps({"type": "stop"}))
            async with asyncio.timeout(60):
                while True:
                    m = await ws.recv()
                    out.append(m)
                    if isinstance(m, str) and json.loads(m)["type"] == "stopped":
                        return out

    with ServerThread(v2_models, server_config(), workers=1) as st:
        async def both():
            return await asyncio.gather(one(st.url, "ravi"), one(st.url, "lakshmi"))

        results = run(both(), timeout=120)
        wait_until(lambda: not st.server.sessions)
        health = json.loads(http_get(st.http + "/health")[2])
    for msgs in results:
        audio = [m for m in msgs if isinstance(m, bytes) and m[0] == 1]
        assert len(audio) == len(pcm) // FS and all(len(m) == 1 + 2 * FS for m in audio)
        control = [json.loads(m) for m in msgs if isinstance(m, str)]
        assert control[0]["type"] == "started" and control[-1]["type"] == "stopped"
        assert control[-1]["frames"] == len(audio)
        for m in msgs:
            if isinstance(m, bytes) and m[0] in (2, 3):
                m[1:].decode("utf-8")  # well-formed text pieces
    assert health["models"]["agent"] == "v2" and health["sessions"] == 0
