"""events.publish / events.emit -> Redis channel layer -> the consumers of the real ASGI application."""

import os

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from gridtoken import events
from meters.models import MeterReading
from tests.realtime.conftest import connected, receive_json, websocket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def redis_layer(settings):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"


def reading_emitted(people, meter, kwh: str, *, commit: bool = True) -> MeterReading:
    """Create a reading and emit its event the way services do: inside the write's transaction."""

    class RolledBack(Exception):
        pass

    try:
        with transaction.atomic():
            reading = people.reading(meter, kwh)
            events.emit([events.reading_received(reading)])
            if not commit:
                raise RolledBack
    except RolledBack:
        pass
    return reading


async def test_published_event_reaches_its_owner_and_operators_and_nobody_else(
    producer, neighbour, operator, meter, neighbour_meter, people
):
    async with (
        websocket(token=producer.api_token) as mine,
        websocket(token=neighbour.api_token) as theirs,
        websocket(token=operator.api_token) as ops,
    ):
        for ws in (mine, theirs, ops):
            await connected(ws)
        reading = await sync_to_async(people.reading)(meter, "3.5")
        await sync_to_async(events.publish)([events.reading_received(reading)])
        got = await receive_json(mine)
        assert (got["type"], got["reading_id"], got["kwh_amount"]) == ("meter_reading_received", str(reading.pk), "3.5")
        assert await receive_json(ops) == got
        # The neighbour's next frame is their own later event, so the producer's never reached them.
        own = await sync_to_async(people.reading)(neighbour_meter, "1")
        await sync_to_async(events.publish)([events.reading_received(own)])
        assert (await receive_json(theirs))["reading_id"] == str(own.pk)
        assert (await receive_json(ops))["reading_id"] == str(own.pk)


async def test_emitted_event_arrives_after_its_transaction_committed(producer, meter, people):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        reading = await sync_to_async(reading_emitted)(people, meter, "2")
        got = await receive_json(ws)
        assert got["reading_id"] == str(reading.pk)
        assert await sync_to_async(MeterReading.objects.filter(pk=reading.pk).exists)()


async def test_event_of_a_rolled_back_transaction_is_never_delivered(producer, meter, people):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        lost = await sync_to_async(reading_emitted)(people, meter, "7", commit=False)
        kept = await sync_to_async(reading_emitted)(people, meter, "8")
        assert (await receive_json(ws))["reading_id"] == str(kept.pk)
        assert not await sync_to_async(MeterReading.objects.filter(pk=lost.pk).exists)()


async def test_batch_event_reaches_operators_but_not_users(producer, operator, meter, people):
    batch = events.batch_completed(batch_id="b-9", total_readings=1, successful_mints=1, failed_mints=0)
    async with websocket(token=producer.api_token) as mine, websocket(token=operator.api_token) as ops:
        await connected(mine)
        await connected(ops)
        await sync_to_async(events.publish)([batch])
        assert await receive_json(ops) == batch
        reading = await sync_to_async(people.reading)(meter, "1")
        await sync_to_async(events.publish)([events.reading_received(reading)])
        assert (await receive_json(mine))["type"] == "meter_reading_received"


async def test_minted_event_carries_the_signature_and_integer_token_amount(producer, meter, people):
    reading = await sync_to_async(people.reading)(meter, "1.25")
    reading.status, reading.minted, reading.mint_tx_signature, reading.token_amount = (
        "minted",
        True,
        "Sig1",
        1_250_000_000,
    )
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await sync_to_async(events.publish)([events.tokens_minted(reading, meter_serial=meter.serial)])
        got = await receive_json(ws)
    assert (got["type"], got["transaction_signature"], got["tokens_minted"]) == ("tokens_minted", "Sig1", 1_250_000_000)


def publish_in_forked_child(event: dict) -> int:
    """A forked process (a Celery pool child) publishes through a loop of its own, not its parent's."""
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return into pytest
        code = 1
        try:
            events.publish([event])
            code = 0 if events._publisher().pid == os.getpid() else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


async def test_publisher_loop_is_reused_in_a_process_and_replaced_in_a_forked_child(producer, meter, people):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        first = await sync_to_async(people.reading)(meter, "1")
        await sync_to_async(events.publish)([events.reading_received(first)])
        assert (await receive_json(ws))["reading_id"] == str(first.pk)
        loop = events._publisher().loop

        second = await sync_to_async(people.reading)(meter, "2")
        assert await sync_to_async(publish_in_forked_child)(events.reading_received(second)) == 0
        assert (await receive_json(ws))["reading_id"] == str(second.pk)
        assert events._publisher().loop is loop and loop.is_running()


def test_publishing_with_redis_down_never_fails_the_caller(settings, caplog, producer, meter, people):
    from channels.layers import channel_layers

    from tests.conftest import free_port

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }
    channel_layers.backends.clear()
    try:
        events.publish([events.reading_received(people.reading(meter, "1"))])
    finally:
        channel_layers.backends.clear()
    assert "event publish failed" in caplog.text
