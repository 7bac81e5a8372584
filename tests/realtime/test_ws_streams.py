"""Who receives which event, and what a connection's filter lets through (in-memory layer)."""

import pytest

from gridtoken import events
from tests.realtime.conftest import connected, layer_publish, receive_json, received_event, websocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("in_memory_layer")]


def batch_event() -> dict:
    return events.batch_completed(batch_id="b-1", total_readings=2, successful_mints=2, failed_mints=0, signature="S")


async def test_user_receives_their_own_reading_event_as_one_frame(producer, meter):
    event = received_event(meter, "2.25")
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await layer_publish([event])
        assert await receive_json(ws) == event
        assert await ws.receive_nothing(timeout=0.05)


async def test_a_list_of_events_becomes_one_frame_per_event_in_order(producer, meter):
    batch = [received_event(meter, kwh) for kwh in ("1", "2", "3")]
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await layer_publish(batch)
        assert [await receive_json(ws) for _ in batch] == batch


async def test_user_never_receives_another_users_events(producer, meter, neighbour_meter):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        # The neighbour's event goes first: had it been routed here, it would be the next frame.
        await layer_publish([received_event(neighbour_meter, "9")])
        await layer_publish([received_event(meter, "1")])
        frame = await receive_json(ws)
        assert (frame["user_id"], frame["meter_serial"]) == (str(producer.pk), meter.serial)
        assert await ws.receive_nothing(timeout=0.05)


async def test_users_never_receive_batch_events(producer, meter):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await layer_publish([batch_event(), received_event(meter)])
        assert (await receive_json(ws))["type"] == "meter_reading_received"
        assert await ws.receive_nothing(timeout=0.05)


async def test_operator_receives_every_users_events_and_batch_events(operator, meter, neighbour_meter):
    published = [received_event(meter), received_event(neighbour_meter), batch_event()]
    async with websocket(token=operator.api_token) as ws:
        await connected(ws)
        await layer_publish(published)
        assert [await receive_json(ws) for _ in published] == published


@pytest.fixture
def operator_meter(people, operator):
    return people.meter(operator, serial="SM-OPERATOR-1")


async def test_operator_receives_their_own_events_exactly_once(operator, operator_meter):
    event = received_event(operator_meter)
    async with websocket(token=operator.api_token) as ws:
        await connected(ws)
        await layer_publish([event, batch_event()])
        assert await receive_json(ws) == event
        assert (await receive_json(ws))["type"] == "batch_minting_completed"  # not a second copy of the event
        assert await ws.receive_nothing(timeout=0.05)


async def test_two_connections_of_one_user_both_receive_the_event(producer, meter):
    event = received_event(meter)
    async with websocket(token=producer.api_token) as phone, websocket("/ws/events/", token=producer.api_token) as web:
        await connected(phone)
        await connected(web)
        await layer_publish([event])
        assert await receive_json(phone) == event
        assert await receive_json(web) == event


async def test_event_type_filter_lets_only_those_types_through(producer, meter):
    reading = received_event(meter)
    failed = events.validation_failed(user_id=producer.pk, meter_serial=meter.serial, error_reason="too_large")
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "event_types": ["meter_reading_validation_failed"]})
        assert (await receive_json(ws))["filters"]["event_types"] == ["meter_reading_validation_failed"]
        await layer_publish([reading, failed])
        assert await receive_json(ws) == failed
        assert await ws.receive_nothing(timeout=0.05)


async def test_meter_filter_matches_serials_or_ids(producer, meter, second_meter):
    first, second = received_event(meter), received_event(second_meter)
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "meters": [second_meter.serial]})
        await receive_json(ws)
        await layer_publish([first, second])
        assert await receive_json(ws) == second
        await ws.send_json_to({"type": "subscribe", "meters": [str(meter.pk)]})
        await receive_json(ws)
        await layer_publish([second, first])
        assert await receive_json(ws) == first
        assert await ws.receive_nothing(timeout=0.05)


async def test_min_amount_filter_compares_decimals_exactly(producer, meter):
    small, exact, large = (received_event(meter, kwh) for kwh in ("0.999999999", "1.000000000", "12.5"))
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "min_amount": "1"})
        assert (await receive_json(ws))["filters"]["min_amount"] == "1"
        await layer_publish([small, exact, large])
        assert await receive_json(ws) == exact
        assert await receive_json(ws) == large
        assert await ws.receive_nothing(timeout=0.05)


async def test_min_amount_as_a_json_number_is_read_without_a_float(producer, meter):
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_to(text_data='{"type": "subscribe", "min_amount": 0.10000000000000000001}')
        assert (await receive_json(ws))["filters"]["min_amount"] == "0.10000000000000000001"
        await layer_publish([received_event(meter, "0.1"), received_event(meter, "0.2")])
        assert (await receive_json(ws))["kwh_amount"] == "0.2"


async def test_operator_filter_keeps_batch_events_that_carry_no_meter(operator, meter, neighbour_meter):
    batch = batch_event()
    async with websocket(token=operator.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "meters": [meter.serial], "min_amount": "1"})
        await receive_json(ws)
        await layer_publish([received_event(neighbour_meter, "5"), received_event(meter, "0.5"), batch])
        assert await receive_json(ws) == batch
        assert await ws.receive_nothing(timeout=0.05)


async def test_empty_subscribe_restores_everything(producer, meter):
    event = received_event(meter)
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        await ws.send_json_to({"type": "subscribe", "event_types": ["tokens_minted"]})
        await receive_json(ws)
        await ws.send_json_to({"type": "subscribe"})
        reply = await receive_json(ws)
        assert reply == {"type": "subscribed", "filters": {"event_types": None, "meters": None, "min_amount": None}}
        await layer_publish([event])
        assert await receive_json(ws) == event


def test_min_amount_filter_drops_an_event_whose_amount_is_not_a_number():
    from decimal import Decimal

    from realtime.filters import EventFilter

    only_large = EventFilter(min_amount=Decimal("1"))
    assert only_large.matches({"type": "tokens_minted", "kwh_amount": "5"})
    assert not only_large.matches({"type": "tokens_minted", "kwh_amount": "lots"})
    assert only_large.matches({"type": "batch_minting_completed"})
