"""The process-local hub against a private, real Redis that the tests stop and restart."""

import asyncio
import contextlib
import subprocess
import time

import pytest
import redis
from channels.layers import get_channel_layer

from gridtoken import events
from realtime.hub import hub_for
from tests.conftest import free_port
from tests.realtime.conftest import close_code, connected, layer_publish, receive_json, received_event, websocket

pytestmark = pytest.mark.django_db(transaction=True)


class PrivateRedis:
    """A redis-server of our own on a free port, so stopping it disturbs nobody else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> "PrivateRedis":
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def private_redis(settings):
    server = PrivateRedis().start()
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [{"address": server.url}]}}}
    yield server
    server.stop()


async def publish_until_received(ws, event: dict, *, deadline_secs: float = 60) -> dict:
    """Publish ``event`` every half second until the client gets it (the hub re-joins at its own pace)."""
    deadline = time.monotonic() + deadline_secs
    while time.monotonic() < deadline:
        # This process's own connection to the restarted Redis is re-established on the next try.
        with contextlib.suppress(redis.ConnectionError, OSError):
            await layer_publish([event])
        # receive_nothing waits without cancelling the application (a timed-out receive would).
        if not await ws.receive_nothing(timeout=0.5):
            return await receive_json(ws)
    raise AssertionError("the event never arrived after Redis came back")


async def test_connection_stays_open_through_a_redis_restart_and_receives_events_again(private_redis, producer, meter):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        before = received_event(meter, "1")
        await layer_publish([before])
        assert await receive_json(ws) == before

        private_redis.stop()
        feed = hub_for(get_channel_layer(), refresh_secs=60).feeds[events.user_group(producer.pk)]
        await wait_until(lambda: feed.stale, "the hub noticing the outage")
        await asyncio.sleep(2.5)  # let a re-join attempt fail against the stopped server, as in a real outage
        private_redis.start()  # an empty Redis: every group membership is gone

        after = received_event(meter, "2")
        assert await publish_until_received(ws, after) == after
        await ws.send_json_to({"type": "ping"})
        assert (await receive_json(ws))["type"] == "pong"  # the same connection, never closed


async def test_connection_that_closes_while_redis_is_down_is_let_go_cleanly(private_redis, producer):
    group = events.user_group(producer.pk)
    hub = hub_for(get_channel_layer(), refresh_secs=60)
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        private_redis.stop()
    assert group not in hub.feeds


async def wait_until(predicate, what: str, deadline_secs: float = 60) -> None:
    deadline = time.monotonic() + deadline_secs
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen")
        await asyncio.sleep(0.05)


async def test_connection_is_closed_with_1013_when_the_channel_layer_is_unreachable(settings, producer):
    layer = settings.CHANNEL_LAYERS["default"]
    unreachable = {"address": f"redis://127.0.0.1:{free_port()}/0", "socket_connect_timeout": 1}
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [unreachable]}}}
    async with websocket(token=producer.api_token) as ws:
        assert await close_code(ws) == 1013


@pytest.mark.usefixtures("in_memory_layer")
async def test_connections_of_one_group_share_one_layer_subscription_per_process(producer, meter):
    layer = get_channel_layer()
    group = events.user_group(producer.pk)
    async with websocket(token=producer.api_token) as first, websocket(token=producer.api_token) as second:
        await connected(first)
        await connected(second)
        assert len(layer.groups[group]) == 1
        event = received_event(meter)
        await layer_publish([event])
        assert await receive_json(first) == event
        assert await receive_json(second) == event
    assert group not in layer.groups  # the last connection out discarded the subscription


@pytest.mark.usefixtures("in_memory_layer")
async def test_hub_is_one_per_event_loop_and_layer():
    layer = get_channel_layer()
    assert hub_for(layer, refresh_secs=60) is hub_for(layer, refresh_secs=60)


@pytest.mark.usefixtures("in_memory_layer")
async def test_leaving_a_group_one_never_joined_changes_nothing():
    hub = hub_for(get_channel_layer(), refresh_secs=60)

    class Member:
        def push(self, frames):
            raise AssertionError("never called")

    await hub.leave("user.nobody", Member())
    assert hub.feeds == {}


@pytest.mark.usefixtures("in_memory_layer")
async def test_messages_of_other_types_on_the_group_are_ignored(producer, meter):
    layer = get_channel_layer()
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await layer.group_send(events.user_group(producer.pk), {"type": "something.else", "events": [{"x": 1}]})
        event = received_event(meter)
        await layer_publish([event])
        assert await receive_json(ws) == event
        await asyncio.sleep(0)


@pytest.mark.timeout(30)
async def test_a_reader_stops_when_cancelled_even_if_its_read_fails_with_a_connection_error():
    """redis-py can turn the cancellation of a blocked read into ConnectionError("Connection closed by
    server"); the reader must still stop, or a cancelled subscription retries forever."""
    from realtime.hub import Hub

    class Layer:
        reads = 0

        async def new_channel(self):
            return "specific.abc!def"

        async def group_add(self, group, channel):
            pass

        async def group_discard(self, group, channel):
            pass

        async def receive(self, channel):
            self.reads += 1
            try:
                await asyncio.Event().wait()  # blocked, as BZPOPMIN is
            except asyncio.CancelledError:
                raise redis.ConnectionError("Connection closed by server.") from None

    class Member:
        def push(self, frames):
            raise AssertionError("nothing is published")

    layer, member = Layer(), Member()
    hub = Hub(layer, refresh_secs=60)
    await hub.join("operators", member)
    reader = hub.feeds["operators"].reader
    await asyncio.sleep(0)
    await hub.leave("operators", member)

    await asyncio.wait({reader}, timeout=5)
    assert reader.cancelled() and layer.reads == 1
