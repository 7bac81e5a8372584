"""A soak with chaos: the whole stack as production runs it, at fleet load, while processes are killed.

    python bench/soak.py [--duration 3600] [--meters 3000] [--owners 50] [--ws-clients 50] [--compression 30]
                         [--chaos-every 60] [--drain 300] [--mqtt-meters 100] [--poison-every 180] [--keep]

Everything is private, so nobody else on the machine is disturbed: its own PostgreSQL (``initdb`` into a temp dir
with the machine's binaries, as the ``postgres`` user through ``runuser`` when run as root, since initdb refuses
root) and its own ``redis-server``, both on free ports, so the chaos can restart and flush them; the database
``gt_bench_soak`` in it; a ``manage.py localnet`` with its own ledger and a cluster-like fault plan (finality by
age, a replica lagging on some reads). On top: REST under ``gunicorn -k sync``, the WebSocket under ``uvicorn``, two
``celery worker``s, ``celery beat`` and the MQTT ingester on a private Mosquitto (``bench/soak_mqtt.py``), with
``DEBUG=false`` and the default rate limits. A supervisor thread restarts any of those that dies, one second later
(as systemd or Kubernetes would).

Load: ``--owners`` producers share ``--meters`` meters, one wallet per meter. Half the owners' meters post each
reading themselves (``POST /api/v1/meters/{serial}/readings`` with a device key), the other half are behind an
aggregator that posts one batch per 15-minute slot (``/api/v1/meters/batch/readings``, fleet key). Each meter reads
every 15 minutes of meter time, compressed ``--compression`` times (30: a slot every 30 s), stamped from six days
ago going forward. ``--mqtt-meters`` more meters publish theirs through MQTT, and every ``--poison-every`` s a
poison message (one that meets a planted bug) goes to a random one of them. ``--ws-clients`` listeners (producer
tokens) stay connected to ``/ws``, reconnecting after every drop, and note when they were connected and which events
they got.

Chaos, one fault every ``--chaos-every`` s, in turn: SIGKILL of gunicorn, uvicorn, worker 1, worker 2 and
beat (each process group; the supervisor restarts it); PostgreSQL stopped ``-m immediate`` (a crash) and
started again; Redis SIGKILLed and restarted (its append-only file brings it back) and Redis FLUSHALL; the RPC
blackholed (localnet SIGSTOP, SIGCONT ``--blackhole`` s later), HTTP 503 from the RPC, dropped sends and
minority forks, a replica 250 slots behind; a second beat for a while; the localnet restarted. The localnet is
restarted with SIGTERM, not SIGKILL: it saves its ledger every few seconds, so a SIGKILL rolls its chain back
by up to that long, which no real cluster does to confirmed transactions (a vanished RPC node is the blackhole);
that fault lasts until the restarted node answers, so the RPC spell after it is set on a running node.

Then the load stops, faults are cleared, and the stack gets ``--drain`` s to mint the backlog. The audit: every
reading a client got a 2xx and an id for is stored with the same kWh and minted exactly once; every wallet's
on-chain balance equals its minted readings' token amounts; supply equals the total; no (meter, timestamp) twice;
5xx counted with the fault that was active; every listener got every event of its readings published while it was
connected (less those inside the channel layer's documented gap after a Redis restart or flush, or committed just
before their publisher was SIGKILLed: reported apart); RSS and connection counts at the start and the end; every
MQTT reading stored once, every poison message a dead letter, no ingester restart. Prints progress every
``--progress`` s and a one-page report. Every process it started is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import process_cpu  # noqa: E402
from bench.pipeline import create_database, free_port, fresh_world, say, verify_exactly_once  # noqa: E402
from bench.soak_load import (  # noqa: E402
    ABANDONED,
    ACCEPTED,
    CONNECTION_ERRORS,
    COUNTERS,
    RATE_LIMITED,
    REJECTED,
    REQUESTS,
    SERVER_ERRORS,
    rest_process,
    ws_process,
)
from bench.soak_mqtt import (  # noqa: E402
    MqttLoad,
    PrivateMosquitto,
    create_meters,
    ingester_command,
    mqtt_audit,
    mqtt_clean,
    mqtt_report,
)

DATABASE = "gt_bench_soak"
REDIS_DB = 7
LAYER_REFRESH_SECS = 60  # realtime.consumers.EventsConsumer.group_refresh_secs: re-join after Redis forgot
BASELINE_FAULTS = {"finality": {"confirmed_after": 1, "finalized_after": 32}, "lag": {"slots": 20, "every": 4}}
ROLES = ("gunicorn", "uvicorn", "worker1", "worker2", "beat", "ingester", "localnet")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=300, help="seconds of load and chaos")
    parser.add_argument("--meters", type=int, default=3000)
    parser.add_argument("--owners", type=int, default=50, help="producers (half direct meters, half aggregated)")
    parser.add_argument("--ws-clients", type=int, default=50, help="WebSocket listeners (round robin over owners)")
    parser.add_argument("--compression", type=int, default=30, help="meter time per wall time (15 min -> 30 s)")
    parser.add_argument("--chaos-every", type=float, default=60.0, help="seconds between faults (0: no chaos)")
    parser.add_argument("--blackhole", type=float, default=20.0, help="seconds a fault spell lasts (beat: 3x)")
    parser.add_argument("--drain", type=int, default=300, help="seconds allowed to mint the backlog at the end")
    parser.add_argument("--progress", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    parser.add_argument("--device-procs", type=int, default=2, help="client processes for the direct meters")
    parser.add_argument("--device-threads", type=int, default=8, help="threads per device client process")
    parser.add_argument("--mqtt-meters", type=int, default=100, help="meters publishing through MQTT")
    parser.add_argument("--poison-every", type=float, default=180.0, help="seconds between poison MQTT messages")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, PostgreSQL data)")
    args = parser.parse_args()
    slots = args.duration * args.compression / 900
    if slots * 15 / 60 / 24 > 5.5:
        parser.error("--duration x --compression covers more than 5.5 days of meter time (readings age out)")
    return args


# --- private PostgreSQL and Redis ----------------------------------------------------------------------


class PrivatePostgres:
    """A cluster of our own: initdb, pg_ctl start/stop. As root, through ``runuser -u postgres``."""

    def __init__(self, workdir: Path) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not binaries:
            raise SystemExit("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(binaries[-1]).parent
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.data = workdir / "pgdata"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self.data.mkdir()
        socket_dir = workdir / "pgsock"
        socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(socket_dir, "postgres", "postgres")
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket_dir}'\n"
                "max_connections = 300\nshared_buffers = 256MB\n"
            )
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{DATABASE}?connect_timeout=2"

    def run(self, tool: str, *arguments: str) -> None:
        subprocess.run([*self.as_owner, str(self.bin / tool), *arguments], check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/{REDIS_DB}"

    def start(self) -> None:
        import redis

        command = [
            shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
            "--protected-mode", "no", "--maxclients", "4000",
        ]  # fmt: skip
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 (redis writes to it until it stops)
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise SystemExit("private redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)


# --- the service's processes ----------------------------------------------------------------------------


class Stack:
    """The service's processes by role, each in its own process group, restarted by a supervisor thread."""

    def __init__(self, workdir: Path, env: dict[str, str], args, rpc_port: int) -> None:
        self.workdir, self.env, self.args, self.rpc_port = workdir, env, args, rpc_port
        self.web_port, self.ws_port, self.mqtt = free_port(), free_port(), PrivateMosquitto(workdir, free_port())
        self.procs: dict[str, subprocess.Popen] = {}
        self.wanted: set[str] = set()
        self.restarts: Counter = Counter()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.supervisor = threading.Thread(target=self.supervise, daemon=True)

    def command(self, role: str) -> tuple[list[str], dict[str, str]]:
        python, env = sys.executable, dict(self.env)
        if role == "gunicorn":
            command = [
                python, "-m", "gunicorn", "gridtoken.wsgi:application", "-k", "sync", "-w",
                str(self.args.gunicorn_workers), "-b", f"127.0.0.1:{self.web_port}", "--log-level", "warning",
                "--backlog", "2048", "--timeout", "30",
            ]  # fmt: skip
        elif role == "uvicorn":
            env["DB_POOL"] = "true"
            command = [
                python, "-m", "uvicorn", "gridtoken.asgi:application", "--host", "127.0.0.1", "--port",
                str(self.ws_port), "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        elif role.startswith("worker"):
            command = [
                python, "-m", "celery", "-A", "gridtoken", "worker", "--pool=prefork", "-c", "1",
                "--loglevel=WARNING", "-n", f"soak-{role}-{uuid.uuid4().hex[:4]}@%h",
                "--without-gossip", "--without-mingle",
            ]  # fmt: skip
        elif role.startswith("beat"):
            schedule = self.workdir / f"{role}-schedule"
            command = [python, "-m", "celery", "-A", "gridtoken", "beat", "--loglevel=WARNING", "-s", str(schedule)]
        elif role == "ingester":
            command, env = ingester_command(python, env, self.mqtt)
        elif role == "localnet":
            command = [
                python, "manage.py", "localnet", "--port", str(self.rpc_port), "--ledger",
                str(self.workdir / "ledger"), "--save-interval", "2", "--faults", json.dumps(BASELINE_FAULTS),
            ]  # fmt: skip
        else:
            raise ValueError(role)
        return command, env

    def start(self, role: str) -> None:
        command, env = self.command(role)
        log = open(self.workdir / f"{role}.log", "ab")  # noqa: SIM115 (the process writes to it until it stops)
        with self.lock:
            self.procs[role] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            self.wanted.add(role)

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        """The whole process group: a gunicorn master with its workers, a celery worker with its pool."""
        with self.lock:
            process = self.procs.get(role)
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)

    def retire(self, role: str) -> None:
        """Stop a role for good (the second beat after its spell)."""
        with self.lock:
            self.wanted.discard(role)
        self.kill(role, signal.SIGTERM)
        process = self.procs.get(role)
        if process is not None:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(role)

    def supervise(self) -> None:
        dead_since: dict[str, float] = {}
        while not self.stopping.is_set():
            with self.lock:
                for role in list(self.wanted):
                    if self.procs[role].poll() is None:
                        dead_since.pop(role, None)
                        continue
                    first = dead_since.setdefault(role, time.monotonic())
                    if time.monotonic() - first >= 1.0:
                        self.restarts[role] += 1
                        dead_since.pop(role)
                        self.start(role)
            time.sleep(0.2)

    def stop_all(self) -> None:
        self.stopping.set()
        with self.lock:
            self.wanted.clear()
            for role, process in self.procs.items():
                if process.poll() is None:
                    self.kill(role, signal.SIGCONT)
                    self.kill(role, signal.SIGTERM)
            for role, process in self.procs.items():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.kill(role)
                    process.wait()
                # Children left behind by a SIGKILLed leader (a prefork child, a gunicorn worker) share its group.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


def wait_http(port: int, path: str, timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered on :{port}{path} within {timeout:.0f} s")


def rpc(port: int, method: str, params: list | None = None, timeout: float = 3):
    from minting.chain.rpc import Rpc

    client = Rpc(f"http://127.0.0.1:{port}", timeout=timeout)
    try:
        return client.call(method, params)
    finally:
        client.close()


def rpc_healthy(port: int, timeout: float) -> bool:
    """Whether the localnet answers getHealth within ``timeout`` s (it may be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if rpc(port, "getHealth", timeout=1) == "ok":
                return True
        except Exception:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def clear_faults(port: int) -> None:
    """The chain back to a perfect node; it may still be restarting after the last fault."""
    deadline = time.monotonic() + 120
    while True:
        try:
            rpc(port, "localnet_setFaults", [{}])
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# --- chaos -----------------------------------------------------------------------------------------------


class Chaos:
    """One fault every ``every`` s, in turn; each entry of ``log`` is (start, end, name, note)."""

    def __init__(self, stack: Stack, pg: PrivatePostgres, redis: PrivateRedis, args, started: float) -> None:
        self.stack, self.pg, self.redis, self.args, self.started = stack, pg, redis, args, started
        self.log: list[list] = []
        self.current = "-"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        spell = args.blackhole
        beat_spell = 3 * spell
        self.schedule = [
            ("kill gunicorn", lambda: self.stack.kill("gunicorn")),
            ("kill worker1", lambda: self.stack.kill("worker1")),
            (f"RPC HTTP 503 for {spell:.0f} s", lambda: self.rpc_spell({"http": {"status": 503}}, spell)),
            ("kill uvicorn", lambda: self.stack.kill("uvicorn")),
            ("restart PostgreSQL (immediate stop, 5 s down)", self.restart_postgres),
            ("kill worker2", lambda: self.stack.kill("worker2")),
            (f"RPC blackhole (localnet SIGSTOP {spell:.0f} s)", self.blackhole),
            ("kill beat", lambda: self.stack.kill("beat")),
            ("restart Redis (SIGKILL, 3 s down)", self.restart_redis),
            ("RPC drops 30 sends, forks 3", lambda: self.rpc_spell({"drop_sends": {"count": 30}, "fork": {"count": 3}}, spell)),  # noqa: E501
            ("restart localnet (SIGTERM)", self.restart_localnet),
            ("FLUSHALL Redis", lambda: self.redis.client().flushall()),
            (f"RPC replica 250 slots behind for {spell:.0f} s", lambda: self.rpc_spell({"lag": {"slots": 250}}, spell)),
            (f"second beat for {beat_spell:.0f} s", lambda: self.two_beats(beat_spell)),
        ]  # fmt: skip

    def run(self) -> None:
        index = 0
        while not self.stop.wait(self.args.chaos_every):
            name, action = self.schedule[index % len(self.schedule)]
            index += 1
            began = time.time()
            self.current = name
            say(f"  [chaos t={began - self.started:6.0f}s] {name}")
            note = ""
            try:
                action()
            except Exception as error:  # the fault itself failing is reported, never fatal
                note = f"failed: {error!r}"[:200]
                say(f"  [chaos] {name} {note}")
            self.log.append([began, time.time(), name, note])
            self.current = "-"

    def restart_postgres(self) -> None:
        self.pg.stop("immediate")
        time.sleep(5)
        self.pg.start()

    def restart_redis(self) -> None:
        self.redis.kill()
        time.sleep(3)
        self.redis.start()

    def blackhole(self) -> None:
        self.stack.kill("localnet", signal.SIGSTOP)
        try:
            time.sleep(self.args.blackhole)
        finally:
            self.stack.kill("localnet", signal.SIGCONT)

    def rpc_spell(self, plan: dict, seconds: float) -> None:
        rpc(self.stack.rpc_port, "localnet_setFaults", [{**BASELINE_FAULTS, **plan}])
        try:
            time.sleep(seconds)
        finally:
            rpc(self.stack.rpc_port, "localnet_setFaults", [BASELINE_FAULTS])

    def restart_localnet(self) -> None:
        old = self.stack.procs["localnet"]
        self.stack.kill("localnet", signal.SIGTERM)  # the supervisor starts it again once it has saved
        # The fault lasts until the new node answers: a fault after it (an RPC spell) sets its plan through it.
        old.wait(timeout=60)
        deadline = time.monotonic() + 60
        while self.stack.procs["localnet"] is old and time.monotonic() < deadline:
            time.sleep(0.2)
        if not rpc_healthy(self.stack.rpc_port, timeout=60):
            raise RuntimeError("the restarted localnet did not answer within 60 s")

    def two_beats(self, seconds: float) -> None:
        self.stack.start("beat2")
        time.sleep(seconds)
        self.stack.retire("beat2")

    def windows(self, *names: str, after: float = 0.0) -> list[tuple[float, float]]:
        return [(begin, end + after) for begin, end, name, _ in self.log if any(n in name for n in names)]


# --- world and load ----------------------------------------------------------------------------------------


def environment(workdir: Path, pg: PrivatePostgres, redis: PrivateRedis, rpc_port: int) -> dict[str, str]:
    from solders.keypair import Keypair

    keypair = workdir / "authority.json"
    keypair.write_text(json.dumps(list(bytes(Keypair()))))
    env = {
        "DJANGO_SETTINGS_MODULE": "gridtoken.settings",
        "DEBUG": "false",
        "SECRET_KEY": "soak-" + uuid.uuid4().hex * 2,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": pg.url,
        "DB_POOL": "false",
        "REDIS_URL": redis.url,
        "SOLANA_RPC_URL": f"http://127.0.0.1:{rpc_port}",
        "SOLANA_KEYPAIR_PATH": str(keypair),
        "SOLANA_RPC_TIMEOUT_SECS": "5",
        "SOLANA_COMMITMENT": "confirmed",
        "TOKENIZATION_AUTO_MINT_ENABLED": "true",
        "TOKENIZATION_POLLING_INTERVAL_SECS": "10",
        "TOKENIZATION_BATCH_SIZE": "200",
        "TOKENIZATION_TRIGGER_DEBOUNCE_MS": "200",
    }
    os.environ.update(env)
    return {**os.environ, **env}


def build_world(args) -> dict:
    """Owners (with API tokens for the WebSocket), meters with a wallet each, device keys for the direct
    meters and one fleet key per aggregator."""
    from rest_framework.authtoken.models import Token
    from solders.keypair import Keypair

    from meters.models import ApiKey, Meter, User
    from meters.services.api_keys import KEY_PREFIX, hash_key

    def new_key() -> str:
        return f"{KEY_PREFIX}{uuid.uuid4().hex}{uuid.uuid4().hex}"

    users = User.objects.bulk_create(
        [User(username=f"soak-owner-{i:03d}", wallet_address=str(Keypair().pubkey())) for i in range(args.owners)]
    )
    tokens = Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
    meters = Meter.objects.bulk_create(
        [
            Meter(serial=f"SOAK-{i:05d}", owner=users[i % args.owners], wallet_address=str(Keypair().pubkey()))
            for i in range(args.meters)
        ],
        batch_size=2000,
    )
    direct, fleets, keys = [], [], []
    for index, user in enumerate(users):
        mine = [m for m in meters if m.owner_id == user.pk]
        if index % 2 == 0:
            for meter in mine:
                raw = new_key()
                keys.append(ApiKey(owner=user, scope="device", meter=meter, prefix=raw[:12], key_hash=hash_key(raw)))
                direct.append((meter.serial, raw))
        else:
            raw = new_key()
            keys.append(ApiKey(owner=user, scope="fleet", prefix=raw[:12], key_hash=hash_key(raw)))
            fleets.append({"key": raw, "serials": [m.serial for m in mine]})
    ApiKey.objects.bulk_create(keys, batch_size=2000)
    mqtt = create_meters(args.mqtt_meters, users)
    return {
        "direct": direct,
        "fleets": fleets,
        "mqtt": list(mqtt),
        "ws_users": [(str(t.user_id), t.key) for t in tokens],
        "wallets": {**{m.serial: m.wallet_address for m in meters}, **mqtt},
    }


class Load:
    """The client processes; ``counters`` of every REST process summed for progress."""

    def __init__(self, args, world: dict, stack: Stack, workdir: Path, stop_at: float) -> None:
        context = multiprocessing.get_context("spawn")
        interval = 900 / args.compression
        base = (datetime.now(UTC) - timedelta(days=6)).replace(second=0, microsecond=0)
        common = {"host": "127.0.0.1", "port": stack.web_port, "base": base.isoformat(), "t0": time.time() + 2,
                  "interval": interval, "stop_at": stop_at}  # fmt: skip
        self.workdir = workdir
        self.processes, self.counters, self.results = [], [], []
        direct = world["direct"]
        procs = max(1, args.device_procs)
        for p in range(procs):
            share = direct[p::procs]
            threads = max(1, args.device_threads)
            plan = {**common, "threads": [
                [[serial, key, interval * ((p + procs * (i * threads + t)) / max(1, len(direct)))]
                 for i, (serial, key) in enumerate(share[t::threads])]
                for t in range(threads)
            ]}  # fmt: skip
            self.spawn(context, rest_process, plan, f"device{p}")
        fleets = [{**f, "offset": interval * i / max(1, len(world["fleets"]))} for i, f in enumerate(world["fleets"])]
        self.spawn(context, rest_process, {**common, "fleets": fleets}, "aggregators")
        self.ws_stop = workdir / "ws.stop"
        self.ws_connected, self.ws_events = context.Value("i", 0), context.Value("q", 0)
        users = [world["ws_users"][i % len(world["ws_users"])] for i in range(args.ws_clients)]
        self.ws_result = workdir / "ws.json"
        self.ws = context.Process(
            target=ws_process,
            args=(f"ws://127.0.0.1:{stack.ws_port}/ws", users, self.ws_connected, self.ws_events, str(self.ws_stop),
                  str(self.ws_result)),
        )  # fmt: skip
        self.ws.start()

    def spawn(self, context, target, plan: dict, name: str) -> None:
        counters = context.Array("q", COUNTERS, lock=False)
        path = self.workdir / f"client-{name}.json"
        process = context.Process(target=target, args=(plan, counters, str(path)))
        process.start()
        self.processes.append(process)
        self.counters.append(counters)
        self.results.append(path)

    def total(self, slot: int) -> int:
        return sum(c[slot] for c in self.counters)

    def rest_done(self) -> bool:
        return all(p.exitcode is not None for p in self.processes)

    def stop_ws(self) -> None:
        self.ws_stop.touch()
        self.ws.join(timeout=60)

    def terminate(self) -> None:
        for process in [*self.processes, self.ws]:
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)


# --- sampling ------------------------------------------------------------------------------------------------


def group_rss(leader: int) -> int:
    """Resident bytes of every process in ``leader``'s process group."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == leader:
                total += int((stat.parent / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def children_rss(parent: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            if pid == parent or int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                total += int((stat.parent / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


class Sampler:
    """Every ``every`` s: RSS per role, PostgreSQL connections (pg_stat_activity), Redis clients, readings."""

    def __init__(self, stack: Stack, pg: PrivatePostgres, redis: PrivateRedis, every: float = 15.0) -> None:
        self.stack, self.pg, self.redis, self.every = stack, pg, redis, every
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.conn = None

    def query(self, sql: str):
        import psycopg

        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.pg.url.split("?")[0], autocommit=True, connect_timeout=2)
            return self.conn.execute(sql).fetchall()
        except Exception:
            self.conn = None
            return None

    def sample(self) -> dict:
        row: dict = {"t": time.time(), "rss": {}}
        with self.stack.lock:
            procs = dict(self.stack.procs)
        for role, process in procs.items():
            if process.poll() is None:
                row["rss"][role] = group_rss(process.pid)
        postmaster = self.pg.postmaster_pid()
        row["rss"]["postgres"] = children_rss(postmaster) if postmaster else 0
        if self.redis.process is not None:
            row["rss"]["redis"] = group_rss(self.redis.process.pid)
        found = self.query(
            "SELECT coalesce(application_name, ''), state, count(*) FROM pg_stat_activity"
            f" WHERE datname = '{DATABASE}' AND backend_type = 'client backend' GROUP BY 1, 2"
        )
        row["pg_connections"] = None if found is None else sum(n for _, _, n in found) - 1  # less our own
        try:
            row["redis_clients"] = self.redis.client().info("clients")["connected_clients"] - 1
        except Exception:
            row["redis_clients"] = None
        statuses = self.query("SELECT status, count(*) FROM meters_meterreading GROUP BY 1")
        row["readings"] = None if statuses is None else dict(statuses)
        return row

    def run(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.stop.wait(self.every):
                return


# --- audit ----------------------------------------------------------------------------------------------------


def inside(moment: float, windows: list[tuple[float, float]]) -> bool:
    return any(begin <= moment <= end for begin, end in windows)


def audit(load: Load, chaos: Chaos | None, world: dict) -> dict:
    from django.db import connection
    from django.db.models import Sum

    from meters.models import MeterReading
    from minting.services.batching import chain_client

    accepted: dict[str, tuple[str, int, str]] = {}
    logs: list = []
    for path in load.results:
        data = json.loads(path.read_text())
        for reading_id, serial, slot, kwh in data["accepted"]:
            accepted[reading_id] = (serial, slot, kwh)
        logs += data["log"]
    rows = {
        str(r["id"]): r
        for r in MeterReading.objects.values("id", "status", "kwh_amount", "token_amount", "wallet_address",
                                             "user_id", "submitted_at", "batch__settled_at", "meter__serial")
    }  # fmt: skip
    missing = [i for i in accepted if i not in rows]
    wrong_kwh = [i for i, (_, _, kwh) in accepted.items() if i in rows and rows[i]["kwh_amount"] != Decimal(kwh)]
    statuses = Counter(r["status"] for r in rows.values())
    not_minted = [i for i, r in rows.items() if r["status"] != "minted"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) - count(DISTINCT (meter_id, reading_timestamp)) FROM meters_meterreading")
        duplicate_rows = cursor.fetchone()[0]
    client = chain_client()
    minted = MeterReading.objects.filter(status="minted").values("wallet_address")
    expected = {row["wallet_address"]: int(row["total"] or 0) for row in minted.annotate(total=Sum("token_amount"))}
    for wallet in world["wallets"].values():
        expected.setdefault(wallet, 0)
    over, under = [], []
    for wallet, total in expected.items():
        balance = client.token_balance(wallet)
        if balance > total:
            over.append((wallet, balance - total))
        elif balance < total:
            under.append((wallet, total - balance))
    supply, total = client.token_supply(), sum(expected.values())
    kwh_accepted = sum((Decimal(kwh) for _, _, kwh in accepted.values()), Decimal(0))
    kwh_stored = sum((r["kwh_amount"] for r in rows.values()), Decimal(0))

    # 5xx: which fault (if any) was active, with a few seconds' slack for the service to notice recovery.
    fault_windows = []
    if chaos is not None:
        fault_windows = [(b - 1, e + 10, n) for b, e, n, _ in chaos.log]
    five = [entry for entry in logs if isinstance(entry[1], int) and entry[1] >= 500]
    by_fault: Counter = Counter()
    for moment, status, _path, _body in five:
        names = [n for b, e, n in fault_windows if b <= moment <= e] or ["no fault active"]
        by_fault[(status, names[0])] += 1
    # A 503 database_unavailable while our PostgreSQL is down is the documented answer (retry); anything
    # else with a 5xx status is a bug.
    outages = chaos.windows("PostgreSQL", after=10) if chaos else []
    unexpected = [e for e in five if not (e[1] == 503 and "database_unavailable" in e[3] and inside(e[0], outages))]
    other = [e for e in logs if not (isinstance(e[1], int) and e[1] >= 500)]

    # WebSocket: events of the listener's own readings published while it was connected.
    records = json.loads(load.ws_result.read_text()) if load.ws_result.exists() else {}
    received: dict[str, set[str]] = defaultdict(set)
    events_path = load.ws_result.with_suffix(".events")
    if events_path.exists():
        with open(events_path) as events:
            for line in events:
                user_id, kind, reading_id = line.split()
                received[user_id].add(f"{kind}{reading_id}")
    # Excused (best effort by design, gridtoken/events.py): from just before a Redis restart or flush until the
    # hub re-joins its groups, and an event committed just before its publisher (gunicorn for received, a
    # worker for minted) was SIGKILLed, which dies with it. "Just before": the row's time is taken before its
    # commit, the publish comes after it (the 1 h run lost 81 events 1-15 ms before such a fault).
    gaps = []
    if chaos is not None:
        gaps = [(b - 1.0, e) for b, e in chaos.windows("Redis", after=LAYER_REFRESH_SECS + 5)]
        gaps += [(b - 1.0, b + 1.0) for b, _ in chaos.windows("kill gunicorn", "kill worker")]
    margin = 2.0
    ws = Counter()
    by_user = defaultdict(list)
    for reading_id, row in rows.items():
        by_user[str(row["user_id"])].append((reading_id, row))
    for user_id, record in records.items():
        intervals = [(a + margin, b - margin) for a, b in record["intervals"] if b - a > 2 * margin]
        for reading_id, row in by_user.get(user_id, []):
            for kind, at in (("m", row["submitted_at"]), ("t", row["batch__settled_at"])):
                if at is None or (kind == "t" and row["status"] != "minted"):
                    continue
                moment = at.timestamp()
                if not inside(moment, intervals):
                    continue
                got = f"{kind}{reading_id}" in received[user_id]
                excused = inside(moment, gaps)
                ws[("expected_excused" if excused else "expected", kind)] += 1
                if not got:
                    ws[("missed_excused" if excused else "missed", kind)] += 1
    return {
        "accepted": len(accepted),
        "stored": len(rows),
        "stored_unacknowledged": len(set(rows) - set(accepted)),
        "missing": len(missing),
        "missing_sample": missing[:5],
        "wrong_kwh": len(wrong_kwh),
        "statuses": dict(statuses),
        "not_minted": len(not_minted),
        "not_minted_sample": [(i, rows[i]["status"], rows[i]["meter__serial"]) for i in not_minted[:5]],
        "duplicate_rows": duplicate_rows,
        "wallets": len(expected),
        "wallets_over": len(over),
        "wallets_under": len(under),
        "over_sample": over[:5],
        "under_sample": under[:5],
        "supply": supply,
        "total": total,
        "kwh_accepted": kwh_accepted,
        "kwh_stored": kwh_stored,
        "five_xx": len(five),
        "five_xx_by_fault": {f"{s} during {n}": c for (s, n), c in sorted(by_fault.items(), key=str)},
        "five_xx_unexpected": len(unexpected),
        "five_xx_sample": (unexpected or five)[:5],
        "other_log": other[:10],
        "other_log_count": len(other),
        "ws": {f"{a} {'minted' if k == 't' else 'received'}": n for (a, k), n in sorted(ws.items())},
        "ws_drops": sum(r["drops"] for r in records.values()),
        "ws_intervals": sum(len(r["intervals"]) for r in records.values()),
        "ws_listeners": len(records),
    }


# --- report --------------------------------------------------------------------------------------------------


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def report(args, result: dict, chaos: Chaos | None, sampler: Sampler, stack: Stack, load: Load, timing: dict) -> bool:
    r = result
    say("\n" + "=" * 100)
    say(f"SOAK REPORT  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  {os.cpu_count()} CPUs (shared machine)")
    say(f"  load {args.duration} s: {args.meters} meters ({args.owners} owners, half direct, half via "
        f"{len(load.results) and args.owners // 2} aggregators), a 15-min slot every {900 / args.compression:.0f} s, "
        f"{args.ws_clients} WebSocket listeners; drain {timing['drain']:.0f} s")  # fmt: skip
    requests = load.total(REQUESTS)
    say(f"  requests {requests:,}: 5xx {load.total(SERVER_ERRORS):,}, connection errors "
        f"{load.total(CONNECTION_ERRORS):,}, 429 {load.total(RATE_LIMITED):,}, rejected items "
        f"{load.total(REJECTED):,}, abandoned {load.total(ABANDONED):,}")  # fmt: skip
    faults = chaos.log if chaos else []
    say(f"\n  chaos: {len(faults)} faults; supervisor restarts {dict(stack.restarts)}")
    kinds = Counter(name for _, _, name, _ in faults)
    for name, count in kinds.items():
        say(f"    {count:3d} x {name}")
    failed = [f for f in faults if f[3]]
    if failed:
        say(f"    fault actions that failed: {[(f[2], f[3]) for f in failed][:5]}")
    say("\n  exactly once")
    say(f"    readings accepted (2xx with id) {r['accepted']:,}; stored {r['stored']:,} "
        f"({r['stored_unacknowledged']:,} stored without the client seeing the answer)")  # fmt: skip
    say(f"    lost (accepted, not stored) {r['missing']}; kWh differs {r['wrong_kwh']}; stored twice "
        f"{r['duplicate_rows']}; not minted after the drain {r['not_minted']} {r['statuses']}")  # fmt: skip
    say(
        f"    wallets {r['wallets']:,}: balance above its readings (doubled) {r['wallets_over']}, below (lost) "
        f"{r['wallets_under']}; supply {r['supply']:,} == total {r['total']:,}: {r['supply'] == r['total']}"
    )
    say(f"    kWh accepted {r['kwh_accepted']} stored {r['kwh_stored']}")
    if r["missing_sample"] or r["not_minted_sample"] or r["over_sample"] or r["under_sample"]:
        say(f"    samples: {r['missing_sample']} {r['not_minted_sample']} {r['over_sample']} {r['under_sample']}")
    say(f"\n  5xx: {r['five_xx']}, unexpected {r['five_xx_unexpected']} (all but 503 database_unavailable while "
        f"PostgreSQL was down): {r['five_xx_by_fault']}")  # fmt: skip
    for entry in r["five_xx_sample"]:
        say(f"    {datetime.fromtimestamp(entry[0], UTC):%H:%M:%S} {entry[1]} {entry[2]} {entry[3][:120]!r}")
    if r["other_log_count"]:
        say(f"  other non-2xx outcomes: {r['other_log_count']}: {r['other_log'][:3]}")
    say(
        f"\n  WebSocket: {r['ws_listeners']} listeners, {r['ws_intervals']} connections, "
        f"{r['ws_drops']} connections lost or refused (reconnected)"
    )
    say(f"    {r['ws']}")
    mqtt_report(say, r)
    samples = [s for s in sampler.samples if s["t"] >= timing["load_started"] + 60] or sampler.samples
    first, last = samples[0], [s for s in sampler.samples if s["t"] <= timing["load_stopped"]][-1]
    say("\n  resources (first sample a minute into the load, last before the drain; MiB)")
    for role in sorted(set(first["rss"]) | set(last["rss"])):
        peak = max(s["rss"].get(role, 0) for s in samples)
        say(f"    {role:<10} RSS {mib(first['rss'].get(role)):>6} -> {mib(last['rss'].get(role)):>6} (max {mib(peak)})")
    pg = [s["pg_connections"] for s in samples if s["pg_connections"] is not None]
    rc = [s["redis_clients"] for s in samples if s["redis_clients"] is not None]
    say(f"    PostgreSQL connections {first['pg_connections']} -> {last['pg_connections']} (max {max(pg, default=0)});"
        f" Redis clients {first['redis_clients']} -> {last['redis_clients']} (max {max(rc, default=0)})")  # fmt: skip
    cpu = {role: process_cpu(p.pid) for role, p in stack.procs.items()}
    say(f"    CPU-s of the current processes: { {k: round(v, 1) for k, v in cpu.items()} }")
    clean = (
        r["missing"] == 0 and r["wrong_kwh"] == 0 and r["duplicate_rows"] == 0 and r["not_minted"] == 0
        and r["wallets_over"] == 0 and r["wallets_under"] == 0 and r["supply"] == r["total"]
        and not any(k.startswith("missed ") for k in r["ws"]) and r["five_xx_unexpected"] == 0 and mqtt_clean(r)
    )  # fmt: skip
    lost = r["missing"] + r["wallets_under"] + r["mqtt_missing"]
    say(f"\n  AUDIT {'CLEAN' if clean else 'NOT CLEAN'}: lost {lost}, doubled "
        f"{r['duplicate_rows'] + r['wallets_over']}, not minted {r['not_minted']}, 5xx {r['five_xx']} "
        f"(unexpected {r['five_xx_unexpected']}), poison messages not dead letters {r['poisons_not_dead_letters']}, "
        f"ingester restarts {r['ingester_restarts']}")  # fmt: skip
    say("=" * 100)
    return clean


# --- main ------------------------------------------------------------------------------------------------------


def progress_line(started: float, load: Load, sampler: Sampler, chaos: Chaos | None, stack: Stack) -> str:
    latest = sampler.sample()
    readings = latest["readings"] or {}
    return (
        f"  t={time.time() - started:6.0f}s accepted {load.total(ACCEPTED):>8,} stored {sum(readings.values()):>8,}"
        f" minted {readings.get('minted', 0):>8,} pending {readings.get('pending', 0) + readings.get('minting', 0):>6,}"
        f" | 5xx {load.total(SERVER_ERRORS)} conn-err {load.total(CONNECTION_ERRORS)} 429 {load.total(RATE_LIMITED)}"
        f" | ws {load.ws_connected.value}/{stack.args.ws_clients} events {load.ws_events.value:,}"
        f" | pg conns {latest['pg_connections']}"
        f" | fault: {chaos.current if chaos else '-'}"
    )


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    os.chmod(workdir, 0o755)  # the postgres user reaches its data dir through it
    say(f"soak: workdir {workdir}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    pg = PrivatePostgres(workdir)
    redis = PrivateRedis(workdir)
    rpc_port = free_port()
    stack = load = chaos = sampler = mqtt_load = None
    clean = False
    try:
        pg.start()
        redis.start()
        env = environment(workdir, pg, redis, rpc_port)
        create_database(pg.url.split("?")[0])
        fresh_world(redis.url)
        from django.core.management import call_command
        from django.db import connections

        stack = Stack(workdir, env, args, rpc_port)
        stack.start("localnet")
        if not rpc_healthy(rpc_port, timeout=60):
            raise SystemExit(f"localnet did not start: see {workdir / 'localnet.log'}")
        call_command("chain_init", stdout=open(os.devnull, "w"))  # noqa: SIM115
        world = build_world(args)
        connections.close_all()
        stack.mqtt.start()
        for role in ROLES[:-1]:
            stack.start(role)
        wait_http(stack.web_port, "/health")
        wait_http(stack.ws_port, "/health")
        stack.supervisor.start()
        say(f"soak: private PostgreSQL :{pg.port} ({pg.bin.parent.name}), Redis :{redis.port}, localnet :{rpc_port}, "
            f"gunicorn :{stack.web_port} x{args.gunicorn_workers}, uvicorn :{stack.ws_port}, 2 workers, beat; "
            f"{args.meters} meters, {len(world['direct'])} direct, {len(world['fleets'])} aggregators, "
            f"{args.ws_clients} listeners; {args.meters * args.compression / 900:.0f} readings/s offered; "
            f"chaos every {args.chaos_every:.0f} s")  # fmt: skip
        started = time.time()
        stop_at = started + args.duration
        sampler = Sampler(stack, pg, redis)
        sampler.thread.start()
        load = Load(args, world, stack, workdir, stop_at)
        mqtt_load = MqttLoad(
            stack.mqtt, world["mqtt"], base=(datetime.now(UTC) - timedelta(days=6)).replace(second=0, microsecond=0),
            interval=900 / args.compression, stop_at=stop_at, poison_every=args.poison_every,
        )  # fmt: skip
        if args.chaos_every > 0:
            chaos = Chaos(stack, pg, redis, args, started)
            chaos.thread.start()
        while time.time() < stop_at:
            time.sleep(min(args.progress, max(0.1, stop_at - time.time())))
            say(progress_line(started, load, sampler, chaos, stack))
        if chaos is not None:
            chaos.stop.set()
            say("  load over: waiting for the fault in progress to end")
            chaos.thread.join()
        clear_faults(rpc_port)
        mqtt_load.stop()
        load_stopped = time.time()
        while not load.rest_done():
            time.sleep(1)
            say(f"  clients finishing their last requests ... {progress_line(started, load, sampler, chaos, stack)}")
        say(f"== drain: up to {args.drain} s for everything stored to be minted (chain faults cleared)")
        drain_started = time.time()
        while time.time() - drain_started < args.drain:
            readings = sampler.sample()["readings"] or {}
            if readings and not readings.get("pending") and not readings.get("minting"):
                break
            time.sleep(args.progress)
            say(progress_line(started, load, sampler, chaos, stack))
        time.sleep(3)  # the last settles' events reach the listeners
        load.stop_ws()
        sampler.stop.set()
        sampler.samples.append(sampler.sample())
        timing = {"load_started": started, "load_stopped": load_stopped, "drain": time.time() - drain_started}
        result = audit(load, chaos, world)
        result.update(mqtt_audit(mqtt_load, stack.restarts["ingester"], args.progress))
        verify_exactly_once()
        clean = report(args, result, chaos, sampler, stack, load, timing)
        # Beside the work dir, not in it: the work dir goes at exit unless --keep, the report stays.
        details = workdir.with_name(f"{workdir.name}-report.json")
        details.write_text(
            json.dumps({"result": result, "chaos": chaos.log if chaos else [], "samples": sampler.samples},
                       default=str)
        )  # fmt: skip
        say(f"  details (audit, chaos log, resource samples): {details}")
        if chaos is not None:
            for began, ended, name, note in chaos.log:
                say(f"    {datetime.fromtimestamp(began, UTC):%H:%M:%S} +{ended - began:4.0f}s {name} {note}")
    except KeyboardInterrupt:
        say("\nsoak: interrupted; stopping everything it started")
    finally:
        if chaos is not None:
            chaos.stop.set()
        if load is not None:
            load.terminate()
        if mqtt_load is not None:
            mqtt_load.stop()
        if stack is not None:
            stack.stop_all()
            stack.mqtt.stop()
        redis.kill()
        try:
            pg.stop("fast")
        except Exception as error:
            say(f"soak: stopping the private PostgreSQL: {error!r}")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
