"""``manage.py demo`` as a user runs it: a subprocess, real PostgreSQL, Redis, chain, web, worker and beat."""

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from io import StringIO

import httpx
import psycopg
import pytest
from django.core.management import CommandError, call_command
from psycopg import sql

from gridtoken.databases import demo_database_name, using_database
from meters.models import MeterReading
from ops.processes import group_alive
from tests.conftest import ROOT, free_port
from tests.ops.test_documented_commands import bare_shell


def own_database(tag: str) -> str:
    """A database name of this run's own (DATABASE_URL's name, ``tag``, the xdist worker), so that the demo runs of
    parallel workers, and of other runs on the same server, never share a database."""
    run = os.environ["DATABASE_URL"].rpartition("/")[2].partition("?")[0]
    return f"{run}_{tag}_{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}"


BASE_DB = own_database("smoke")
DEMO_DB = f"{BASE_DB}_demo"  # the demo's own database, derived from DATABASE_URL's


def base_env(**overrides) -> dict:
    env = {**os.environ, "DEBUG": "true", "PYTHONUNBUFFERED": "1"}
    env.update(overrides)
    return env


def run_demo(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable, "manage.py", "demo", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_postgresql_down_is_explained_with_the_commands_that_start_it(closed_port_url):
    result = run_demo(base_env(DATABASE_URL=f"postgres://postgres@{closed_port_url}/gridtoken"))
    assert result.returncode == 1
    assert f"PostgreSQL is not reachable at {closed_port_url}" in result.stderr
    assert "docker compose up -d db redis" in result.stderr and "pg_ctlcluster" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_redis_down_is_explained_with_the_commands_that_start_it(closed_port_url):
    result = run_demo(base_env(REDIS_URL=f"redis://{closed_port_url}/0"))
    assert result.returncode == 1
    assert "Redis is not reachable" in result.stderr and "redis-server --daemonize yes" in result.stderr
    assert "docker compose up -d db redis" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_taken_port_is_named_instead_of_failing_later():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_demo(base_env(), "--port", str(port), "--rpc-port", str(free_port()))
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr and "--port" in result.stderr


class Demo:
    """A running ``manage.py demo`` whose output is read line by line."""

    def __init__(self, env: dict, *args: str) -> None:
        command = [sys.executable, "manage.py", "demo", *args]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for line in self.lines if (m := re.match(r"Started (\S+) \(pid (\d+)\)", line))}


def drop_database(name: str) -> None:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_database():
    """The demo creates its database (DATABASE_URL's name + _demo): none before, none left after."""
    drop_database(DEMO_DB)
    yield f"postgres://postgres@127.0.0.1:5432/{BASE_DB}"
    drop_database(DEMO_DB)


@pytest.fixture
def in_process_demo_database(transactional_db):
    """The in-process demo's database: this test database's name + _demo, dropped afterwards."""
    from django.db import connection

    name = demo_database_name(connection.settings_dict["NAME"])
    yield name
    drop_database(name)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def readme_blocks() -> list[str]:
    """The bash blocks of the README's "Try it from outside", in order."""
    section = (ROOT / "README.md").read_text().split("\n## Try it from outside\n")[1].split("\n## ")[0]
    return re.findall(r"```bash\n(.*?)```", section, re.DOTALL)


def try_it_from_outside(web: int, password: str, shell: dict) -> None:
    """The README's commands, verbatim but for the demo's port and the printed password, in one shell: a meter of
    one's own mints its 2.5 kWh into its own wallet, then its two register reads add 1.25 kWh (the first is the
    baseline); the meter's balance command shows exactly that, apart from the demo meters' tokens."""
    submit, balances, registers = readme_blocks()
    own_balance = next(line for line in balances.splitlines() if "MY-METER-1" in line)
    marker = "=== balance"
    script = (
        "\n".join(
            [
                submit,
                "echo",
                own_balance_until(own_balance, r"2\.50*", marker),
                registers,
                own_balance_until(own_balance, r"3\.750*", marker),
            ]
        )
        .replace("localhost:8000", f"localhost:{web}")
        .replace("<printed by the demo>", password)
    )
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=shell, capture_output=True, text=True, timeout=300)
    shown = [part.strip() for part in result.stdout.split(marker)[1:]]
    assert result.returncode == 0 and len(shown) == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"MY-METER-1 .*chain 2\.50* tokens .*database 2\.50* .*: match", shown[0]), shown[0]
    assert re.search(r"MY-METER-1 .*chain 3\.750* tokens .*database 3\.750* .*: match", shown[1]), shown[1]


def matched_day(web: int, password: str) -> None:
    """The demo's day of hourly matching (docs/MATCHING.md's walkthrough runs on it) is matched by the beat:
    its farm's readings minted, its certificates issued, its hours matched, while the rest of the test ran."""
    api = f"http://127.0.0.1:{web}"
    token = httpx.post(f"{api}/api/auth/token", json={"username": "demo-consumer-1", "password": password}).json()
    headers = {"Authorization": f"Bearer {token['token']}"}
    deadline = time.monotonic() + 120
    while True:
        [consumer] = httpx.get(f"{api}/api/matching/consumers", headers=headers, timeout=10).json()["consumers"]
        if consumer["matched_through"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    month = consumer["match_from"][:7]
    report = httpx.get(f"{api}/api/matching/consumers/{consumer['id']}/report?month={month}", headers=headers,
                       timeout=30).json()  # fmt: skip
    assert report["hours"] and report["matched_wh"] > 0, report


def own_balance_until(command: str, tokens: str, marker: str) -> str:
    """The README's balance command, run until it shows ``tokens`` (a regular expression) on chain (minting
    takes about a second)."""
    return (
        f"for attempt in $(seq 60); do out=$({command}) && grep -qE 'chain {tokens} tokens' <<<\"$out\" && break; "
        f'sleep 1; done; echo "{marker}"; echo "$out"'
    )


@pytest.mark.timeout(600)
def test_the_demo_mints_simulated_readings_and_ctrl_c_stops_everything(tmp_path, fresh_database):
    web, rpc = free_port(), free_port()
    env = base_env(
        DATABASE_URL=fresh_database,
        SOLANA_KEYPAIR_PATH=str(tmp_path / "authority.json"),
    )
    args = ["--port", str(web), "--rpc-port", str(rpc), "--var-dir", str(tmp_path / "var")]
    demo = Demo(env, *args, "--producers", "3", "--meters", "2", "--interval", "0.5", "--backfill", "24")
    try:
        demo.wait_for(rf"^Dashboard: http://127\.0\.0\.1:{web}/dashboard/$", timeout=300)
        minted = demo.wait_for(r"^submitted (\d+) \| minted ([1-9]\d*) \| recorded \d+ \| pending", timeout=240)
        assert int(minted[1]) >= int(minted[2])
        metrics = httpx.get(f"http://127.0.0.1:{web}/metrics", timeout=10).text
        assert re.search(r"^gridtoken_readings_minted_total [1-9]", metrics, re.MULTILINE)
        assert httpx.get(f"http://127.0.0.1:{web}/ready", timeout=10).json()["status"] == "ready"
        assert httpx.get(f"http://127.0.0.1:{web}/dashboard/", timeout=10).status_code in (200, 302)
        prefix = "Tokens on chain against the database: "
        printed = next(line.removeprefix(prefix) for line in demo.lines if line.startswith(prefix))
        # Verbatim, as a person pastes it into a shell without the virtualenv (only the demo's own settings).
        shell = {
            **bare_shell(),
            **{k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "SOLANA_KEYPAIR_PATH") if k in env},
        }
        balance = subprocess.run(
            ["bash", "-c", printed], cwd=ROOT, env=shell, capture_output=True, text=True, timeout=120
        )
        # 0 or 1: readings are being minted while it reads (1 says by how much); never a missing module.
        assert balance.returncode in (0, 1) and balance.stdout.startswith("Mint "), balance.stderr[-2000:]
        password = next(m[1] for line in demo.lines if (m := re.match(r"  producer +demo-producer-1 +(\S+)", line)))
        try_it_from_outside(web, password, {**shell, "SOLANA_RPC_URL": f"http://127.0.0.1:{rpc}"})
        assert any(line.startswith("Hourly matching: Demo Bakery GmbH (demo-consumer-1)") for line in demo.lines)
        consumer = next(m[1] for line in demo.lines if (m := re.match(r"  consumer +demo-consumer-1 +(\S+)", line)))
        matched_day(web, consumer)
    finally:
        demo.process.send_signal(signal.SIGINT)
        code = demo.finish()
    output = "\n".join(demo.lines)
    assert code == 0, output
    assert f"Database {DEMO_DB}: reset, empty for this run" in output and "Stopped. Ports" in output
    pids = demo.pids()
    assert set(pids) >= {"localnet", "web", "worker", "beat", "simulator-1", "simulator-2", "simulator-3"}
    assert [name for name, pid in pids.items() if group_alive(pid)] == []
    assert port_free(web) and port_free(rpc)
    assert any(line.startswith("  operator  demo-operator") for line in demo.lines)

    # Run it again keeping the database and ledger: it starts, and stops by itself after --duration.
    again = Demo(env, *args, "--producers", "1", "--meters", "1", "--duration", "3", "--keep")
    assert again.finish(timeout=300) == 0, "\n".join(again.lines)
    assert f"Database {DEMO_DB}: kept from the last run (--keep)" in "\n".join(again.lines)
    assert any(line == f"Dashboard: http://127.0.0.1:{web}/dashboard/" for line in again.lines)
    assert [name for name, pid in again.pids().items() if group_alive(pid)] == []
    assert port_free(web) and port_free(rpc)


def test_mqtt_transport_without_a_broker_says_how_to_start_one(closed_port_url):
    host, port = closed_port_url.split(":")
    result = run_demo(base_env(MQTT_URL=f"mqtt://{host}:{port}"), "--transport", "mqtt")

    assert result.returncode != 0
    assert "The MQTT broker is not reachable" in result.stderr and "mosquitto -d" in result.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(600)
def test_in_process_a_sigint_stops_every_process_the_demo_started(tmp_path, monkeypatch, in_process_demo_database):
    """The same orchestration, run in this process (its children use this test's database)."""
    monkeypatch.setenv("SOLANA_KEYPAIR_PATH", str(tmp_path / "authority.json"))
    web, rpc = free_port(), free_port()
    out, err = StringIO(), StringIO()

    def interrupt_once_readings_arrive():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not re.search(r"^submitted [1-9]", out.getvalue(), re.MULTILINE):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest itself runs as a background job
    threading.Thread(target=interrupt_once_readings_arrive, daemon=True).start()
    args = ["--port", str(web), "--rpc-port", str(rpc), "--var-dir", str(tmp_path / "var"), "--no-ledger"]
    call_command("demo", *args, "--producers", "1", "--meters", "2", "--interval", "0.2", stdout=out, stderr=err)
    output = out.getvalue()
    pids = {m[1]: int(m[2]) for m in re.finditer(r"^Started (\S+) \(pid (\d+)\)$", output, re.MULTILINE)}
    assert set(pids) == {"localnet", "web", "worker", "beat", "simulator-1"}
    assert [name for name, pid in pids.items() if group_alive(pid)] == []
    assert port_free(web) and port_free(rpc) and "Stopped. Ports" in output
    assert not MeterReading.objects.exists()  # this process is back on its own database, which the demo left alone
    with using_database(in_process_demo_database):
        assert MeterReading.objects.filter(meter__serial__startswith="DEMO", user__username="demo-producer-1").exists()
    assert signal.getsignal(signal.SIGINT) is handler_before


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_a_failing_step_stops_what_was_started_and_names_it(tmp_path, monkeypatch, in_process_demo_database):
    monkeypatch.setenv("SOLANA_KEYPAIR_PATH", "/proc/no-such-dir/authority.json")  # chain_init cannot write it
    web, rpc = free_port(), free_port()
    out, err = StringIO(), StringIO()
    args = ["--port", str(web), "--rpc-port", str(rpc), "--var-dir", str(tmp_path / "var"), "--no-ledger"]
    with pytest.raises(CommandError, match="chain_init failed; everything the demo started has been stopped"):
        call_command("demo", *args, stdout=out, stderr=err)
    assert "chain_init exited with code" in err.getvalue() and "Last lines of" in err.getvalue()
    localnet = int(re.search(r"Started localnet \(pid (\d+)\)", out.getvalue())[1])
    assert not group_alive(localnet) and port_free(rpc)


@pytest.mark.django_db
def test_out_of_range_sizes_are_refused():
    with pytest.raises(CommandError, match=r"--producers must be 1\.\.20"):
        call_command("demo", "--producers", "0")


@pytest.mark.django_db
def test_in_process_an_unreachable_redis_is_a_plain_error(redis_down):
    with pytest.raises(CommandError, match="Redis is not reachable"):
        call_command("demo", "--port", str(free_port()), "--rpc-port", str(free_port()))


@pytest.mark.django_db
def test_in_process_a_taken_rpc_port_is_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        rpc = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"Port {rpc} on 127.0.0.1 is already in use.*--rpc-port"):
            call_command("demo", "--port", str(free_port()), "--rpc-port", str(rpc))
