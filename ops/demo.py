"""The pieces of ``python manage.py demo``: pre-flight checks, the process commands, accounts, progress.

The commands here are the deployment's commands too: docker-compose.yml runs the same programs with the
same arguments (tests/ops/test_deployment.py holds the two together).
"""

from __future__ import annotations

import secrets
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import redis
from django.conf import settings
from psycopg import sql

from meters.models import User

PYTHON = sys.executable


def typed_python() -> str:
    """This interpreter as a person types it at the repository's root, for the commands the demo prints: a bare
    ``python`` outside the virtualenv lacks the project's packages (``No module named 'environ'``)."""
    path = Path(PYTHON)
    try:
        return str(path.relative_to(settings.BASE_DIR))
    except ValueError:
        return shlex.quote(PYTHON)


def balance_command(who: str, *, env_prefix: str = "") -> str:
    """The ``token_balance`` command the demo prints, runnable verbatim from the repository's root."""
    return f"DEBUG=true {env_prefix}{typed_python()} manage.py token_balance --demo {shlex.quote(who)}"


POSTGRES_HELP = """\
PostgreSQL is not reachable at {where} ({reason}).
Start it, then run the demo again:
  docker compose up -d db redis                                        # with Docker
  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start   # a local Debian/Ubuntu cluster
  (or set DATABASE_URL to a server you have)"""

REDIS_HELP = """\
Redis is not reachable at {where} ({reason}).
Start it, then run the demo again:
  docker compose up -d db redis                                        # with Docker
  redis-server --daemonize yes --port 6379                             # a local redis-server
  (or set REDIS_URL to a server you have)"""


MQTT_HELP = """\
The MQTT broker is not reachable at {where} ({reason}); --transport mqtt needs one.
Start it, then run the demo again:
  mosquitto -d                                                         # a local Mosquitto (anonymous, port 1883)
  (or set MQTT_URL to a broker you have)"""


def mqtt_problem(host: str, port: int) -> str | None:
    """Why the broker cannot be used, or None (a TCP connect: the ingester itself reports the MQTT session)."""
    try:
        socket.create_connection((host, port), timeout=3).close()
        return None
    except OSError as exc:
        return MQTT_HELP.format(where=f"{host}:{port}", reason=str(exc) or type(exc).__name__)


def _where(db: dict) -> str:
    return f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"


def _connect_maintenance(db: dict):
    return psycopg.connect(
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        connect_timeout=3,
        autocommit=True,
    )


def postgres_problem(db: dict) -> str | None:
    """None when PostgreSQL answers, else the message that says how to bring it up."""
    try:
        with _connect_maintenance(db):
            return None
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return POSTGRES_HELP.format(where=_where(db), reason=reason)


def redis_problem(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        where = url.split("@")[-1].split("://")[-1]
        return REDIS_HELP.format(where=where, reason=str(exc) or type(exc).__name__)
    finally:
        client.close()


def ensure_database(db: dict) -> bool:
    """Create the configured database when it does not exist; True when it was created."""
    with _connect_maintenance(db) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
        return True


def database_url(db: dict) -> str:
    """A ``DATABASE_URL`` for exactly the database ``db`` (Django's settings dict) names, for child processes."""
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    options = {key: value for key, value in (db.get("OPTIONS") or {}).items() if isinstance(value, str | int)}
    query = f"?{urlencode(options)}" if options else ""
    host = db.get("HOST") or "localhost"
    return f"postgres://{credentials}{host}:{db.get('PORT') or 5432}/{quote(db['NAME'], safe='')}{query}"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def commands(*, host: str, port: int, rpc_port: int, ledger: str | None, beat_schedule: str) -> dict[str, list[str]]:
    """Every long-running process of the system, as the demo starts it (name -> argv)."""
    localnet = [PYTHON, "manage.py", "localnet", "--host", host, "--port", str(rpc_port)]
    if ledger:
        localnet += ["--ledger", ledger]
    return {
        "localnet": localnet,
        "chain_init": [PYTHON, "manage.py", "chain_init"],
        "certificates_chain_init": [PYTHON, "manage.py", "certificates_chain_init"],
        "web": [PYTHON, "-m", "uvicorn", "gridtoken.asgi:application", "--host", host, "--port", str(port)],
        "worker": [PYTHON, "-m", "celery", "-A", "gridtoken", "worker", "--loglevel", "INFO"],
        "beat": [PYTHON, "-m", "celery", "-A", "gridtoken", "beat", "--loglevel", "INFO", "--schedule", beat_schedule],
        "ingester": [PYTHON, "manage.py", "ingest_mqtt"],
    }


@dataclass(frozen=True)
class Account:
    role: str
    username: str
    password: str


def demo_accounts(producers: int) -> list[Account]:
    """The demo operator and producers, the solar farm and the consumer of hourly matching
    (``ops.demo_matching``), created or reset with fresh passwords (shown once per run)."""
    accounts = [Account("operator", "demo-operator", secrets.token_urlsafe(9))]
    accounts += [Account("producer", f"demo-producer-{i}", secrets.token_urlsafe(9)) for i in range(1, producers + 1)]
    accounts += [Account("farm", "demo-solar-farm", secrets.token_urlsafe(9))]
    accounts += [Account("consumer", "demo-consumer-1", secrets.token_urlsafe(9))]
    for account in accounts:
        user = User.objects.filter(username=account.username).first() or User(username=account.username)
        user.is_staff = user.is_superuser = account.role == "operator"
        user.set_password(account.password)
        user.save()
    return accounts


def progress_line(snapshot: dict) -> str:
    p95 = snapshot["p95_secs"]
    latency = "-" if p95 is None else f"{p95:.1f} s"
    return (
        f"submitted {snapshot['submitted']} | minted {snapshot['minted']} | recorded {snapshot['recorded']} | "
        f"pending {snapshot['pending']} | "
        f"failed {snapshot['failed']} | p95 submit-to-mint {latency}"
    )
