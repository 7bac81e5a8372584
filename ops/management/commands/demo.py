"""python manage.py demo: the whole system on this machine, end to end, until Ctrl-C.

1. Check PostgreSQL and Redis answer (else say how to start them). The demo has its own database, DATABASE_URL's
   name + ``_demo`` (``gridtoken_demo``), dropped and created empty on every run together with a fresh chain
   ledger, so no figure of an earlier run (whose mints may live on a chain that no longer exists) mixes in;
   ``--keep`` keeps both, or neither when one of them is missing. Migrate it; a new database is instead a copy
   of ``<name>_template``, which the first migrated run leaves, when the same migration files migrated it
   (their digest is its comment), so later runs start without migrating. This process and every child use
   that database.
2. Start the local chain (ledger under --var-dir) and run chain_init and certificates_chain_init; print the
   mint's address.
3. Start the ASGI server (REST, WebSocket, dashboard), a Celery worker and beat.
4. Create (or reset) the demo operator and producers, each producer with a wallet; print their credentials.
5. Start one meter simulator per producer (signed v1 posts, legacy posts, fleet batches, in turn; or, with
   ``--transport mqtt``, the MQTT ingester and simulators publishing to the broker at MQTT_URL), each with new
   meters replaying --backfill hours of solar production, one 15-minute interval per --interval, then live
   (``simulate_meters --live``): a reading per meter every --interval seconds (at least 1), stamped with the
   real time, its energy from a compressed sun that skips nights (the demo's server runs with
   TOKENIZATION_DUPLICATE_WINDOW_SECS=0 to take readings seconds apart). Passwords reach the simulators through
   their environment (``SIMULATOR_PASSWORD``), never their command line, which ``ps`` shows to everyone.
   Then a day of hourly matching (``ops.demo_matching``): a solar farm's readings and a consumer's, through the
   REST batch door, a PPA and a pool; the beat mints, issues and matches them (docs/MATCHING.md, Walkthrough).
6. Print the dashboard URL and a live progress line computed from the database.
Ctrl-C or SIGTERM (or --duration) stops the simulators, waits up to DRAIN_SECS for the readings in flight to be
minted, compares the chain with the database (``manage.py token_balance``: the mint's supply and each
producer's wallet) and prints it, then stops every other process, newest first, each with its whole process
group, so no port stays taken. Child output goes to --var-dir/logs/<name>.log.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone
from psycopg import sql
from solders.keypair import Keypair

from gridtoken.databases import POSTGRES_NAME_MAX, demo_database_name, using_database
from meters.management.commands.simulate_meters import PASSWORD_ENV
from meters.models import User
from meters.selectors import fleet_totals
from minting.chain.configured import recorded_mint
from ops import demo, demo_matching
from ops.metrics import pipeline_snapshot
from ops.processes import ChildFailed, Supervisor, stop_group

SIMULATOR_MODES = (["--sign"], ["--legacy"], ["--batch"])
DRAIN_SECS = 30.0


def reset_database(db: dict, *, keep: bool) -> str:
    """Drop and create ``db``'s database, or with ``keep`` only create it when missing. A new one is a copy of
    its template when the template was migrated by exactly these migrations ("copied"), else empty ("empty");
    "kept" when ``keep`` found it."""
    with demo._connect_maintenance(db) as conn:  # the one maintenance connection the pre-flight checks use
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone()
        if exists and keep:
            return "kept"
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db["NAME"])))
        template = template_name(db["NAME"])
        if template:
            found = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [template]
            ).fetchone()
            if found and found[0] == migrations_digest():
                with contextlib.suppress(psycopg.Error):  # e.g. someone connected to it: migrate instead
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                            sql.Identifier(db["NAME"]), sql.Identifier(template)
                        )
                    )
                    return "copied"
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
        return "empty"


def template_name(name: str) -> str | None:
    """The migrated copy a new demo database starts from (``<name>_template``), None when too long a name."""
    template = f"{name}_template"
    return template if len(template.encode()) <= POSTGRES_NAME_MAX else None


def migrations_digest() -> str:
    """A digest of every installed app's migration files: a template migrated by others is never copied."""
    digest = hashlib.sha256()
    for app in apps.get_app_configs():
        for path in sorted(Path(app.path, "migrations").glob("*.py")):
            digest.update(f"{app.label}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def save_template(db: dict) -> None:
    """Keep the freshly migrated database as the template of the next runs (with its migrations' digest), so
    they start in a second instead of migrating; without one (no privilege, say) they migrate as before."""
    template = template_name(db["NAME"])
    if not template:
        return
    connections["default"].close()  # a database with sessions cannot be copied
    with demo._connect_maintenance(db) as conn, contextlib.suppress(psycopg.Error):
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(template), sql.Identifier(db["NAME"]))
        )
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(template), sql.Literal(migrations_digest()))
        )


def database_exists(db: dict) -> bool:
    with demo._connect_maintenance(db) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone() is not None


def simulator_command(*, web_url: str, username: str, prefix: str, options, mode: list[str]) -> list[str]:
    """A simulator's argv: nothing secret (its password comes in its environment, the broker's login from
    MQTT_URL there too), since every user on the machine can read a command line."""
    return [
        demo.PYTHON, "manage.py", "simulate_meters", "--url", web_url, "--username", username,
        "--prefix", prefix, "--meters", str(options["meters"]),
        "--interval", str(options["interval"]), "--backfill", str(options["backfill"]), "--live", *mode,
    ]  # fmt: skip


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwind to the clean-up (a BaseException, so no ``except Exception`` swallows it)."""


def _interrupt(signum, frame):
    raise Interrupted


def in_flight_count() -> int:
    """Readings waiting or being minted, from the fleet rollup."""
    fleet = fleet_totals()
    return fleet["pending"] + fleet["minting"]


class Command(BaseCommand):
    help = (
        "Run the whole system locally: chain, web, worker, beat and simulated meters that keep producing, until "
        "Ctrl-C. It uses its own database, DATABASE_URL's name + _demo, emptied on every run with a fresh chain "
        "(--keep keeps both)."
    )
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="web server (REST, WebSocket, dashboard)")
        parser.add_argument("--rpc-port", type=int, default=8899, help="local chain JSON-RPC")
        parser.add_argument("--producers", type=int, default=3, help="demo producers (1..20)")
        parser.add_argument("--meters", type=int, default=4, help="meters per producer (1..100)")
        parser.add_argument(
            "--interval", type=float, default=1.0,
            help="simulator seconds per 15-minute tick: while replaying --backfill, and then live for as long as "
            "the demo runs (at least 1 s; readings stamped now, energy from a compressed sun that skips nights)",
        )  # fmt: skip
        parser.add_argument("--backfill", type=float, default=72, help="hours of history the simulators replay")
        parser.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds")
        parser.add_argument("--var-dir", type=Path, default=None, help="ledger, logs, beat schedule (default var/demo)")
        parser.add_argument(
            "--keep", action="store_true",
            help="keep the demo database (DATABASE_URL's name + _demo) and chain ledger of the last run; by default "
            "both start empty on every run",
        )  # fmt: skip
        parser.add_argument("--no-ledger", action="store_true", help="the chain in memory only (not with --keep)")
        parser.add_argument(
            "--transport", choices=("rest", "mqtt"), default="rest",
            help="how simulated meters send: REST posts, or MQTT to the broker at MQTT_URL via the ingester",
        )  # fmt: skip

    def handle(self, *args, **options):
        logging.getLogger("httpx").setLevel(logging.WARNING)
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        var_dir = (options["var_dir"] or settings.BASE_DIR / "var" / "demo").resolve()
        supervisor = Supervisor(log_dir=var_dir / "logs")
        self.running = False  # the whole system is up: worth draining and checking against the chain
        failure = None
        if options["keep"] and options["no_ledger"]:
            raise CommandError("--keep keeps the chain ledger: it cannot go with --no-ledger.")
        name = demo_database_name(settings.DATABASES["default"]["NAME"])
        try:
            with using_database(name):
                try:
                    self.preflight(var_dir, options)
                    self.start_system(supervisor, var_dir, options)
                    self.watch(supervisor, options)
                except Interrupted:
                    self.stdout.write("")
                except ChildFailed as failed:
                    self.stderr.write(f"\n{failed}")
                    failure = failed
                finally:
                    self.shutdown(supervisor, options, check=failure is None)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failure is not None:
            raise CommandError(f"{failure.child.name} failed; everything the demo started has been stopped.")

    # 1. ---------------------------------------------------------------------------------------------
    def preflight(self, var_dir: Path, options) -> None:
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
        ledger = var_dir / "ledger.bin"
        keep = options["keep"]
        if keep and not (database_exists(db) and ledger.exists()):
            self.stdout.write("--keep: no complete earlier run (database and ledger) to keep, so both start fresh.")
            keep = False
        if not keep:
            for stale in (ledger, ledger.with_name(ledger.name + ".tmp")):
                stale.unlink(missing_ok=True)
        state = reset_database(db, keep=keep)
        if keep:
            self.stdout.write(
                f"Database {db['NAME']}: kept from the last run (--keep), with its chain ledger {ledger}."
            )
        else:
            chain = "an in-memory chain" if options["no_ledger"] else f"a fresh chain ledger {ledger}"
            self.stdout.write(
                f"Database {db['NAME']}: reset, empty for this run, with {chain} "
                "(DATABASE_URL's name + _demo; --keep keeps both next time)."
            )
        if state == "copied":
            self.stdout.write(f"Copied from {template_name(db['NAME'])}, migrated by the same migrations.")
            return
        self.stdout.write("Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        if state == "empty":
            save_template(db)

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
            # Live meters report every few seconds; a real meter's next reading comes 15 minutes later.
            "TOKENIZATION_DUPLICATE_WINDOW_SECS": "0",
            # The matching walkthrough's day is settled from the start: match it within seconds, not a minute.
            "MATCHING_POLLING_SECS": "5",
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
        supervisor.run("certificates_chain_init", argv["certificates_chain_init"], env=env, cwd=cwd, timeout=180)
        self.env, self.rpc_url = env, rpc_url
        self.stdout.write(f"Energy token mint: {recorded_mint()[0]} on {rpc_url}")
        start("web", DB_POOL="true")
        supervisor.wait_until(supervisor.children[-1], lambda: _http_ok(f"{web_url}/health"), timeout=90)
        start("worker")
        start("beat")
        mqtt = options["transport"] == "mqtt"
        if mqtt:
            start("ingester")
        accounts = demo.demo_accounts(options["producers"])
        producers = [account for account in accounts if account.role == "producer"]
        # Wallets for the producers (the simulator would assign one too, but they are printed below), the farm
        # and the consumer (their meters need one).
        for account in [*producers, *(a for a in accounts if a.role in ("farm", "consumer"))]:
            User.objects.filter(username=account.username, wallet_address__isnull=True).update(
                wallet_address=str(Keypair().pubkey())
            )
        wallets = dict(
            User.objects.filter(username__in=[a.username for a in accounts]).values_list("username", "wallet_address")
        )
        # The wallets minted to, which the stop check reads: the producers' and the farm's.
        self.producers = [a.username for a in accounts if a.role in ("producer", "farm")]
        # Each run adds its own meters, so it has fresh history to replay (a meter's readings can only go
        # forward, and only back 7 days).
        run = timezone.now().strftime("%m%d%H%M%S")
        for index, account in enumerate(producers):
            command = simulator_command(
                web_url=web_url, username=account.username, prefix=f"DEMO{run}-{index + 1}", options=options,
                mode=["--mqtt"] if mqtt else SIMULATOR_MODES[index % len(SIMULATOR_MODES)],
            )  # fmt: skip
            child = supervisor.start(
                f"simulator-{index + 1}", command, env={**env, PASSWORD_ENV: account.password}, cwd=cwd,
                expected_exit=True,
            )  # fmt: skip
            self.stdout.write(f"Started simulator-{index + 1} (pid {child.pid})")
        self.running = True
        self.seed_matching(web_url, run)
        self.stdout.write("\nAccounts (passwords are new on every run):")
        for account in accounts:
            wallet = f"  wallet {wallets[account.username]}" if account.role in ("producer", "farm") else ""
            self.stdout.write(f"  {account.role:<9} {account.username:<18} {account.password}{wallet}")
        rpc = "" if rpc_url == settings.CHAIN.rpc_url else f"SOLANA_RPC_URL={rpc_url} "
        self.stdout.write(
            f"Tokens on chain against the database: {demo.balance_command(producers[0].username, env_prefix=rpc)}"
        )
        self.stdout.write(f"Logs: {supervisor.log_dir}/<process>.log   Metrics: {web_url}/metrics")
        self.stdout.write(
            f"The meters replay {options['backfill']:g} h of history, then report live every "
            f"{max(options['interval'], 1.0):g} s (a compressed sun, nights skipped) until you stop the demo with "
            "Ctrl-C, which stops every process it started."
        )
        self.stdout.write(f"\nFront door: {web_url}/ (API docs {web_url}/api/docs/, admin {web_url}/admin/)")
        self.stdout.write(f"Dashboard: {web_url}/dashboard/\n")

    def seed_matching(self, web_url: str, run: str) -> None:
        """The matching walkthrough's day (docs/MATCHING.md): a farm's PPA and pool, a consumer's demand."""
        farm, consumer = (User.objects.get(username=name) for name in ("demo-solar-farm", "demo-consumer-1"))
        try:
            seeded = demo_matching.matching_seed(web_url=web_url, farm=farm, consumer=consumer, run=run,
                                                 now=timezone.now())  # fmt: skip
        except Exception as exc:  # the rest of the demo runs on; say what is missing and why
            self.stderr.write(f"Hourly matching is not set up in this run: {exc}")
            return
        self.stdout.write(
            f"Hourly matching: {seeded.consumer.name} (demo-consumer-1) and the demo-solar-farm's PPA, a day of "
            f"{seeded.readings} readings; matched within a minute (docs/MATCHING.md, Walkthrough)"
        )

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

    def shutdown(self, supervisor: Supervisor, options, *, check: bool) -> None:
        # A second Ctrl-C while stopping must not abandon half-stopped children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not supervisor.children:
            return
        if check and self.running:
            self.stdout.write("Stopping the simulators ...")
            for child in supervisor.children:
                if child.name.startswith("simulator-"):
                    stop_group(child.process, grace=10)
            self.drain()
            self.check_chain()
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

    def drain(self) -> None:
        """Wait (at most DRAIN_SECS) until no reading is waiting or being minted, so the figures settle."""
        deadline = time.monotonic() + DRAIN_SECS
        waiting = in_flight_count()
        if waiting:
            self.stdout.write(f"Waiting up to {DRAIN_SECS:g} s for {waiting} readings in flight to be minted ...")
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting = in_flight_count()
        if waiting:
            self.stdout.write(f"{waiting} readings are still in flight; the figures below may differ by them.")

    def check_chain(self) -> None:
        """The chain against the database (the mint's supply, each wallet minted to), by ``token_balance``."""
        command = [demo.PYTHON, "manage.py", "token_balance", "--supply", *self.producers]
        try:
            result = subprocess.run(  # noqa: S603 (our own command)
                command, cwd=settings.BASE_DIR, env=self.env, capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            self.stdout.write("Chain check: token_balance did not answer within 60 s.")
            return
        self.stdout.write("Chain check (python manage.py token_balance):")
        for line in (result.stdout + result.stderr).splitlines():
            self.stdout.write(f"  {line}")


def _rpc_healthy(url: str) -> bool:
    answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"}, timeout=2).json()
    return answer.get("result") == "ok"


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200
