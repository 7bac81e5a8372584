"""UUIDv7 ids (gridtoken/ids.py): the RFC 9562 layout, order by time, and the readings that carry them."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from gridtoken.ids import uuid7, uuid7_from, uuid7_sql
from meters.models import MeterReading
from meters.selectors import Caller
from meters.services.batch import readings_submit_batch
from tests.factories import MeterFactory, ReadingFactory, api_key_for

MS = st.integers(min_value=0, max_value=2**48 - 1)
RANDOM = st.integers(min_value=0, max_value=2**74 - 1)


def assert_v7(value: uuid.UUID) -> None:
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.hex[12] == "7"
    assert value.hex[16] in "89ab"


@given(ms=MS, random=RANDOM)
def test_layout_keeps_the_time_and_every_random_bit(ms, random):
    value = uuid7_from(ms, random)
    assert_v7(value)
    assert value.int >> 80 == ms
    rand_a, rand_b = (value.int >> 64) & 0xFFF, value.int & (2**62 - 1)
    assert (rand_a << 62) | rand_b == random


@given(a=st.tuples(MS, RANDOM), b=st.tuples(MS, RANDOM))
def test_ids_sort_by_time_then_random_bits(a, b):
    assert (uuid7_from(*a) < uuid7_from(*b)) == (a < b)


def test_one_process_never_goes_down_and_carries_the_clock():
    before = datetime.now(UTC).timestamp() * 1000
    ids = [uuid7() for _ in range(20_000)]  # many in one millisecond: the counter
    after = datetime.now(UTC).timestamp() * 1000
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for value in (ids[0], ids[-1]):
        assert_v7(value)
        assert before - 1 <= value.int >> 80 <= after + 1


@pytest.mark.django_db
def test_sql_expression_makes_the_same_layout():
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {uuid7_sql('1765000000123')} FROM generate_series(1, 200)")
        ids = [row[0] for row in cursor.fetchall()]
    assert len(set(ids)) == 200
    for value in ids:
        assert_v7(value)
        assert value.int >> 80 == 1765000000123


@pytest.mark.django_db
def test_readings_are_stored_with_time_ordered_ids(client):
    meter = MeterFactory()
    _, key = api_key_for(meter=meter)
    now = timezone.now().replace(microsecond=0)
    single = client.post(
        f"/api/v1/meters/{meter.serial}/readings",
        {"kwh": "1.5", "timestamp": now.isoformat()},
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )
    assert single.status_code == 201, single.content
    batch = readings_submit_batch(
        caller=Caller(user_id=meter.owner_id, scope="fleet", key_id=uuid.uuid4()),
        readings=[
            {"meter_serial": meter.serial, "kwh": "1", "timestamp": (now - timedelta(hours=i)).isoformat()}
            for i in (1, 2)
        ],
        now=now,
    )
    assert batch["failed_count"] == 0, batch
    orm = ReadingFactory(meter=meter)
    stored = list(MeterReading.objects.values_list("id", flat=True))
    assert len(stored) == 4
    for value in stored:
        assert_v7(value)
    assert orm.id == max(stored)  # made last
