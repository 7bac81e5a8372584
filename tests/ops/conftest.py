import socket
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gridtoken import observability
from meters.models import Meter, MeterReading, User
from minting.models import MintBatch

WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


@pytest.fixture(autouse=True)
def clean_redis_counters():
    def clear() -> None:
        client = observability.redis_client()
        client.delete(observability.REJECTED_KEY, observability.WS_PROCESSES_KEY)
        for key in client.scan_iter(observability.WS_COUNT_PREFIX + "*"):
            client.delete(key)

    clear()
    yield
    clear()


@pytest.fixture
def closed_port_url():
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def redis_down(settings, closed_port_url):
    settings.SERVICE = replace(settings.SERVICE, redis_url=f"redis://{closed_port_url}/0")


@pytest.fixture
def rpc_at(settings):
    def point(url: str) -> None:
        settings.CHAIN = replace(settings.CHAIN, rpc_url=url)

    return point


class Rows:
    """Readings and batches written straight to the database, with the timings a test needs."""

    def __init__(self) -> None:
        self.user = User.objects.create_user(username="producer", password="pw-producer-1")
        self.meter = Meter.objects.create(serial="SIM-0001", owner=self.user, wallet_address=WALLET)
        self.now = timezone.now()
        self._minute = 0

    def batch(self, status: str, *, created_ago: float, took: float | None) -> MintBatch:
        created = self.now - timedelta(seconds=created_ago)
        return MintBatch.objects.create(
            status=status,
            signature=f"sig{MintBatch.objects.count():04d}",
            raw_transaction=b"\x01",
            last_valid_block_height=100,
            mint_address=WALLET,
            created_at=created,
            settled_at=None if took is None else created + timedelta(seconds=took),
        )

    def reading(self, status: str = "pending", *, batch=None, tokens=None, submitted_at=None, **fields) -> MeterReading:
        self._minute += 15
        minted = status == "minted"
        return MeterReading.objects.create(
            user=self.user,
            meter=self.meter,
            wallet_address=WALLET,
            kwh_amount=Decimal("1.5"),
            mintable_kwh=Decimal("1.5"),
            reading_timestamp=self.now - timedelta(minutes=self._minute),
            submitted_at=submitted_at or self.now,
            status=status,
            minted=minted,
            mint_tx_signature=batch.signature if minted else None,
            token_amount=tokens,
            batch=batch,
            **fields,
        )


@pytest.fixture
def rows(db):
    return Rows()
