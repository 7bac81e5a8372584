"""The batch endpoints: per-item results in order, bulk queries, and the same rules as single posts."""

from datetime import timedelta
from decimal import Decimal

import pytest

from meters.models import Meter, MeterReading
from tests.factories import MeterFactory, ReadingFactory, api_key_for
from tests.meters.conftest import rfc3339

BATCH = "/api/v1/meters/batch/readings"
PUBLIC_BATCH = "/api/v1/public/meters/batch/readings"
pytestmark = pytest.mark.django_db


def item(meter, moment, kwh="1", **extra):
    return {"meter_serial": meter.serial, "kwh": kwh, "timestamp": rfc3339(moment), **extra}


@pytest.mark.parametrize("path", [BATCH, PUBLIC_BATCH])
def test_a_batch_stores_every_valid_reading(post, meter, fleet_key, recent, path):
    second = MeterFactory(owner=meter.owner)
    readings = [item(meter, recent + timedelta(minutes=15 * i), kwh=f"{i + 1}.5") for i in range(3)]
    readings.append({"meter_id": str(second.id), "kwh": Decimal("0.25"), "timestamp": rfc3339(recent)})

    response = post(path, {"readings": readings}, key=fleet_key)

    assert response.status_code == 200
    body = response.json()
    assert (body["success_count"], body["failed_count"]) == (4, 0)
    stored = {str(r.id): r for r in MeterReading.objects.all()}
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert all(r["status"] == "accepted" and r["id"] in stored for r in body["results"])
    assert stored[body["results"][1]["id"]].kwh_amount == Decimal("2.5")
    assert stored[body["results"][3]["id"]].meter == second
    assert {r.user_id for r in stored.values()} == {meter.owner_id}
    assert {r.wallet_address for r in stored.values()} == {meter.wallet_address}


def test_results_mix_accepted_duplicate_and_rejected_in_order(post, meter, fleet_key, recent):
    existing = ReadingFactory(meter=meter, reading_timestamp=recent, kwh_amount=Decimal("1"))
    readings = [
        item(meter, recent, kwh="1"),  # replay of the stored reading
        item(meter, recent + timedelta(minutes=15), kwh="1000"),  # out of range
        item(meter, recent + timedelta(minutes=30)),
        {"meter_serial": "GHOST", "kwh": 1},
        item(meter, recent, kwh="2"),  # same timestamp, other kWh
        "not an object",
        item(meter, recent + timedelta(minutes=31)),  # within the window of index 2
    ]

    body = post(BATCH, {"readings": readings}, key=fleet_key).json()

    statuses = [(r["status"], r.get("error", {}).get("code")) for r in body["results"]]
    assert statuses == [
        ("duplicate", None),
        ("rejected", "kwh_out_of_range"),
        ("accepted", None),
        ("rejected", "meter_not_found"),
        ("rejected", "duplicate_reading_conflict"),
        ("rejected", "validation_error"),
        ("rejected", "reading_within_duplicate_window"),
    ]
    assert body["results"][0]["id"] == str(existing.id)
    assert (body["success_count"], body["failed_count"]) == (2, 5)
    assert MeterReading.objects.count() == 2


def test_identical_items_in_one_batch_store_one_row(post, meter, fleet_key, recent):
    body = post(BATCH, {"readings": [item(meter, recent)] * 3}, key=fleet_key).json()

    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate", "duplicate"]
    assert len({r["id"] for r in body["results"]}) == 1
    assert MeterReading.objects.count() == 1


def test_a_device_key_batch_defaults_to_its_meter_and_cannot_name_another(post, meter, device_key, recent):
    other = MeterFactory(owner=meter.owner)
    readings = [{"kwh": 1, "timestamp": rfc3339(recent)}, item(other, recent)]

    body = post(BATCH, {"readings": readings}, key=device_key).json()

    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["error"]["code"] == "forbidden"
    assert MeterReading.objects.get().meter == meter


def test_a_fleet_key_cannot_write_another_accounts_meter(post, fleet_key, recent):
    foreign = MeterFactory()

    body = post(BATCH, {"readings": [item(foreign, recent)]}, key=fleet_key).json()

    assert body["results"][0]["error"]["code"] == "forbidden" and not MeterReading.objects.exists()


def test_items_of_a_suspended_meter_are_rejected(post, meter, fleet_key, recent):
    Meter.objects.filter(pk=meter.pk).update(status=Meter.Status.SUSPENDED)

    body = post(BATCH, {"readings": [item(meter, recent)]}, key=fleet_key).json()

    assert body["results"][0]["error"]["code"] == "meter_suspended" and not MeterReading.objects.exists()


def test_an_item_without_a_meter_from_a_fleet_key_is_rejected(post, fleet_key, recent):
    body = post(BATCH, {"readings": [{"kwh": 1}]}, key=fleet_key).json()

    assert body["results"][0]["error"]["field"] == "meter_serial"


def test_the_batch_needs_an_api_key(post, user_token, recent, meter):
    response = post(BATCH, {"readings": [item(meter, recent)]}, token=user_token)

    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize("path", [BATCH, PUBLIC_BATCH])
def test_the_batch_without_credentials_is_401(post, path):
    response = post(path, {"readings": []})

    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_batch_over_the_maximum_is_refused_whole(post, meter, fleet_key, recent):
    readings = [item(meter, recent + timedelta(minutes=15 * i)) for i in range(10_000)]

    response = post(BATCH, {"readings": readings}, key=fleet_key)

    assert response.status_code == 400 and response.json()["error"]["code"] == "batch_too_large"
    assert not MeterReading.objects.exists()


def test_the_maximum_follows_the_configuration(post, meter, fleet_key, recent, ingest_settings):
    ingest_settings(batch_max=2)

    response = post(BATCH, {"readings": [item(meter, recent)] * 3}, key=fleet_key)

    assert response.json()["error"]["code"] == "batch_too_large"


@pytest.mark.parametrize("body", [[], {"readings": "x"}, {"readings": {"a": 1}}, {"items": []}, '"text"', 5])
def test_a_batch_body_that_is_not_an_object_with_a_readings_list_is_400(post, fleet_key, body):
    response = post(BATCH, body, key=fleet_key)

    assert response.status_code == 400 and response.json()["error"]["field"] == "readings"


def test_an_empty_batch_is_answered_with_zero_counts(post, fleet_key):
    body = post(BATCH, {"readings": []}, key=fleet_key).json()

    assert body == {"success_count": 0, "failed_count": 0, "results": []}


def test_a_large_batch_takes_a_handful_of_queries(post, fleet_key, meter, recent, django_assert_max_num_queries):
    meters = [meter, *MeterFactory.create_batch(4, owner=meter.owner)]
    readings = [item(meters[i % 5], recent - timedelta(minutes=15 * (i // 5)), kwh="0.5") for i in range(500)]
    ReadingFactory(meter=meter, reading_timestamp=recent, kwh_amount=Decimal("0.5"))  # one replay

    # key lookup, last_used_at, meters, lock, window readings, insert, plus savepoint/transaction statements
    with django_assert_max_num_queries(9):
        body = post(BATCH, {"readings": readings}, key=fleet_key).json()

    assert body["success_count"] == 500 and body["results"][0]["status"] == "duplicate"
    assert MeterReading.objects.count() == 500


def test_new_and_rejected_items_are_announced_to_the_owner(post, meter, fleet_key, recent, listen):
    listener = listen(meter.owner)
    readings = [item(meter, recent), item(meter, recent + timedelta(minutes=15), kwh="-101"), {"meter_serial": "X"}]

    post(BATCH, {"readings": readings}, key=fleet_key)

    received = listener.receive(expected=2)
    assert sorted(e["type"] for e in received) == ["meter_reading_received", "meter_reading_validation_failed"]
    failure = next(e for e in received if e["type"] == "meter_reading_validation_failed")
    assert failure["error_reason"].startswith("kwh_out_of_range") and failure["kwh_amount"] == "-101"


def test_batch_items_share_the_single_post_validation(post, meter, fleet_key, recent):
    readings = [
        item(meter, recent, kwh="1.0000000001"),
        item(meter, recent - timedelta(days=8)),
        item(meter, recent, voltage="high"),
    ]

    body = post(BATCH, {"readings": readings}, key=fleet_key).json()

    codes = [r["error"]["code"] for r in body["results"]]
    assert codes == ["kwh_too_precise", "timestamp_too_old", "validation_error"]


def test_keys_of_another_owner_never_write_to_foreign_meters_even_by_id(post, recent):
    mine, foreign = MeterFactory(), MeterFactory()
    _, key = api_key_for(owner=mine.owner)

    body = post(BATCH, {"readings": [{"meter_id": str(foreign.id), "kwh": 1}]}, key=key).json()

    assert body["failed_count"] == 1 and not MeterReading.objects.exists()
