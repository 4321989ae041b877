"""benchmark_latency.py and system_test.py as a user runs them (subprocesses), with tiny random
models: the benchmark's quick run writes every documented figure, its plot and README section;
the system test prints its table, fails with a fix per failure when checkpoints are missing,
and runs every check (each passing or explaining its failure) on a tiny exported set."""
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import system_test  # noqa: E402
from checkpoint_io import export_safetensors  # noqa: E402
from config import Config  # noqa: E402

pytestmark = pytest.mark.timeout(120)
AGENT_VOICES = ["lakshmi", "priya", "ravi", "kiran"]


def run(args, timeout=110):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TELUGU_S2S_PEERS": ""}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


# --- benchmark_latency.py ------------------------------------------------------------------------

# The JSON layout the module docstring documents.
TOP_KEYS = {"machine", "models", "components", "end_to_end", "peers", "budget", "notes", "command", "elapsed_s"}
MACHINE_KEYS = {"cpu_count", "loadavg_start", "loadavg_end", "torch", "python", "platform", "cuda"}
MODEL_KEYS = {"source", "codec", "s2s", "voice_bank", "config", "codec_params", "s2s_params", "frame_ms",
              "acoustic_delay", "codec_delay_ms", "user_input", "pipeline_has_encoder"}
PART_KEYS = {"p50", "p95", "p99", "mean", "n", "cpu_p50", "rtf_p50", "rtf_p95", "rtf_p99"}
RUN_KEYS = {"clients", "ok", "realtime", "per_frame_delay_ms", "rtt_ms", "response_gap_ms", "server_response_gap_ms",
            "rtf", "server_compute_ms", "server_e2e_ms", "drift_ms", "agent_over_user", "errors"}
PEER_KEYS = {"available", "audio_s", "ours", "mimi", "encodec", "ratios"}
BUDGET_KEYS = {"rows", "algorithmic_ms", "total_p50_ms", "total_p95_ms", "target_ms", "moshi_theoretical_ms",
               "moshi_practical_ms"}


def test_quick_benchmark_writes_every_documented_key(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n## Latency\n\nold table\n\n## Configuration\n\nkept\n", encoding="utf-8")
    out, png = tmp_path / "bench.json", tmp_path / "latency.png"
    # One thread only: with two, a loaded 2-core machine spends ten seconds on thread contention.
    r = run(["benchmark_latency.py", "--quick", "--tiny", "--threads", "1", "--frames", "8", "--max_clients", "2",
             "--seconds", "2",
             "--json", str(out), "--plot", str(png), "--readme", str(readme)])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert TOP_KEYS <= res.keys()
    assert MACHINE_KEYS <= res["machine"].keys() and len(res["machine"]["loadavg_start"]) == 3
    assert MODEL_KEYS <= res["models"].keys() and res["models"]["source"] == "random"
    assert list(res["components"]["cpu"]) == ["threads_1"]
    for threads in ("threads_1",):
        for part in ("codec_encode", "codec_decode", "s2s_step", "pipeline"):
            stats = res["components"]["cpu"][threads][part]
            assert PART_KEYS <= stats.keys(), (threads, part)
            assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"]
    [e2e] = res["end_to_end"].values()
    assert e2e["runs"] and e2e["max_realtime_clients"] >= 0
    for r_ in e2e["runs"]:
        assert RUN_KEYS <= r_.keys()
    first = e2e["runs"][0]
    assert first["clients"] == 1 and first["ok"] == 1
    d = first["per_frame_delay_ms"]
    # The dependent output frame comes one acoustic delay (40 ms of real-time input) later.
    assert d["n"] > 20 and d["p50"] >= res["models"]["acoustic_delay"] * res["models"]["frame_ms"] * 0.9
    assert {"p50", "p95", "p99"} <= first["rtf"].keys()
    assert PEER_KEYS <= res["peers"].keys()
    b = res["budget"]
    assert BUDGET_KEYS <= b.keys()
    assert b["algorithmic_ms"] == pytest.approx(40 + 40 + 10)  # frame + acoustic delay + iSTFT hop
    assert b["target_ms"] == 400 and b["moshi_theoretical_ms"] == 160 and b["moshi_practical_ms"] == 200
    assert b["total_p50_ms"] >= b["algorithmic_ms"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| pipeline |" in r.stdout and "latency budget" in r.stdout and "load average" in r.stdout
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text and "## Configuration\n\nkept" in text and "| pipeline |" in text


def test_thread_settings_and_readme_command():
    import benchmark_latency as bl

    assert bl.thread_counts("1,all") == ([1, os.cpu_count()] if os.cpu_count() > 1 else [1])
    assert bl.thread_counts("2,1,2") == [2, 1]
    assert bl.shown_command("python benchmark_latency.py --json /tmp/a.json --plot p.png --readme R.md --quick") == \
        "python benchmark_latency.py --plot p.png --quick"


def test_capacity_sweep_batched_and_not_then_admission(tmp_path):
    """--capacity: the sweep with and without batching, its table, plot and README block (the rest of
    the Latency section kept), and the admission check against the capacity measured at start-up."""
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n## Latency\n\nthe parts table\n\n## Configuration\n\nkept\n", encoding="utf-8")
    out, png = tmp_path / "capacity.json", tmp_path / "capacity.png"
    r = run(["benchmark_latency.py", "--capacity", "--quick", "--tiny", "--seconds", "2", "--max_clients", "2",
             "--workers_list", "1", "--ear", "on", "--json", str(out), "--plot", str(png), "--readme", str(readme)],
            timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert [(s["workers"], s["batching"]) for s in res["sweeps"]] == [(1, True), (1, False)]
    assert res["models"]["server_hears_with_asr"]
    for sweep in res["sweeps"]:
        first = sweep["runs"][0]
        assert first["clients"] == 1 and first["dropped_frames"] == 0 and first["per_frame_delay_ms"]["n"] > 20
        assert {"response_gap_ms", "server_cpu_pct", "tick_ms", "batch_mean", "realtime", "loadavg"} <= first.keys()
        assert sweep["max_realtime_clients"] in [r_["clients"] for r_ in sweep["runs"]] + [0]
    [adm] = res["admission"]
    assert adm["capacity"] >= 1 and adm["clients"] == adm["capacity"] + 2 and adm["refused_busy"] == 2
    assert adm["admitted"] == adm["capacity"] and adm["refused_after_ms"]["p50"] < 2000
    text = readme.read_text(encoding="utf-8")
    assert "### Capacity" in text and "the parts table" in text and "## Configuration\n\nkept" in text
    assert "Conversations held in real time" in r.stdout and png.exists()


# --- system_test.py --------------------------------------------------------------------------------

def test_system_test_fails_with_fixes_when_checkpoints_are_missing(tmp_path):
    r = run(["system_test.py", "--checkpoints", str(tmp_path / "nowhere"), "--json", str(tmp_path / "st.json")])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "result  detail" in r.stdout and "load average" in r.stdout
    rows = {c["name"]: c for c in json.loads((tmp_path / "st.json").read_text(encoding="utf-8"))["checks"]}
    assert list(rows)[:2] == ["python and packages", "espeak-ng Telugu"]
    for name in ("checkpoint: codec", "checkpoint: s2s", "codec round trip", "the ear", "spoken answer offline",
                 "server over WebSocket"):
        assert not rows[name]["ok"] and rows[name]["fix"], name
        assert "not found" in rows[name]["detail"] or "cannot run" in rows[name]["detail"]
    assert r.stdout.count("fix: ") == sum(not c["ok"] for c in rows.values())
    assert "checks FAILED" in r.stdout


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A complete checkpoint folder of tiny random models, exported like the shipped ones."""
    import s2s_transformer
    import speaker_embeddings
    import telugu_asr
    import telugu_codec_fixed

    out = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    cfg = Config()
    c, s = cfg.codec, cfg.s2s
    c.channels, c.res_units, c.n_codebooks, c.codebook_size = [16, 32], 1, 2, 32
    s.d_model, s.n_layers, s.n_heads, s.depth_d_model, s.depth_layers, s.depth_heads = 32, 2, 2, 32, 1, 2
    s.n_codebooks, s.context_frames, s.text_vocab_size, s.dropout = 2, 64, 1000, 0.0
    cfg.speaker.channels = 32
    cfg.asr.d_model, cfg.asr.n_layers, cfg.asr.n_heads = 32, 1, 2
    export_safetensors(telugu_codec_fixed.Codec(c).state_dict(), out / "codec.safetensors", cfg)
    export_safetensors(telugu_asr.Ear(cfg).state_dict(), out / "asr.safetensors", cfg)
    export_safetensors(s2s_transformer.S2SModel(cfg).state_dict(), out / "s2s.safetensors", cfg)
    export_safetensors(speaker_embeddings.SpeakerEncoder(cfg.speaker).state_dict(), out / "speaker_encoder.safetensors", cfg)
    # the v2 agent's brain and mouth (the mouth speaks the shipped pitch codec its config names)
    import agent_brain
    import agent_mouth
    import brain_data
    from telugu_tokenizer import Tokenizer
    cfg.brain.d_model, cfg.brain.n_layers, cfg.brain.n_heads, cfg.brain.max_answer_tokens = 32, 1, 2, 12
    brain = agent_brain.Brain(cfg.brain, brain_data.BrainVocab(Tokenizer.load()))
    export_safetensors({k: v for k, v in brain.state_dict().items() if k != "head.weight"}, out / "brain.safetensors", cfg)
    cfg.mouth.d_model, cfg.mouth.n_layers, cfg.mouth.frame_hidden = 32, 1, 32
    mouth = agent_mouth.build(copy.deepcopy(cfg))
    export_safetensors(mouth.state_dict(), out / "mouth.safetensors", mouth.cfg)
    shutil.copy(ROOT / "checkpoints" / "telugu_spm.model", out / "telugu_spm.model")
    rng = np.random.default_rng(0)
    voices = []
    for name, gender in zip(AGENT_VOICES, ["female", "female", "male", "male"]):
        v = rng.standard_normal(cfg.speaker.embed_dim)
        voices.append({"name": name, "gender": gender, "source": "test", "enrolment": [],
                       "embedding": (v / np.linalg.norm(v)).tolist()})
    (out / "voice_bank.json").write_text(json.dumps({"encoder": "test", "voices": voices}), encoding="utf-8")
    return out


def test_system_test_runs_every_check_on_tiny_checkpoints(tiny_checkpoints, tmp_path):
    r = run(["system_test.py", "--checkpoints", str(tiny_checkpoints), "--json", str(tmp_path / "st.json")])
    result = json.loads((tmp_path / "st.json").read_text(encoding="utf-8"))
    rows = {c["name"]: c for c in result["checks"]}
    assert len(rows) == 13, r.stdout
    for name in ("checkpoint: codec", "checkpoint: s2s", "checkpoint: speaker", "checkpoint: voice bank",
                 "checkpoint: brain", "checkpoint: mouth"):
        assert rows[name]["ok"], rows[name]
    assert "v2 agent" in rows["spoken answer offline"]["detail"]  # with a brain and a mouth, the v2 agent answers
    for c in rows.values():  # every check ran: none is left waiting on a part that did not load
        assert "cannot run" not in c["detail"], c
        assert c["ok"] or c["fix"], c
    # Untrained models: the codec garbles speech and the agent babbles, and the table says so;
    # the server check still ran the question through a real server (its detail has the port).
    assert not rows["codec round trip"]["ok"] and "STOI" in rows["codec round trip"]["detail"]
    assert not rows["the ear"]["ok"] and "CER" in rows["the ear"]["detail"]
    assert not rows["spoken answer offline"]["ok"] and "expected" in rows["spoken answer offline"]["detail"]
    assert "port " in rows["server over WebSocket"]["detail"], rows["server over WebSocket"]
    assert r.returncode == (0 if all(c["ok"] for c in rows.values()) else 1)


def test_checkpoint_check_catches_a_config_that_does_not_match(tiny_checkpoints, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoints, bad)
    cfg = json.loads((bad / "codec.json").read_text(encoding="utf-8"))
    cfg["codec"]["channels"] = [24, 48]  # the weights were trained with [16, 32]
    (bad / "codec.json").write_text(json.dumps(cfg), encoding="utf-8")
    env = system_test.Env(bad, tmp_path)
    with pytest.raises(system_test.Failed) as e:
        system_test.check_codec_checkpoint(env)
    assert "does not load" in e.value.detail and e.value.fix
    # The S2S model must fit the codec that shipped with it.
    env = system_test.Env(tiny_checkpoints, tmp_path)
    system_test.check_codec_checkpoint(env)
    env.codec.cfg.codebook_size, env.codec.frame_size = 64, 480
    with pytest.raises(system_test.Failed) as e:
        system_test.check_s2s_checkpoint(env)
    assert "does not match" in e.value.detail
