import asyncio
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from rest_framework.test import APIClient

from gridtoken import events
from meters.selectors import meter_cache_clear
from meters.services import api_keys
from tests.factories import MeterFactory, UserFactory, api_key_for


@pytest.fixture(autouse=True)
def fresh_caches():
    api_keys.forget()
    meter_cache_clear()
    yield
    api_keys.forget()
    meter_cache_clear()


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def meter(db):
    return MeterFactory()


@pytest.fixture
def device_key(meter):
    return api_key_for(meter=meter)[1]


@pytest.fixture
def fleet_key(meter):
    return api_key_for(owner=meter.owner)[1]


@pytest.fixture
def user_token(api, meter):
    response = api.post("/api/auth/token", {"username": meter.owner.username, "password": "password"}, format="json")
    return response.json()["token"]


@pytest.fixture
def stranger(db):
    return UserFactory()


# The energy picture of a plain positive interval reading, as every reading endpoint returns it.
INTERVAL_FIELDS = {
    "source": "interval",
    "generated_kwh": None,
    "consumed_kwh": None,
    "interval_secs": None,
    "import_register_kwh": None,
    "export_register_kwh": None,
    "flags": [],
    "window_start": None,
}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def recent():
    """A reading timestamp a while ago, on a whole second, so windows either side are free."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


@pytest.fixture
def post(api, django_capture_on_commit_callbacks):
    """POST JSON with optional key/token headers, running on-commit callbacks (events) as a commit would."""

    def send(path, body, *, key=None, token=None, raw=None, content_type="application/json", **headers):
        if key is not None:
            headers["HTTP_X_API_KEY"] = key
        if token is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        data = raw if raw is not None else (body if isinstance(body, (bytes, str)) else _dumps(body))
        with django_capture_on_commit_callbacks(execute=True):
            return api.generic("POST", path, data, content_type=content_type, **headers)

    return send


def _dumps(body) -> str:
    return exact_json(body)


def exact_json(body) -> str:
    """JSON text in which every Decimal is a bare JSON number with exactly its digits (as meters send)."""

    def mark(value):
        if isinstance(value, Decimal):
            return f"\u0000{value}\u0000"
        raise TypeError(type(value))

    return re.sub(r'"\\u0000([^"]*)\\u0000"', r"\1", json.dumps(body, default=mark))


@pytest.fixture
def ingest_settings(settings):
    """Replace fields of the frozen INGEST / TOKENIZATION configs for one test."""

    def change(**fields):
        ingest = {k: v for k, v in fields.items() if hasattr(settings.INGEST, k)}
        tokenization = {k: v for k, v in fields.items() if hasattr(settings.TOKENIZATION, k)}
        settings.INGEST = dataclasses.replace(settings.INGEST, **ingest)
        settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, **tokenization)

    return change


class EventListener:
    """A real channel-layer channel in a user's group: what the WebSocket consumers would receive."""

    def __init__(self, group: str) -> None:
        self.layer = get_channel_layer()
        self.group = group
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group, self.channel)

    def receive(self, expected: int | None = None, timeout: float = 2.0) -> list[dict]:
        """Events delivered so far: waits until ``expected`` arrived, or briefly when expecting none."""

        async def collect():
            received: list[dict] = []
            wait = timeout if expected else 0.3
            while expected is None or len(received) < expected:
                try:
                    message = await asyncio.wait_for(self.layer.receive(self.channel), wait)
                except TimeoutError:
                    break
                received.extend(message["events"])
            return received

        return async_to_sync(collect)()

    def close(self) -> None:
        async_to_sync(self.layer.group_discard)(self.group, self.channel)


@pytest.fixture
def listen():
    listeners = []

    def make(user) -> EventListener:
        listener = EventListener(events.user_group(user.pk))
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.close()
