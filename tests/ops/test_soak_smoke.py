"""A short run of bench/soak.py in the suite: the whole stack on its own PostgreSQL and Redis, every kind of fault once
(one every 4 s; an RPC spell lasts 5 s, the second beat 15 s), and the audit (nothing lost, nothing doubled,
balances and supply exact, no 5xx but the 503s of a database outage, WebSocket events delivered while connected,
every MQTT reading stored once, every poison MQTT message a dead letter, no ingester restart). The hour-long run is
in docs/BENCHMARKS.md ## Reliability."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The report's chaos lines ("  1 x kill gunicorn"): one of each kind of fault bench/soak.py injects.
FAULTS = ("kill gunicorn", "kill uvicorn", "kill worker1", "kill worker2", "kill beat", "restart PostgreSQL",
          "restart Redis", "FLUSHALL Redis", "RPC blackhole", "RPC HTTP 503", "RPC drops", "RPC replica",
          "restart localnet", "second beat", "poison MQTT message")  # fmt: skip


@pytest.mark.timeout(900)
@pytest.mark.skipif(not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")), reason="needs PostgreSQL's initdb")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_two_minute_soak_with_chaos_ends_with_a_clean_audit():
    command = [sys.executable, "bench/soak.py", "--duration", "120", "--meters", "300", "--owners", "6"]
    command += ["--ws-clients", "6", "--chaos-every", "4", "--blackhole", "5", "--progress", "30"]
    command += ["--mqtt-meters", "30", "--poison-every", "15"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=840)

    output = run.stdout + run.stderr
    assert run.returncode == 0 and "AUDIT CLEAN" in output, output[-6000:]
    injected = re.findall(r"^ +\d+ x (.+)$", output, re.MULTILINE)
    assert [f for f in FAULTS if not any(line.startswith(f) for line in injected)] == [], output[-6000:]
    kept = Path(re.search(r"details \(.*\): (\S+)", output)[1])  # still there after the soak's exit
    details = json.loads(kept.read_text())
    kept.unlink()
    assert details["result"]["missing"] == 0 and len(details["chaos"]) >= len(FAULTS) and details["samples"]
