#!/usr/bin/env python3
"""The runtime install, tested: every production process started from a venv of requirements.txt alone.

1. Build a fresh venv from ``requirements.txt`` (what the image installs) and check it is consistent: with uv
   (from PyPI, beside the venv, not in it; its cache is reused) and ``uv pip check``, or, where uv cannot be had,
   with pip and ``pip check``. Then re-run this script with that venv's Python: nothing below may come from
   anywhere else.
2. Create a private PostgreSQL database (dropped at exit) and take a private Redis DB (``RUNTIME_CHECK_REDIS_DB``,
   which must be empty; by default the highest empty one of 1-14, since 0 is the app's and 15 the tests'; flushed
   at exit); pick free ports.
3. As production would (``DEBUG=false``, a random ``SECRET_KEY``): ``manage.py localnet``, the set-up (migrate,
   chain_init, certificates_chain_init), web under gunicorn and under uvicorn, ``celery -A gridtoken worker``,
   ``celery -A gridtoken beat``, a private Mosquitto with the files of ``manage.py mqtt_acl``, and
   ``manage.py ingest_mqtt``.
4. Register a producer's meter over REST, post one reading over REST and one over MQTT, wait until both are
   minted, and check with ``manage.py token_balance`` that the wallet on chain holds what the database says.
5. Stop every process (each in its own group, on any exit) and print what was checked.

Usage: ``python3 .ci/runtime_check.py`` (from ``.ci/run``). ``DATABASE_URL`` and ``REDIS_URL`` name the servers
(their database names are not used); ``PYTHON`` the interpreter the venv is made from.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
STAGE = "GRIDTOKEN_RUNTIME_CHECK_WORK"
UV = "uv==0.13.9"  # as the Makefile pins it
T0 = float(os.environ.get(f"{STAGE}_T0", time.monotonic()))  # the clock survives the switch to the venv


def say(text: str) -> None:
    print(f"[runtime-check {time.monotonic() - T0:5.1f}s] {text}", flush=True)


def fail(text: str) -> NoReturn:
    print(f"runtime-check FAILED: {text}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def build_venv(work: Path) -> Path:
    """Step 1: a venv from requirements.txt alone, consistent by ``uv pip check`` (or ``pip check``).

    uv downloads and installs in parallel from its cache: seconds where pip takes a minute or more. It compiles
    the bytecode too, so that the processes below do not each compile what they import (a machine may forbid
    them to write it: ``PYTHONDONTWRITEBYTECODE``).
    """
    python = os.environ.get("PYTHON", sys.executable)
    venv = work / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_NO_CACHE_DIR", "PYTHONPATH")}
    uv = work / "uv/bin/uv"
    got_uv = subprocess.run(  # noqa: S603
        [python, "-m", "pip", "install", "--quiet", "--target", str(work / "uv"), UV],
        env=env,
        capture_output=True,
    )
    if got_uv.returncode == 0 and uv.exists():
        target = ["--python", str(venv / "bin/python")]
        steps = (
            [python, "-m", "venv", "--without-pip", str(venv)],
            [str(uv), "pip", "install", "--quiet", "--compile-bytecode", *target, "-r", "requirements.txt"],
        )
        checker, check_argv = "uv pip check", [str(uv), "pip", "check", *target]
    else:
        steps = (
            [python, "-m", "venv", str(venv)],
            [str(venv / "bin/pip"), "install", "--quiet", "-r", "requirements.txt"],
        )
        checker, check_argv = "pip check", [str(venv / "bin/pip"), "check"]
    for argv in steps:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)  # noqa: S603
        if done.returncode:
            fail(f"{' '.join(argv[:3])} ...:\n{(done.stdout + done.stderr)[-3000:]}")
    check = subprocess.run(check_argv, env=env, capture_output=True, text=True)  # noqa: S603
    if check.returncode:
        fail(f"{checker} in the runtime venv:\n{check.stdout}{check.stderr}")
    answer = " ".join((check.stdout + check.stderr).split("\n")[-2:]).strip()  # uv first names the venv
    say(f"venv from requirements.txt alone: {venv}; {checker}: {answer}")
    return venv


class Stack:
    """Steps 2 to 5, run by the runtime venv's Python (``venv``): the processes and what is checked."""

    PRODUCER, SERIAL, INGESTER = "runtime-producer", "RUNTIME-CHECK-1", "gridtoken-ingester"

    def __init__(self, work: Path, *, venv: Path) -> None:
        # Modules of the runtime venv (and the project) are imported where used: stage 1 runs without them.
        from ops.processes import Supervisor

        self.work, self.bin = work, venv / "bin"
        self.supervisor = Supervisor(log_dir=work / "logs")
        self.database, self.redis_db = None, None  # set once created / taken, for close()
        self.checked: list[str] = []
        db = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtoken"))
        self.db_name = f"gridtoken_runtime_check_{os.getpid()}"
        self.server_url = db._replace(path="/postgres").geturl()
        server = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        self.redis_server = server
        self.redis_url = server._replace(path=f"/{os.environ.get('RUNTIME_CHECK_REDIS_DB', '14')}").geturl()
        self.ports = dict(zip(("rpc", "gunicorn", "uvicorn", "mqtt"), free_ports(4), strict=True))
        self.mqtt_password = secrets.token_urlsafe(16)
        self.user_password = secrets.token_urlsafe(16)
        self.env = {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin",  # Debian's mosquitto
            "HOME": os.environ.get("HOME", str(work)),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": db._replace(path=f"/{self.db_name}").geturl(),
            "REDIS_URL": self.redis_url,
            "SOLANA_RPC_URL": f"http://127.0.0.1:{self.ports['rpc']}",
            "SOLANA_CLUSTER": "localnet",
            "SOLANA_KEYPAIR_PATH": str(work / "authority.json"),
            "MQTT_URL": f"mqtt://{self.INGESTER}:{self.mqtt_password}@127.0.0.1:{self.ports['mqtt']}",
            "MQTT_DEVICE_SECRET": secrets.token_urlsafe(32),
            "MQTT_CLIENT_ID": f"runtime-check-{os.getpid()}",
            "TOKENIZATION_POLLING_INTERVAL_SECS": "2",  # beat's sweep is due within the run
        }

    # --- 2. private database and Redis DB ------------------------------------------------------------------
    def _databases(self) -> None:
        import psycopg
        import redis

        # A test run leaves counters in its own DB (15): unless told which DB to use, take an empty one.
        candidates = (
            [os.environ["RUNTIME_CHECK_REDIS_DB"]] if "RUNTIME_CHECK_REDIS_DB" in os.environ else range(14, 0, -1)
        )
        for number in candidates:
            url = self.redis_server._replace(path=f"/{number}").geturl()
            client = redis.Redis.from_url(url)
            if not client.dbsize():
                self.redis_url = self.env["REDIS_URL"] = url
                break
        else:
            fail(f"no empty Redis DB among {list(candidates)}: set RUNTIME_CHECK_REDIS_DB to an unused DB number")
        self.redis_db = client
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.database = self.db_name
        self.checked.append(f"private database {self.db_name}, Redis {self.redis_url}")

    # --- 3. the processes ------------------------------------------------------------------------------------
    def _start(self, name: str, command: str, ready, **env):
        """``command`` as the README's process table spells it, its program from the runtime venv first;
        returns what ``_wait`` needs. Processes start together and are then waited for: the check's time."""
        argv = command.split()
        argv[0] = shutil.which(argv[0], path=self.env["PATH"]) or fail(f"{argv[0]} is not installed")
        return self.supervisor.start(name, argv, env={**self.env, **env}, cwd=ROOT), ready, command

    def _wait(self, *started) -> None:
        for child, ready, command in started:
            self.supervisor.wait_until(child, ready, timeout=90, interval=0.3)
            say(f"{child.name} up: {command}")

    def _run(self, name: str, *args: str, **env) -> str:
        argv = [str(self.bin / "python"), "manage.py", *args]
        return self.supervisor.run(name, argv, env={**self.env, **env}, cwd=ROOT, timeout=120).log_path.read_text()

    def _logged(self, name: str, text: str):
        return lambda: text in (self.work / "logs" / f"{name}.log").read_text(errors="replace")

    def _processes(self) -> None:
        port = self.ports
        localnet = self._start(
            "localnet", f"python manage.py localnet --port {port['rpc']}", lambda: rpc(port["rpc"], "getHealth") == "ok"
        )
        self._run("migrate", "migrate", "--noinput")
        self._wait(localnet)
        self._run("chain_init", "chain_init")
        self._run("certificates_chain_init", "certificates_chain_init")
        self.checked.append("set-up: migrate, chain_init, certificates_chain_init")
        self._wait(
            self._start(
                "gunicorn",
                f"gunicorn gridtoken.wsgi:application --worker-class sync --bind 127.0.0.1:{port['gunicorn']}",
                lambda: http(port["gunicorn"], "/health")[0] == 200,
                DB_POOL="false",
                WEB_CONCURRENCY="2",  # as docker-compose.yml's `rest` sets gunicorn's workers
            ),
            self._start(
                "uvicorn",
                f"uvicorn gridtoken.asgi:application --host 127.0.0.1 --port {port['uvicorn']}",
                lambda: http(port["uvicorn"], "/health")[0] == 200,
                DB_POOL="true",
            ),
            self._start(
                "worker",
                "celery -A gridtoken worker --loglevel INFO --concurrency 2",
                self._logged("worker", " ready."),
            ),
            self._start(
                "beat",
                f"celery -A gridtoken beat --loglevel INFO --schedule {self.work / 'celerybeat-schedule'}",
                self._logged("beat", "Sending due task"),
            ),
        )
        self.checked.append("web under gunicorn and uvicorn answer /health; worker ready; beat sends its sweep")

    def _broker(self) -> None:
        """Mosquitto (not a GridToken process, but the ingester's peer) with the files ``mqtt_acl`` writes.

        Started by root it drops to its own user (``mosquitto``), as Debian's does, and reads them as that user.
        """
        self.work.chmod(0o711)  # the broker's user may pass through, not list
        auth = self.work / "mqtt"
        auth.mkdir(mode=0o755)
        self._run("mqtt_acl", "mqtt_acl", "--passwords", str(auth / "passwd"), "--acl", str(auth / "acl"))
        (auth / "mosquitto.conf").write_text(
            f"listener {self.ports['mqtt']} 127.0.0.1\nallow_anonymous false\npersistence false\n"
            f"password_file {auth / 'passwd'}\nacl_file {auth / 'acl'}\n"
        )
        self._wait(
            self._start("mosquitto", f"mosquitto -c {auth / 'mosquitto.conf'}", lambda: listening(self.ports["mqtt"])),
            self._start("ingester", "python manage.py ingest_mqtt", self._logged("ingester", "mqtt subscribed")),
        )

    # --- 4. a meter, a reading by each door, minted -------------------------------------------------------
    def _readings(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from solders.keypair import Keypair

        self._run(
            "createsuperuser",
            *("createsuperuser", "--noinput", "--username", self.PRODUCER, "--email", "runtime@example.invalid"),
            DJANGO_SUPERUSER_PASSWORD=self.user_password,
        )
        web, rest = self.ports["uvicorn"], self.ports["gunicorn"]
        token = expect(
            http(web, "/api/auth/token", {"username": self.PRODUCER, "password": self.user_password}),
            200,
            "token over uvicorn",
        )["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        wallet = str(Keypair().pubkey())
        created = expect(
            http(web, "/api/meters", {"serial": self.SERIAL, "wallet_address": wallet}, bearer),
            201,
            "meter registered over uvicorn",
        )
        self._broker()
        now = datetime.now(UTC).replace(microsecond=0)
        rest_body = {"kwh_amount": "2.5", "reading_timestamp": (now - timedelta(minutes=30)).isoformat()}
        expect(
            http(rest, "/api/meters/submit-reading", rest_body, {"X-API-Key": created["api_key"]}),
            201,
            "reading over gunicorn",
        )
        device_password = self._run("device_password", "mqtt_acl", "--device-password", self.SERIAL).strip()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{self.SERIAL}-check", protocol=mqtt.MQTTv5)
        client.username_pw_set(self.SERIAL, device_password)
        client.connect("127.0.0.1", self.ports["mqtt"])
        client.loop_start()
        message = client.publish(
            f"gridtoken/meters/{self.SERIAL}/readings", json.dumps({"kwh": "1.25", "timestamp": now.isoformat()}), qos=1
        )
        message.wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        if not message.is_published():
            fail("the meter's MQTT reading was not acknowledged by the broker")
        say("posted 2.5 kWh over REST (gunicorn) and 1.25 kWh over MQTT")
        deadline = time.monotonic() + 60
        while True:
            status, body = http(rest, "/api/meters/my-readings", headers=bearer)
            readings = body.get("data", []) if status == 200 else []
            minted = sorted(r["kwh_amount"] for r in readings if r["status"] == "minted")
            if len(minted) == 2:
                break
            if dead := self.supervisor.dead():
                fail(f"{dead[0].name} exited while minting:\n{dead[0].log_tail()}")
            if time.monotonic() > deadline:
                fail(f"readings not minted within 60 s: {[(r['source'], r['status']) for r in readings]}")
            time.sleep(0.5)
        self.checked.append(f"minted by the worker: {' and '.join(minted)} kWh")
        say("both minted")
        balance = self._run("token_balance", "token_balance", "--wait", "20", self.PRODUCER)
        self.checked.append("token_balance: " + " | ".join(line for line in balance.splitlines() if wallet in line))

    def check(self) -> None:
        self._databases()
        self._processes()
        self._readings()
        if dead := self.supervisor.dead():
            fail(f"{dead[0].name} exited:\n{dead[0].log_tail()}")
        self.checked.append("every process still running at the end")
        print("runtime-check passed:\n" + "\n".join(f"  - {line}" for line in self.checked), flush=True)

    # --- 5. stop everything ------------------------------------------------------------------------------
    def close(self) -> None:
        import psycopg

        killed = self.supervisor.stop_all(grace=15, settle=3)
        if killed:
            print(f"runtime-check: killed (did not stop on SIGTERM): {[c.name for c in killed]}", file=sys.stderr)
        running = [child.name for child in self.supervisor.children if not child.expected_exit]
        say(f"stopped {', '.join(running) or 'nothing'} (each with its process group)")
        if self.redis_db is not None:
            self.redis_db.flushdb()
        if self.database is not None:
            with psycopg.connect(self.server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        say(f"dropped {self.database or 'no database'}, flushed {self.redis_url}")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def listening(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    return True


def http(port: int, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def expect(answer: tuple[int, dict], status: int, what: str) -> dict:
    if answer[0] != status:
        fail(f"{what}: HTTP {answer[0]} (expected {status}): {answer[1]}")
    return answer[1]


def rpc(port: int, method: str):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
        return json.load(response).get("result")


def main() -> None:
    work = os.environ.get(STAGE)
    if work is None:
        work = tempfile.mkdtemp(prefix="gridtoken-runtime-")
        try:
            venv = build_venv(Path(work))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        python = str(venv / "bin/python")
        os.execve(python, [python, __file__], {**os.environ, STAGE: work, f"{STAGE}_T0": str(T0)})  # noqa: S606
    # The runtime venv's Python from here on; this process owns ``work`` and removes it at exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(ROOT))
    try:
        run(Path(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    from ops.processes import ChildFailed

    stack = Stack(work, venv=Path(sys.prefix))
    try:
        stack.check()
    except ChildFailed as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted")
    finally:
        stack.close()


if __name__ == "__main__":
    main()
