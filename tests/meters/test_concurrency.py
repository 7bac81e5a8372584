"""Simultaneous posts through real threads, each on its own PostgreSQL connection, with real commits."""

import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from rest_framework.test import APIClient

from meters.models import MeterReading
from tests.factories import MeterFactory, api_key_for
from tests.meters.conftest import rfc3339

pytestmark = pytest.mark.django_db(transaction=True)


def post_at_once(requests: list[tuple[str, dict, str]]) -> list:
    """Send every (path, body, key) from its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(requests))
    responses = [None] * len(requests)

    def send(index, path, body, key):
        client = APIClient()
        try:
            barrier.wait()
            responses[index] = client.post(path, body, format="json", HTTP_X_API_KEY=key)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i, *request)) for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


@pytest.fixture
def moment():
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def test_twenty_identical_posts_create_one_reading(moment):
    meter = MeterFactory()
    _, key = api_key_for(meter=meter)
    body = {"kwh_amount": "1.25", "reading_timestamp": rfc3339(moment)}

    responses = post_at_once([("/api/meters/submit-reading", body, key)] * 20)

    assert MeterReading.objects.filter(meter=meter).count() == 1
    stored = MeterReading.objects.get(meter=meter)
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert {r.json()["id"] for r in responses} == {str(stored.id)}
    assert sum(r.json()["duplicate"] for r in responses) == 19


def test_simultaneous_posts_inside_one_window_store_only_one(moment):
    meter = MeterFactory()
    _, key = api_key_for(meter=meter)
    bodies = [{"kwh_amount": "1", "reading_timestamp": rfc3339(moment + timedelta(seconds=30 * i))} for i in range(10)]
    requests = [("/api/meters/submit-reading", body, key) for body in bodies]

    responses = post_at_once(requests)

    assert MeterReading.objects.filter(meter=meter).count() == 1
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 9
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"reading_within_duplicate_window"}


def test_overlapping_batches_never_store_two_readings_inside_a_window(moment):
    meters = MeterFactory.create_batch(3)
    owner = meters[0].owner
    for meter in meters[1:]:
        meter.owner = owner
        meter.save()
    _, key = api_key_for(owner=owner)

    def batch(shift_seconds):
        order = list(reversed(meters)) if shift_seconds else meters  # differing meter orders in the bodies
        at = [moment + timedelta(minutes=15 * i, seconds=shift_seconds) for i in range(4)]
        return {
            "readings": [{"meter_serial": m.serial, "kwh": "1", "timestamp": rfc3339(t)} for m in order for t in at]
        }

    responses = post_at_once([("/api/v1/meters/batch/readings", batch(shift), key) for shift in (0, 60, 120, 0)])

    assert all(r.status_code == 200 for r in responses)
    for meter in meters:
        times = sorted(MeterReading.objects.filter(meter=meter).values_list("reading_timestamp", flat=True))
        assert len(times) == 4
        assert all(later - earlier >= timedelta(minutes=15) for earlier, later in itertools.pairwise(times))
    # One batch wins all twelve; the others are rejected, except the winner's identical twin (replays).
    winning_shift = (MeterReading.objects.first().reading_timestamp - moment).seconds % 900
    expected = 24 if winning_shift == 0 else 12
    assert sum(r.json()["success_count"] for r in responses) == expected
