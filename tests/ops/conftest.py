import socket
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from gridtoken import observability
from meters.models import DeadLetter, Meter, MeterReading, User
from minting.models import MintBatch, MintingControl
from protocols import status as mqtt_status

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


@pytest.fixture
def exported_metrics(db, client, rpc_at, closed_port_url) -> dict[str, set[str]]:
    """Every sample name ``/metrics`` exports (``_bucket``, ``_count`` ... included) -> its label names, with
    each metric that appears only once something happened made to appear."""

    def clear_mqtt() -> None:
        keys = (mqtt_status.REGISTRY_KEY, mqtt_status.COUNTS_KEY, mqtt_status.HEARTBEAT_PREFIX + "ingest-a")
        observability.redis_client().delete(*keys)

    clear_mqtt()
    rpc_at(f"http://{closed_port_url}")
    observability.readings_rejected(["validation_error"])  # the counter has series once something is rejected
    mqtt_status.ingester_count(received=1, refused={"validation_error": 1})  # likewise
    observability.internal_errors("mqtt")  # likewise; the dead letters gauge once one waits
    DeadLetter.objects.create(fingerprint="f" * 64, door="mqtt", topic="t", payload=b"", status="quarantined")
    # The lag is reported while a live ingester reports one.
    mqtt_status.ingester_heartbeat(name="ingest-a", connected=True, broker="mqtt://mosquitto:1883", lag_seconds=0.1)
    # The fee payer's balance is reported once a worker has read it at a mint build.
    MintingControl.objects.create(id=1, auto_mint_enabled=True, fee_payer_lamports=1_000_000_000)
    # The RPC providers' figures appear while a worker reports them, their errors once one was met.
    observability.rpc_providers_report([{"number": 1, "state": "in", "code": "", "lag_slots": 0}])
    observability.rpc_provider_error(1, "rpc_unavailable")
    response = client.get("/metrics")
    assert response.status_code == 200
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    yield exported
    clear_mqtt()
    observability.redis_client().delete(observability.RPC_ERRORS_KEY, observability.RPC_STATES_KEY)
