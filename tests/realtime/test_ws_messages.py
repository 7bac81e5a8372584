"""Client messages: ping, subscribe validation, bad input and throttling (in-memory layer)."""

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from django.urls import re_path

from gridtoken import events
from meters.models import MeterReading, User
from realtime.auth import WebSocketAuthMiddleware
from realtime.consumers import EventsConsumer
from tests.realtime.conftest import close_code, connected, layer_publish, receive_json, received_event, websocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("in_memory_layer")]


class FrozenClock:
    """Time stands still unless the test moves it, so the throttle's arithmetic is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app_with(**consumer_options):
    return WebSocketAuthMiddleware(URLRouter([re_path(r"^ws$", EventsConsumer.as_asgi(**consumer_options))]))


async def test_ping_is_answered_with_pong_echoing_the_id(producer):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "ping", "id": 7})
        pong = await receive_json(ws)
    assert pong["type"] == "pong" and pong["id"] == 7 and pong["server_time"].endswith("Z")


async def test_ping_without_an_id_gets_a_plain_pong(producer):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "ping", "id": True})
        pong = await receive_json(ws)
    assert set(pong) == {"type", "server_time"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "subscribe", "min_amount": NaN}', "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"kind": "ping"}', "invalid_message"),
        ('{"type": 5}', "invalid_message"),
        ('{"type": "mint_now", "reading_id": "x"}', "unknown_type"),
        ('{"type": "ping", "pad": "' + "x" * 17_000 + '"}', "message_too_large"),
    ],
)
async def test_bad_message_gets_an_error_frame_and_the_connection_stays_open(producer, meter, frame, code):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_to(text_data=frame)
        error = await receive_json(ws)
        assert error["type"] == "error" and error["code"] == code and error["message"]
        await ws.send_json_to({"type": "ping"})
        assert (await receive_json(ws))["type"] == "pong"


async def test_binary_frame_gets_an_error_frame(producer):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_to(bytes_data=b"\x00\x01")
        assert (await receive_json(ws))["code"] == "binary_not_supported"


@pytest.mark.parametrize(
    ("subscribe", "field"),
    [
        ({"event_types": "tokens_minted"}, "event_types"),
        ({"event_types": ["tokens_minted", 3]}, "event_types"),
        ({"event_types": ["everything"]}, "event_types"),
        ({"event_types": ["batch_minting_completed"]}, "event_types"),  # operators only
        ({"event_types": ["certificate_held"]}, "event_types"),  # operators only
        ({"meters": "SM-1"}, "meters"),
        ({"meters": [""]}, "meters"),
        ({"meters": ["x" * 65]}, "meters"),
        ({"meters": [f"SM-{n}" for n in range(1001)]}, "meters"),
        ({"min_amount": "-1"}, "min_amount"),
        ({"min_amount": "lots"}, "min_amount"),
        ({"min_amount": "Infinity"}, "min_amount"),
        ({"min_amount": True}, "min_amount"),
        ({"min_amount": [1]}, "min_amount"),
    ],
)
async def test_invalid_filter_is_refused_and_the_previous_filter_stays(producer, meter, subscribe, field):
    event = received_event(meter, "5")
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "event_types": ["meter_reading_received"]})
        await receive_json(ws)
        await ws.send_json_to({"type": "subscribe", **subscribe})
        error = await receive_json(ws)
        assert (error["type"], error["code"], error["field"]) == ("error", "invalid_filter", field)
        await layer_publish([event])
        assert await receive_json(ws) == event


async def test_operator_may_subscribe_to_batch_events(operator):
    async with websocket(token=operator.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "event_types": ["batch_minting_completed", "certificate_held"]})
        assert (await receive_json(ws))["filters"]["event_types"] == ["batch_minting_completed", "certificate_held"]


async def test_a_producer_may_subscribe_to_its_certificate_events(producer):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "event_types": ["certificate_issued", "certificate_changed"]})
        assert (await receive_json(ws))["filters"]["event_types"] == ["certificate_changed", "certificate_issued"]


async def test_client_messages_never_write_to_the_database(producer, meter):
    before = await count_rows()
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        for message in ({"type": "ping"}, {"type": "subscribe", "meters": [meter.serial]}, {"type": "mint"}):
            await ws.send_json_to(message)
            await receive_json(ws)
    assert await count_rows() == before


async def count_rows():
    from asgiref.sync import sync_to_async

    return await sync_to_async(lambda: (User.objects.count(), MeterReading.objects.count()))()


async def test_messages_over_the_rate_get_rate_limited_errors(producer):
    clock = FrozenClock()
    async with websocket(token=producer.api_token, app=app_with(clock=clock)) as ws:
        await connected(ws)
        for _ in range(10):
            await ws.send_json_to({"type": "ping"})
            assert (await receive_json(ws))["type"] == "pong"
        await ws.send_json_to({"type": "ping"})
        error = await receive_json(ws)
        assert (error["type"], error["code"]) == ("error", "rate_limited")
        clock.now += 0.1  # one message's worth of tokens
        await ws.send_json_to({"type": "ping"})
        assert (await receive_json(ws))["type"] == "pong"


async def test_a_client_that_keeps_flooding_is_closed_with_4008(producer):
    clock = FrozenClock()
    async with websocket(token=producer.api_token, app=app_with(clock=clock, flood_strikes=3)) as ws:
        await connected(ws)
        for _ in range(10):
            await ws.send_json_to({"type": "ping"})
            await receive_json(ws)
        for _ in range(3):
            await ws.send_json_to({"type": "ping"})
            assert (await receive_json(ws))["code"] == "rate_limited"
        await ws.send_json_to({"type": "ping"})
        assert await close_code(ws) == 4008


async def test_throttled_client_still_receives_every_event(producer, meter):
    clock = FrozenClock()
    published = [received_event(meter, str(n)) for n in range(1, 31)]
    async with websocket(token=producer.api_token, app=app_with(clock=clock, flood_strikes=100)) as ws:
        await connected(ws)
        for _ in range(15):
            await ws.send_json_to({"type": "ping"})
        replies = [await receive_json(ws) for _ in range(15)]
        assert [r["type"] for r in replies].count("error") == 5
        await layer_publish(published)
        assert [await receive_json(ws) for _ in published] == published


async def test_groups_are_rejoined_so_the_layer_never_expires_a_live_connection(producer):
    layer = get_channel_layer()
    group = events.user_group(producer.pk)
    async with websocket(token=producer.api_token, app=app_with(group_refresh_secs=0.01)) as ws:
        await connected(ws)
        ((channel, joined_at),) = layer.groups[group].items()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if layer.groups[group][channel] > joined_at:
                break
        assert layer.groups[group][channel] > joined_at
    assert group not in layer.groups or channel not in layer.groups[group]


async def test_frames_sent_after_a_refusal_are_ignored():
    async with websocket() as ws:
        assert await close_code(ws) == 4001
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_nothing(timeout=0.05)


def test_unknown_consumer_option_is_a_type_error():
    with pytest.raises(TypeError, match="no option 'colour'"):
        EventsConsumer(colour="blue")


async def test_a_message_type_without_handler_is_a_programming_error():
    with pytest.raises(ValueError, match="no handler"):
        await EventsConsumer().dispatch({"type": "nothing.here"})


async def test_origin_refusal_ignores_a_scope_that_never_connects():
    from realtime.auth import refuse

    sent = []

    async def receive():
        return {"type": "websocket.disconnect", "code": 1001}

    async def send(message):
        sent.append(message)

    await refuse({"type": "websocket"}, receive, send, 4003)
    assert sent == []
