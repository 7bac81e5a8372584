"""A short run of bench/soak.py in the suite: the whole stack on its own PostgreSQL and Redis, a small fleet (one REST
client process, two gunicorn workers, three listeners), every kind of fault once (one 2 s after the last ended; an
RPC spell lasts 5 s, the second beat 15 s, the localnet's restart until it answers again), and the audit (nothing
lost, nothing doubled, balances and supply exact, no 5xx but the 503s of a database outage, WebSocket events
delivered while connected, every MQTT reading stored once, every poison MQTT message a dead letter, no ingester
restart). The hour-long run is in docs/BENCHMARKS.md ## Reliability."""

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
def test_a_short_soak_with_every_fault_ends_with_a_clean_audit():
    command = [sys.executable, "bench/soak.py", "--duration", "110", "--meters", "120", "--owners", "6"]
    command += ["--ws-clients", "3", "--chaos-every", "2", "--blackhole", "5", "--progress", "5"]
    command += ["--mqtt-meters", "10", "--poison-every", "15", "--gunicorn-workers", "2", "--device-procs", "1"]
    command += ["--device-threads", "4"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=840)

    output = run.stdout + run.stderr
    assert run.returncode == 0 and "AUDIT CLEAN" in output, output[-6000:]
    injected = re.findall(r"^ +\d+ x (.+)$", output, re.MULTILINE)
    assert [f for f in FAULTS if not any(line.startswith(f) for line in injected)] == [], output[-6000:]
    kept = Path(re.search(r"details \(.*\): (\S+)", output)[1])  # still there after the soak's exit
    details = json.loads(kept.read_text())
    kept.unlink()
    assert details["result"]["missing"] == 0 and len(details["chaos"]) >= len(FAULTS) and details["samples"]
    assert [(name, note) for _, _, name, note in details["chaos"] if note] == []  # every fault really happened
