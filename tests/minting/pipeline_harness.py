"""Shared helpers for the pipeline tests: rows, a real chain per test, real Celery workers, the final checks.

Not a test module: the pipeline test files import what they use from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management import call_command
from solders.keypair import Keypair

from meters.models import Meter, MeterReading, User
from minting.chain import ChainClient, kwh_to_base_units
from minting.chain.configured import client_from_settings
from minting.models import MintBatch
from tests.conftest import database_url, wait_until

ROOT = Path(__file__).resolve().parents[2]
_serials = itertools.count(1)
_moments = itertools.count(1)
BASE_MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def new_wallet() -> str:
    return str(Keypair().pubkey())


def make_user(*, staff: bool = False, wallet: str | None = None) -> User:
    n = next(_serials)
    return User.objects.create_user(
        username=f"user{n}-{os.getpid()}-{time.monotonic_ns()}", password="pw-123456789", is_staff=staff,
        wallet_address=wallet,
    )  # fmt: skip


def make_meter(*, owner: User | None = None, wallet: str | None = None) -> Meter:
    owner = owner or make_user()
    return Meter.objects.create(
        serial=f"M-{next(_serials)}-{time.monotonic_ns()}", owner=owner, wallet_address=wallet or new_wallet()
    )


def make_readings(meters: list[Meter], count: int, *, kwh: str | Decimal = "1.5", **fields) -> list[MeterReading]:
    """``count`` readings spread over ``meters`` (round robin), in one insert."""
    readings = []
    for index in range(count):
        meter = meters[index % len(meters)]
        moment = BASE_MOMENT + timedelta(minutes=15 * next(_moments))
        reading = MeterReading(
            user_id=meter.owner_id, meter=meter, wallet_address=meter.wallet_address, kwh_amount=Decimal(kwh),
            mintable_kwh=Decimal(kwh), reading_timestamp=moment, **fields,
        )  # fmt: skip
        readings.append(reading)
    return MeterReading.objects.bulk_create(readings)


@contextlib.contextmanager
def captured_events(*groups: str):
    """Listen on channel-layer groups (the real Redis layer); ``received(group)`` drains what arrived."""
    layer = get_channel_layer()
    channels = {}
    for group in groups:
        channels[group] = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(group, channels[group])
    seen: dict[str, list[dict]] = {}

    async def drain(channel: str) -> list[dict]:
        events = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=1.0)
            except TimeoutError:
                return events
            events.extend(message["events"])

    def received(group: str) -> list[dict]:
        if group not in seen:
            seen[group] = async_to_sync(drain)(channels[group])
        return seen[group]

    try:
        yield received
    finally:
        for group, channel in channels.items():
            async_to_sync(layer.group_discard)(group, channel)


# --- the chain -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Chain:
    url: str
    keypair_path: Path

    def client(self) -> ChainClient:
        return client_from_settings()


def use_chain(settings, localnet, tmp_path: Path) -> Chain:
    """Point this process at ``localnet`` with a fresh authority and a fresh mint (so supply starts at 0)."""
    keypair_path = tmp_path / "authority.json"
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=localnet.url, keypair_path=keypair_path)
    call_command("chain_init", "--new-mint", stdout=open(os.devnull, "w"))  # noqa: SIM115
    return Chain(url=localnet.url, keypair_path=keypair_path)


def set_tokenization(settings, **changes) -> None:
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, **changes)


def assert_minted_exactly_once(client: ChainClient, readings: list[MeterReading]) -> None:
    """Every reading minted once, with its exact amount; balances and supply match the database.

    The supply check is what proves "once": the mint is fresh per test, so any double mint would show up
    as supply above the sum of the readings' token amounts.
    """
    rows = list(MeterReading.objects.filter(id__in=[r.id for r in readings]).select_related("batch"))
    assert len(rows) == len(readings)
    per_wallet: dict[str, int] = defaultdict(int)
    for row in rows:
        assert row.status == MeterReading.Status.MINTED, (row.id, row.status, row.last_error)
        assert row.minted is True
        assert row.token_amount == kwh_to_base_units(row.mintable_kwh)
        assert row.batch is not None and row.batch.status == MintBatch.Status.CONFIRMED
        assert row.mint_tx_signature == row.batch.signature
        per_wallet[row.wallet_address] += row.token_amount
    for wallet, expected in per_wallet.items():
        assert client.token_balance(wallet) == expected, wallet
    total = sum(per_wallet.values())
    assert client.token_supply() == total
    confirmed = MintBatch.objects.filter(status=MintBatch.Status.CONFIRMED)
    assert sum(int(b.total_token_amount) for b in confirmed) == total
    assert not MintBatch.objects.filter(status=MintBatch.Status.SIGNED).exists()


# --- real Celery processes -----------------------------------------------------------------------------


class CeleryProcess:
    """``celery -A gridtoken worker|beat`` as a subprocess against the test database and this Redis."""

    def __init__(self, kind: str, log: Path, env: dict[str, str], args: list[str]) -> None:
        self.kind, self.log, self.env, self.args = kind, log, env, args
        self.process: subprocess.Popen | None = None

    def start(self) -> CeleryProcess:
        command = [sys.executable, "-m", "celery", "-A", "gridtoken", self.kind, "--loglevel=INFO", *self.args]
        handle = open(self.log, "ab")  # noqa: SIM115 (kept open for the subprocess' lifetime)
        # A session of its own: stop() kills the process group, a prefork pool's children with it.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        if self.kind == "worker":
            wait_until(lambda: self.exited() or self.ready(), timeout=60, message="worker ready")
            assert self.ready(), self.output()  # (it may already have died at a crash point, after being ready)
        return self

    def ready(self) -> bool:
        return b" ready." in self.log.read_bytes()

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_killed(self, timeout: float = 120) -> int:
        """Wait for the process to die (a crash point SIGKILLs it); returns its exit code."""
        assert self.process is not None
        self.process.wait(timeout=timeout)
        return self.process.returncode

    def stop(self) -> None:
        """At the end of a test, SIGKILL to the process group: whatever it was doing no longer matters (the broker
        is flushed and the database emptied next), and a warm shutdown (SIGTERM) waits out the task in hand,
        10-13 s a process on a loaded machine. Exactly once across a killed worker is what the crash-point
        tests prove."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(name="celery_processes")
def celery_processes_fixture(transactional_db, tmp_path):
    """Factory for worker/beat subprocesses; all are stopped before the test database is flushed."""
    started: list[CeleryProcess] = []
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    counter = itertools.count(1)

    def start(kind: str = "worker", *, chain: Chain | None = None, env: dict[str, str] | None = None,
              args: list[str] | None = None) -> CeleryProcess:  # fmt: skip
        n = next(counter)
        full_env = {
            **os.environ,
            "DEBUG": "true",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.CELERY_BROKER_URL,
            "TOKENIZATION_TRIGGER_DEBOUNCE_MS": str(settings.TOKENIZATION.trigger_debounce_ms),
            "TOKENIZATION_BATCH_SIZE": str(settings.TOKENIZATION.batch_size),
            # Celery runs Django's system checks as a worker starts (~0.4 s of CPU each, a dozen workers a file).
            # These workers are here for the pipeline; the demo's and CI's runtime check's workers still run them.
            "CELERY_SKIP_CHECKS": "1",
            **({"SOLANA_RPC_URL": chain.url, "SOLANA_KEYPAIR_PATH": str(chain.keypair_path)} if chain else {}),
            **(env or {}),
        }
        if kind == "worker":
            default_args = ["--pool=solo", "-n", f"pipeline{n}@%h", "--without-gossip", "--without-mingle"]
        else:
            default_args = ["--schedule", str(tmp_path / f"beat-schedule-{n}")]
        process = CeleryProcess(kind, tmp_path / f"{kind}{n}.log", full_env, args or default_args)
        started.append(process)  # before it starts: a worker that never gets ready is stopped too
        return process.start()

    yield start
    for process in reversed(started):
        process.stop()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
