"""Simultaneous posts through real threads, each on its own PostgreSQL connection, with real commits."""

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient
from solders.keypair import Keypair

from meters.models import Meter, MeterReading
from meters.services.meters import meter_register_for_fleet
from tests.factories import MeterFactory, UserFactory, api_key_for
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


def while_a_meter_change_is_uncommitted(change, action):
    """Run ``action`` while another connection holds ``change`` (a meter write) in an open transaction.

    The other connection commits as soon as ``action`` waits for one of its locks, or when ``action``
    is done without waiting: so a writer that locks the meter sees the change, one that does not, not.
    """
    changed, done = threading.Event(), threading.Event()
    failure = []

    def hold():
        try:
            with transaction.atomic():
                change()
                changed.set()
                with connection.cursor() as cursor:
                    while not done.is_set():
                        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                       [connection.connection.info.backend_pid])  # fmt: skip
                        if cursor.fetchone()[0]:
                            break
                        time.sleep(0.02)
        except BaseException as error:  # surfaced in the test's thread
            failure.append(error)
            changed.set()
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert changed.wait(10) and not failure
        return action()
    finally:
        done.set()
        holder.join(10)
        assert not failure, failure


def post_batch(key, meters, at):
    body = {"readings": [{"meter_serial": meter.serial, "kwh": "1", "timestamp": rfc3339(at)} for meter in meters]}
    return APIClient().post("/api/v1/meters/batch/readings", body, format="json", HTTP_X_API_KEY=key)


def test_a_batch_credits_the_wallet_a_fleet_re_registration_sets_while_it_is_stored(moment):
    meter = MeterFactory()
    _, key = api_key_for(owner=meter.owner)
    new_wallet = str(Keypair().pubkey())

    response = while_a_meter_change_is_uncommitted(
        lambda: meter_register_for_fleet(owner=meter.owner, serial=meter.serial, wallet_address=new_wallet),
        lambda: post_batch(key, [meter], moment),
    )

    assert response.status_code == 200 and response.json()["results"][0]["status"] == "accepted"
    assert Meter.objects.get(pk=meter.pk).wallet_address == new_wallet
    assert MeterReading.objects.get(meter=meter).wallet_address == new_wallet


def test_a_batch_item_of_a_meter_suspended_while_it_is_stored_is_rejected(moment):
    meter = MeterFactory()
    other = MeterFactory(owner=meter.owner)
    _, key = api_key_for(owner=meter.owner)

    response = while_a_meter_change_is_uncommitted(
        lambda: Meter.objects.filter(pk=meter.pk).update(status=Meter.Status.SUSPENDED),
        lambda: post_batch(key, [meter, other], moment),
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["success_count"], body["failed_count"]) == (1, 1)
    assert body["results"][0]["error"]["code"] == "meter_suspended"
    assert body["results"][1]["status"] == "accepted"
    assert not MeterReading.objects.filter(meter=meter).exists()
    assert MeterReading.objects.filter(meter=other).count() == 1


def test_a_batch_item_of_a_meter_handed_to_another_account_while_it_is_stored_is_rejected(moment):
    meter = MeterFactory()
    _, key = api_key_for(owner=meter.owner)
    buyer = UserFactory()

    response = while_a_meter_change_is_uncommitted(
        lambda: Meter.objects.filter(pk=meter.pk).update(owner=buyer, wallet_address=buyer.wallet_address),
        lambda: post_batch(key, [meter], moment),
    )

    assert response.json()["results"][0]["error"]["code"] == "forbidden"
    assert not MeterReading.objects.filter(meter=meter).exists()
