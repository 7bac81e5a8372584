import contextlib
import json
import sys
import types
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

try:
    import daphne.testing  # noqa: F401
except ImportError:
    # channels.testing imports Daphne for ChannelsLiveServerTestCase alone, which we do not use (uvicorn
    # serves GridToken, and the browser test starts it itself); an empty stand-in spares us Twisted.
    sys.modules.setdefault("daphne", types.ModuleType("daphne"))
    sys.modules["daphne.testing"] = types.SimpleNamespace(DaphneProcess=None)

from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from rest_framework.authtoken.models import Token

from gridtoken import events
from gridtoken.asgi import application
from meters.models import Meter, MeterReading, User

IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
async def close_worker_thread_connections():
    """The middleware reads the database in asgiref's worker thread; close that thread's connection after
    each test so the test database can be dropped at the end of the run."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def in_memory_layer(settings):
    """Consumer unit tests run on Channels' in-memory layer; changing the setting resets the layer cache."""
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    return get_channel_layer()


class People:
    """Users, their API tokens and meters, created on demand."""

    def __init__(self) -> None:
        self.count = 0

    def user(self, *, staff: bool = False, active: bool = True, password: str = "correct horse battery") -> User:
        self.count += 1
        name = f"{'operator' if staff else 'producer'}{self.count}"
        user = User.objects.create_user(
            username=name, password=password, is_staff=staff, is_active=active, wallet_address=f"Wallet{name}"
        )
        user.api_token = Token.objects.create(user=user).key
        return user

    def meter(self, owner: User, serial: str | None = None) -> Meter:
        self.count += 1
        return Meter.objects.create(
            serial=serial or f"SM-{self.count:04d}", owner=owner, wallet_address=owner.wallet_address
        )

    def reading(self, meter: Meter, kwh: str = "1.5", **fields) -> MeterReading:
        self.count += 1
        fields.setdefault("reading_timestamp", datetime.now(UTC) - timedelta(minutes=self.count))
        fields.setdefault("mintable_kwh", Decimal(kwh))
        return MeterReading.objects.create(
            user=meter.owner, meter=meter, wallet_address=meter.wallet_address, kwh_amount=Decimal(kwh), **fields
        )


@pytest.fixture
def people(db):
    return People()


# Async tests cannot use the ORM directly, so the cast is created by sync fixtures.
@pytest.fixture
def producer(people):
    return people.user()


@pytest.fixture
def neighbour(people):
    return people.user()


@pytest.fixture
def operator(people):
    return people.user(staff=True)


@pytest.fixture
def meter(people, producer):
    return people.meter(producer, serial="SM-PRODUCER-1")


@pytest.fixture
def second_meter(people, producer):
    return people.meter(producer, serial="SM-PRODUCER-2")


@pytest.fixture
def neighbour_meter(people, neighbour):
    return people.meter(neighbour, serial="SM-NEIGHBOUR-1")


@pytest.fixture
def producer_cookie(producer):
    return session_cookie(producer)


def received_event(meter: Meter, kwh: str = "1.5") -> dict:
    """A meter_reading_received event as the ingestion path builds it, without touching the database."""
    reading = MeterReading(
        user=meter.owner,
        meter=meter,
        wallet_address=meter.wallet_address,
        kwh_amount=Decimal(kwh),
        reading_timestamp=datetime.now(UTC),
    )
    return events.reading_received(reading)


async def layer_publish(event_list: list[dict]) -> None:
    """What ``events.publish`` does, awaited on the test's own loop (publish itself is sync)."""
    layer = get_channel_layer()
    for group, group_events in events.route(event_list).items():
        await layer.group_send(group, {"type": events.LAYER_MESSAGE_TYPE, "events": group_events})


def session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@contextlib.asynccontextmanager
async def websocket(path="/ws", *, token=None, subprotocols=None, headers=None, app=application):
    """A connected WebsocketCommunicator (the real ASGI stack unless ``app`` says otherwise)."""
    if token is not None:
        path = f"{path}?token={token}"
    communicator = WebsocketCommunicator(app, path, headers=headers or [], subprotocols=subprotocols)
    accepted, subprotocol = await communicator.connect(timeout=5)
    communicator.accepted_subprotocol = subprotocol
    assert accepted, f"handshake rejected with {subprotocol}"
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def receive_json(communicator, timeout: float = 5) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def connected(communicator) -> dict:
    greeting = await receive_json(communicator)
    assert greeting["type"] == "connected"
    return greeting


async def close_code(communicator, timeout: float = 5) -> int:
    """The next output must be a close (nothing sent before it); returns its code."""
    output = await communicator.receive_output(timeout=timeout)
    assert output["type"] == "websocket.close", f"expected a close, got {output}"
    return output.get("code")
