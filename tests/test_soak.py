"""The soak tool's two-minute version (soak.py, as a user runs it): tiny models, three
conversations back to back with speech, pauses and barge-ins while another client sends 2,000
malformed messages. The server stays up, no good conversation is dropped or falls behind, memory
and tick time stay flat."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(420)


def test_two_minute_soak(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, "soak.py", "--minutes", "2", "--tiny", "--clients", "3", "--capacity", "4",
                        "--conversation_s", "20", "--malformed", "2000", "--sample_s", "5", "--json", str(out),
                        "--plot", str(tmp_path / "soak.png")],
                       cwd=ROOT, capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    s = res["summary"]
    assert res["server_alive"] and res["health_at_end"] == "ok"
    assert s["conversations"] >= 3 * 5 and s["conversations_dropped"] == 0 and s["conversations_behind"] == 0
    assert s["barge_ins"] > 0  # the tiny random agent talks all the time: every question interrupts it
    assert res["malformed"]["sent"] == 2000 and res["malformed"]["connections"] > 10  # closed and back, many times
    assert s["memory_growth_pct"] < 10  # tiny models: what grows is Python, not a per-frame leak
    assert s["tick_p50_ms_last"] < 3 * s["tick_p50_ms_first"] + 5
    assert (tmp_path / "soak.png").exists() and "soak: 2" in r.stdout
