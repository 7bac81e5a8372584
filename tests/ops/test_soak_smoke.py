"""A short run of bench/soak.py in the suite: the whole stack on its own PostgreSQL and Redis, every kind of
fault once or more, and the audit (nothing lost, nothing doubled, balances and supply exact, no 5xx but the
503s of a database outage, WebSocket events delivered while connected). The hour-long run is in
docs/BENCHMARKS.md ## Reliability."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
@pytest.mark.skipif(not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")), reason="needs PostgreSQL's initdb")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_two_minute_soak_with_chaos_ends_with_a_clean_audit():
    command = [sys.executable, "bench/soak.py", "--duration", "120", "--meters", "300", "--owners", "6"]
    command += ["--ws-clients", "6", "--chaos-every", "10", "--blackhole", "8", "--progress", "30"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=840)

    output = run.stdout + run.stderr
    assert run.returncode == 0 and "AUDIT CLEAN" in output, output[-6000:]
