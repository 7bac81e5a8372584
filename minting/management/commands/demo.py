"""python manage.py demo: the whole system on this machine, end to end, until Ctrl-C.

1. Check PostgreSQL and Redis answer (else say how to start them); create the database if missing; migrate.
2. Start the local chain (ledger under --var-dir) and run chain_init.
3. Start the ASGI server (REST, WebSocket, dashboard), a Celery worker and beat.
4. Create (or reset) the demo operator and producers; print their credentials.
5. Start one meter simulator per producer (signed v1 posts, legacy posts, fleet batches, in turn; or, with
   ``--transport mqtt``, the MQTT ingester and simulators publishing to the broker at MQTT_URL), each with new
   meters replaying --backfill hours of solar production, one 15-minute interval per --interval.
6. Print the dashboard URL and a live progress line computed from the database.
Ctrl-C or SIGTERM (or --duration) stops every process it started, newest first, each with its whole
process group, so no port stays taken. Child output goes to --var-dir/logs/<name>.log.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gridtoken.ops import demo
from gridtoken.ops.metrics import pipeline_snapshot
from gridtoken.ops.processes import ChildFailed, Supervisor

SIMULATOR_MODES = (["--sign"], ["--legacy"], ["--batch"])


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwind to the clean-up (a BaseException, so no ``except Exception`` swallows it)."""


def _interrupt(signum, frame):
    raise Interrupted


class Command(BaseCommand):
    help = "Run the whole system locally: chain, web, worker, beat and simulated meters, until Ctrl-C."
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="web server (REST, WebSocket, dashboard)")
        parser.add_argument("--rpc-port", type=int, default=8899, help="local chain JSON-RPC")
        parser.add_argument("--producers", type=int, default=3, help="demo producers (1..20)")
        parser.add_argument("--meters", type=int, default=4, help="meters per producer (1..100)")
        parser.add_argument("--interval", type=float, default=1.0, help="simulator seconds per 15-minute tick")
        parser.add_argument("--backfill", type=float, default=72, help="hours of history the simulators replay")
        parser.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds")
        parser.add_argument("--var-dir", type=Path, default=None, help="ledger, logs, beat schedule (default var/demo)")
        parser.add_argument("--no-ledger", action="store_true", help="a fresh chain every run")
        parser.add_argument(
            "--transport", choices=("rest", "mqtt"), default="rest",
            help="how simulated meters send: REST posts, or MQTT to the broker at MQTT_URL via the ingester",
        )  # fmt: skip

    def handle(self, *args, **options):
        logging.getLogger("httpx").setLevel(logging.WARNING)
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        var_dir = (options["var_dir"] or settings.BASE_DIR / "var" / "demo").resolve()
        supervisor = Supervisor(log_dir=var_dir / "logs")
        failure = None
        try:
            self.preflight(options)
            self.start_system(supervisor, var_dir, options)
            self.watch(supervisor, options)
        except Interrupted:
            self.stdout.write("")
        except ChildFailed as failed:
            self.stderr.write(f"\n{failed}")
            failure = failed
        finally:
            self.shutdown(supervisor, options)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failure is not None:
            raise CommandError(f"{failure.child.name} failed; everything the demo started has been stopped.")

    # 1. ---------------------------------------------------------------------------------------------
    def preflight(self, options) -> None:
        if not 1 <= options["producers"] <= 20 or not 1 <= options["meters"] <= 100:
            raise CommandError("--producers must be 1..20 and --meters 1..100.")
        db = settings.DATABASES["default"]
        problem = demo.postgres_problem(db) or demo.redis_problem(settings.SERVICE.redis_url)
        if not problem and options["transport"] == "mqtt":
            problem = demo.mqtt_problem(settings.MQTT.host, settings.MQTT.port)
        if problem:
            raise CommandError(problem)
        for name, port in (("--port", options["port"]), ("--rpc-port", options["rpc_port"])):
            if demo.port_in_use(options["host"], port):
                raise CommandError(
                    f"Port {port} on {options['host']} is already in use (another demo or server?). "
                    f"Stop it, or choose another with {name}."
                )
        if demo.ensure_database(db):
            self.stdout.write(f"Created database {db['NAME']}.")
        self.stdout.write("Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)

    # 2.-5. -------------------------------------------------------------------------------------------
    def start_system(self, supervisor: Supervisor, var_dir: Path, options) -> None:
        host, port, rpc_port = options["host"], options["port"], options["rpc_port"]
        var_dir.mkdir(parents=True, exist_ok=True)
        rpc_url = f"http://{host}:{rpc_port}"
        web_url = f"http://{host}:{port}"
        env = {
            **os.environ,
            # The database this process checked and migrated, whatever the environment says.
            "DATABASE_URL": demo.database_url(settings.DATABASES["default"]),
            "SOLANA_RPC_URL": rpc_url,
            "PYTHONUNBUFFERED": "1",
        }
        ledger = None if options["no_ledger"] else str(var_dir / "ledger.bin")
        argv = demo.commands(
            host=host, port=port, rpc_port=rpc_port, ledger=ledger, beat_schedule=str(var_dir / "celerybeat-schedule")
        )
        cwd = settings.BASE_DIR

        def start(name: str, **extra_env) -> None:
            child = supervisor.start(name, argv[name], env={**env, **extra_env}, cwd=cwd)
            self.stdout.write(f"Started {name} (pid {child.pid})")

        start("localnet")
        supervisor.wait_until(supervisor.children[-1], lambda: _rpc_healthy(rpc_url), timeout=90)
        self.stdout.write("Running chain_init ...")
        supervisor.run("chain_init", argv["chain_init"], env=env, cwd=cwd, timeout=180)
        start("web", DB_POOL="true")
        supervisor.wait_until(supervisor.children[-1], lambda: _http_ok(f"{web_url}/health"), timeout=90)
        start("worker")
        start("beat")
        mqtt = options["transport"] == "mqtt"
        if mqtt:
            start("ingester")
        accounts = demo.demo_accounts(options["producers"])
        producers = [account for account in accounts if account.role == "producer"]
        # Each run adds its own meters, so it has fresh history to replay (a meter's readings can only go
        # forward, and only back 7 days).
        run = timezone.now().strftime("%m%d%H%M%S")
        for index, account in enumerate(producers):
            command = [
                demo.PYTHON, "manage.py", "simulate_meters", "--url", web_url,
                "--username", account.username, "--password", account.password,
                "--prefix", f"DEMO{run}-{index + 1}", "--meters", str(options["meters"]),
                "--interval", str(options["interval"]), "--backfill", str(options["backfill"]),
                *(["--mqtt", settings.MQTT.url] if mqtt else SIMULATOR_MODES[index % len(SIMULATOR_MODES)]),
            ]  # fmt: skip
            child = supervisor.start(f"simulator-{index + 1}", command, env=env, cwd=cwd, expected_exit=True)
            self.stdout.write(f"Started simulator-{index + 1} (pid {child.pid})")
        self.stdout.write("\nAccounts (passwords are new on every run):")
        for account in accounts:
            self.stdout.write(f"  {account.role:<9} {account.username:<18} {account.password}")
        self.stdout.write(f"Logs: {supervisor.log_dir}/<process>.log   Metrics: {web_url}/metrics")
        self.stdout.write(f"\nDashboard: {web_url}/dashboard/\n")

    # 6. ---------------------------------------------------------------------------------------------
    def watch(self, supervisor: Supervisor, options) -> None:
        started = timezone.now()
        deadline = time.monotonic() + options["duration"] if options["duration"] is not None else float("inf")
        live = sys.stdout.isatty()
        last_printed = 0.0
        while time.monotonic() < deadline:
            dead = supervisor.dead()
            if dead:
                raise ChildFailed(dead[0], f"exited with code {dead[0].process.returncode}")
            line = demo.progress_line(pipeline_snapshot(since=started))
            if live:
                self.stdout.write(f"\r\033[K{line}", ending="")
                self.stdout.flush()
            elif time.monotonic() - last_printed >= 2.0:
                self.stdout.write(line)
                last_printed = time.monotonic()
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))

    def shutdown(self, supervisor: Supervisor, options) -> None:
        # A second Ctrl-C while stopping must not abandon half-stopped children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not supervisor.children:
            return
        self.stdout.write(f"Stopping {len(supervisor.children)} processes ...")
        killed = supervisor.stop_all()
        if killed:
            self.stdout.write("Had to kill: " + ", ".join(child.name for child in killed))
        ports = (options["port"], options["rpc_port"])
        taken = [str(port) for port in ports if demo.port_in_use(options["host"], port)]
        if taken:
            self.stdout.write(f"Stopped, but port(s) {', '.join(taken)} are still in use.")
        else:
            self.stdout.write(f"Stopped. Ports {ports[0]} and {ports[1]} are free.")


def _rpc_healthy(url: str) -> bool:
    answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"}, timeout=2).json()
    return answer.get("result") == "ok"


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200
