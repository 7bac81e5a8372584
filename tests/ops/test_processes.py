"""The demo's building blocks with real processes, databases and sockets."""

import socket
import subprocess
import sys

import environ
import psycopg
import pytest
from psycopg import sql

from meters.models import User
from ops import demo
from ops.processes import ChildFailed, Supervisor, group_alive, stop_group
from tests.conftest import ROOT

ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def supervisor(tmp_path):
    sup = Supervisor(log_dir=tmp_path / "logs")
    yield sup
    sup.stop_all(grace=1, settle=1)


def sh(supervisor: Supervisor, name: str, script: str, **kwargs):
    return supervisor.start(name, ["sh", "-c", script], env=ENV, cwd=ROOT, **kwargs)


def test_grandchildren_stop_with_their_parent_group(supervisor):
    child = sh(supervisor, "parent", "sleep 300 & sleep 300 & wait")
    assert stop_group(child.process, grace=5) is True
    assert not group_alive(child.pid) and child.process.returncode is not None


def stubborn(supervisor: Supervisor):
    """A group that ignores SIGTERM (once the trap is set: the race is part of the test's set-up)."""
    child = sh(supervisor, "stubborn", "trap '' TERM; echo trapped; sleep 300 & wait")
    supervisor.wait_until(child, lambda: "trapped" in child.log_path.read_text(), timeout=30, interval=0.05)
    return child


def test_a_group_that_ignores_sigterm_is_killed(supervisor):
    child = stubborn(supervisor)
    assert stop_group(child.process, grace=0.3, settle=3) is False
    assert not group_alive(child.pid)


def test_stop_all_stops_newest_first_and_reports_the_killed(supervisor):
    polite = sh(supervisor, "polite", "sleep 300")
    stubborn(supervisor)
    killed = supervisor.stop_all(grace=0.3, settle=1)
    assert [child.name for child in killed] == ["stubborn"]
    assert not group_alive(polite.pid)


def test_a_child_that_exits_while_starting_fails_with_its_log(supervisor):
    child = sh(supervisor, "crasher", "echo 'address already in use'; exit 3")
    with pytest.raises(ChildFailed, match="exited with code 3") as info:
        supervisor.wait_until(child, lambda: False, timeout=30)
    assert "address already in use" in str(info.value) and info.value.child is child


def test_a_child_that_never_gets_ready_fails_after_the_timeout(supervisor):
    child = sh(supervisor, "slow", "sleep 300")

    def probe():
        raise ConnectionRefusedError

    with pytest.raises(ChildFailed, match="was not ready within 0 s"):
        supervisor.wait_until(child, probe, timeout=0.3, interval=0.05)


def test_one_shot_commands_must_succeed_in_time(supervisor):
    assert supervisor.run("ok", ["sh", "-c", "exit 0"], env=ENV, cwd=ROOT, timeout=30).process.returncode == 0
    with pytest.raises(ChildFailed, match="exited with code 2"):
        supervisor.run("bad", ["sh", "-c", "exit 2"], env=ENV, cwd=ROOT, timeout=30)
    with pytest.raises(ChildFailed, match="did not finish within 0 s"):
        supervisor.run("hang", ["sleep", "300"], env=ENV, cwd=ROOT, timeout=0.2)


def test_dead_lists_only_children_that_should_still_run(supervisor):
    server = sh(supervisor, "server", "exit 1")
    sh(supervisor, "job", "exit 0", expected_exit=True)
    server.process.wait()
    assert supervisor.dead() == [server]
    assert server.log_tail() == ""


def test_a_log_that_cannot_be_read_has_an_empty_tail(supervisor):
    child = sh(supervisor, "gone", "exit 0")
    child.log_path.unlink()
    assert child.log_tail() == ""


def test_database_url_names_exactly_the_configured_database():
    db = {"NAME": "gt demo", "USER": "pg", "PASSWORD": "p@ss word", "HOST": "db.local", "PORT": 6543,
          "OPTIONS": {"connect_timeout": 2, "pool": {"min_size": 2}}}  # fmt: skip
    parsed = environ.Env.db_url_config(demo.database_url(db))
    assert (parsed["NAME"], parsed["USER"], parsed["PASSWORD"]) == ("gt demo", "pg", "p@ss word")
    assert (parsed["HOST"], parsed["PORT"], parsed["OPTIONS"]) == ("db.local", 6543, {"connect_timeout": 2})
    assert demo.database_url({"NAME": "x"}) == "postgres://localhost:5432/x"
    assert demo.database_url({"NAME": "x", "USER": "u"}) == "postgres://u@localhost:5432/x"


def test_unreachable_services_are_explained(closed_port_url):
    host, port = closed_port_url.split(":")
    message = demo.postgres_problem({"NAME": "x", "USER": "postgres", "HOST": host, "PORT": int(port)})
    assert message.startswith(f"PostgreSQL is not reachable at {closed_port_url}") and "pg_ctlcluster" in message
    message = demo.redis_problem(f"redis://{closed_port_url}/0")
    assert message.startswith(f"Redis is not reachable at {closed_port_url}/0") and "redis-server" in message
    assert demo.postgres_problem({"NAME": "x", "USER": "postgres", "HOST": "127.0.0.1", "PORT": 5432}) is None
    assert demo.redis_problem("redis://127.0.0.1:6379/6") is None


def test_the_database_is_created_once():
    db = {"NAME": "gt_ops_created_by_demo", "USER": "postgres", "HOST": "127.0.0.1", "PORT": 5432}
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db["NAME"]))
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(drop)
        try:
            assert demo.ensure_database(db) is True
            assert demo.ensure_database(db) is False
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone() == (1,)
        finally:
            conn.execute(drop)


def test_a_listening_port_is_in_use_and_a_closed_one_is_not(closed_port_url):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        assert demo.port_in_use("127.0.0.1", sock.getsockname()[1]) is True
    assert demo.port_in_use("127.0.0.1", int(closed_port_url.split(":")[1])) is False


@pytest.mark.django_db
def test_demo_accounts_are_created_then_given_new_passwords():
    first = demo.demo_accounts(2)
    assert [(a.role, a.username) for a in first] == [
        ("operator", "demo-operator"), ("producer", "demo-producer-1"), ("producer", "demo-producer-2"),
        ("farm", "demo-solar-farm"), ("consumer", "demo-consumer-1"),
    ]  # fmt: skip
    operator = User.objects.get(username="demo-operator")
    assert operator.is_staff and operator.is_superuser and operator.check_password(first[0].password)
    second = demo.demo_accounts(1)
    producer = User.objects.get(username="demo-producer-1")
    assert not producer.is_staff and producer.check_password(second[1].password)
    assert not producer.check_password(first[1].password)


def test_the_progress_line_shows_every_figure():
    figures = {"submitted": 15, "minted": 10, "recorded": 3, "pending": 2, "failed": 0, "p95_secs": 1.234}
    line = demo.progress_line(figures)
    assert line == "submitted 15 | minted 10 | recorded 3 | pending 2 | failed 0 | p95 submit-to-mint 1.2 s"
    idle = {"submitted": 0, "minted": 0, "recorded": 0, "pending": 0, "failed": 0, "p95_secs": None}
    assert demo.progress_line(idle).endswith("-")


def test_the_commands_use_this_interpreter_and_the_given_ports():
    argv = demo.commands(host="127.0.0.1", port=8000, rpc_port=8899, ledger=None, beat_schedule="/tmp/s")
    assert all(command[0] == sys.executable for command in argv.values())
    assert "--ledger" not in argv["localnet"] and argv["web"][-2:] == ["--port", "8000"]
    assert demo.commands(host="h", port=1, rpc_port=2, ledger="/l", beat_schedule="/s")["localnet"][-2:] == [
        "--ledger", "/l",
    ]  # fmt: skip
    assert subprocess.run([*argv["web"][:3], "--version"], capture_output=True).returncode == 0
