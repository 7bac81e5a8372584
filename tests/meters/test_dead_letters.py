"""A bug met by one item of a batch (REST, bridge) is that item's internal_error and a dead letter; the rest is
stored once. Operators list, read, replay (idempotently) and discard dead letters.

No real input triggers an unknown bug, so each test plants one: it wraps a function of the pipeline so that it
raises (or writes a value PostgreSQL refuses) for one marked item only, and leaves every other item to the real
code, database and events."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from gridtoken import observability
from meters.models import DeadLetter, MeterReading
from meters.services import batch
from meters.services.dead_letters import dead_letter_replay
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.meters.conftest import rfc3339

BATCH = "/api/v1/meters/batch/readings"
BRIDGE_BATCH = "/v1/private-network/ingest/batch"
LETTERS = "/api/admin/dead-letters"
MARK = Decimal("7.77")
pytestmark = pytest.mark.django_db


class PlantedBug(RuntimeError):
    """The stand-in for a bug no input can provoke on purpose."""


def item(meter, moment, kwh="1"):
    return {"meter_serial": meter.serial, "kwh": kwh, "timestamp": rfc3339(moment)}


@pytest.fixture
def bug_in(monkeypatch):
    """``bug_in(name)``: ``meters.services.batch.<name>`` raises PlantedBug for the item of kWh MARK."""

    def plant(name: str, marked=lambda args, kwargs: any(getattr(a, "kwh", None) == MARK for a in args)):
        real = getattr(batch, name)

        def planted(*args, **kwargs):
            if marked(args, kwargs):
                raise PlantedBug(f"planted in {name}")
            return real(*args, **kwargs)

        monkeypatch.setattr(batch, name, planted)

    return plant


@pytest.fixture
def internal_errors():
    observability.redis_client().delete(observability.INTERNAL_ERRORS_KEY)
    yield observability.internal_error_counts
    observability.redis_client().delete(observability.INTERNAL_ERRORS_KEY)


@pytest.fixture
def staff():
    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True))
    return client


def stored(meter) -> list[tuple]:
    return sorted(MeterReading.objects.filter(meter=meter).values_list("reading_timestamp", "kwh_amount"))


@pytest.mark.parametrize("stage", ["parse_reading", "assess"])
def test_a_bug_met_by_one_batch_item_is_its_internal_error_and_the_other_items_are_stored(
    post, meter, fleet_key, recent, bug_in, internal_errors, stage, caplog
):
    if stage == "parse_reading":  # before any query: the item's own try
        bug_in(stage, lambda args, kwargs: isinstance(args[0], dict) and args[0].get("kwh") == str(MARK))
    else:  # inside the set-based store: found by bisecting the transaction
        bug_in(stage)
    moments = [recent + timedelta(minutes=15 * n) for n in range(5)]
    readings = [item(meter, moment, kwh=str(MARK) if n == 2 else "1.5") for n, moment in enumerate(moments)]

    response = post(BATCH, {"readings": readings}, key=fleet_key, HTTP_X_REQUEST_ID="req-poison-1")

    body = response.json()
    assert response.status_code == 200 and (body["success_count"], body["failed_count"]) == (4, 1)
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "rejected", "accepted", "accepted"]
    error = body["results"][2]["error"]
    letter = DeadLetter.objects.get()
    assert error["code"] == "internal_error" and error["details"] == {"dead_letter_id": letter.pk}
    assert stored(meter) == [(m, Decimal("1.5")) for n, m in enumerate(moments) if n != 2]  # each once
    assert (letter.door, letter.topic, letter.status, letter.deliveries) == ("rest_batch", BATCH, "pending", 1)
    assert json.loads(bytes(letter.payload)) == readings[2] and letter.meter_serial == meter.serial
    assert letter.error_type.endswith("PlantedBug") and f"planted in {stage}" in letter.error_traceback
    assert letter.request_id == "req-poison-1" and letter.caller["scope"] == "fleet"
    assert internal_errors() == {"rest_batch": 1}
    logged = [r for r in caplog.records if r.name == "meters.dead_letters"]
    assert logged and logged[0].exc_info[0] is PlantedBug and logged[0].dead_letter_id == letter.pk


def test_a_value_postgresql_refuses_in_the_shared_insert_fails_only_its_item(
    post, meter, fleet_key, recent, monkeypatch
):
    real = batch.row_document

    def corrupt(reading, item, shared):  # a negative interval violates the column's CHECK: an IntegrityError
        document = real(reading, item, shared)
        return document.replace('"interval_secs":null', '"interval_secs":-5') if item.kwh == MARK else document

    monkeypatch.setattr(batch, "row_document", corrupt)
    moments = [recent + timedelta(minutes=15 * n) for n in range(8)]
    readings = [item(meter, moment, kwh=str(MARK) if n == 5 else "2") for n, moment in enumerate(moments)]

    body = post(BATCH, {"readings": readings}, key=fleet_key).json()

    assert [r["status"] for r in body["results"]].count("accepted") == 7
    assert body["results"][5]["error"]["code"] == "internal_error"
    assert stored(meter) == [(m, Decimal("2")) for n, m in enumerate(moments) if n != 5]
    assert DeadLetter.objects.get().error_type.endswith("IntegrityError")


def test_a_database_outage_is_still_a_503_and_no_dead_letter(post, meter, fleet_key, recent, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(batch, "assess", down)
    response = post(BATCH, {"readings": [item(meter, recent)]}, key=fleet_key)

    assert response.status_code == 503 and response.json()["error"]["code"] == "database_unavailable"
    assert not DeadLetter.objects.exists() and not MeterReading.objects.exists()


def test_replaying_a_dead_letter_after_the_fix_stores_it_once_and_again_answers_duplicate(
    post, meter, fleet_key, recent, bug_in, monkeypatch, staff
):
    bug_in("assess")
    readings = [item(meter, recent, kwh=str(MARK)), item(meter, recent + timedelta(minutes=15))]
    post(BATCH, {"readings": readings}, key=fleet_key)
    letter = DeadLetter.objects.get()

    still_broken = staff.post(f"{LETTERS}/{letter.pk}/replay").json()
    assert still_broken["status"] == "pending" and still_broken["replay_result"]["error"]["code"] == "internal_error"
    assert DeadLetter.objects.get().deliveries == 2 and len(stored(meter)) == 1

    monkeypatch.undo()  # the fix is deployed
    first = staff.post(f"{LETTERS}/{letter.pk}/replay").json()
    again = staff.post(f"{LETTERS}/{letter.pk}/replay").json()

    assert first["status"] == "replayed" and first["replay_result"]["status"] == "accepted"
    assert again["replay_result"] == {"index": 0, "status": "duplicate", "id": first["replay_result"]["id"]}
    reading = MeterReading.objects.get(pk=first["replay_result"]["id"])
    assert (reading.meter_id, reading.kwh_amount, reading.reading_timestamp) == (meter.id, MARK, recent)
    assert stored(meter) == [(recent, MARK), (recent + timedelta(minutes=15), Decimal("1"))]


def test_a_dead_letter_of_a_revoked_key_is_not_replayed(post, meter, recent, bug_in, monkeypatch):
    key, plaintext = api_key_for(owner=meter.owner)
    bug_in("assess")
    post(BATCH, {"readings": [item(meter, recent, kwh=str(MARK))]}, key=plaintext)
    monkeypatch.undo()
    key.revoked_at = recent
    key.save()

    with pytest.raises(Exception) as refused:
        dead_letter_replay(dead_letter_id=DeadLetter.objects.get().pk, actor="op")
    assert refused.value.code == "replay_caller_revoked" and not MeterReading.objects.exists()


def test_a_bug_in_the_bridge_translation_of_one_item_is_a_bridge_dead_letter(
    post, meter, fleet_key, recent, monkeypatch, staff
):
    from protocols import bridge

    real = bridge.reading_from_item

    def planted(raw):
        if raw.get("kwh") == MARK:
            raise PlantedBug("planted in the bridge translation")
        return real(raw)

    monkeypatch.setattr(bridge, "reading_from_item", planted)
    items = [
        {
            "device_id": meter.serial,
            "kwh": Decimal(n + 1) if n != 1 else MARK,
            "timestamp": rfc3339(recent + timedelta(minutes=15 * n)),
        }
        for n in range(3)
    ]

    results = post(BRIDGE_BATCH, {"protocol": "simulator", "readings": items}, key=fleet_key).json()

    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["error"]["code"] == "internal_error" and results[1]["device_id"] is None
    letter = DeadLetter.objects.get()
    assert (letter.door, letter.topic, letter.meter_serial) == ("bridge", BRIDGE_BATCH, meter.serial)
    assert b'"kwh":7.77' in bytes(letter.payload)  # the number as the bridge sent it
    monkeypatch.undo()
    replayed = staff.post(f"{LETTERS}/{letter.pk}/replay").json()
    assert replayed["status"] == "replayed" and replayed["replay_result"]["status"] == "accepted"
    assert [kwh for _, kwh in stored(meter)] == [Decimal(1), MARK, Decimal(3)]


def test_operators_page_through_dead_letters_by_door_and_status_and_discard_one(db, staff):
    for n in range(5):
        DeadLetter.objects.create(
            fingerprint=f"{n:064d}", door="mqtt" if n % 2 else "rest_batch", topic=f"t/{n}", payload=b"\xff\x00",
            error_type="builtins.RuntimeError",
        )  # fmt: skip

    first = staff.get(LETTERS, {"limit": 2}).json()
    second = staff.get(LETTERS, {"limit": 2, "before": first["next_before"]}).json()
    last = staff.get(LETTERS, {"limit": 2, "before": second["next_before"]}).json()
    ids = [row["id"] for page in (first, second, last) for row in page["data"]]
    assert ids == sorted(DeadLetter.objects.values_list("id", flat=True), reverse=True) and last["next_before"] is None
    mqtt = staff.get(LETTERS, {"door": "mqtt", "status": "pending"}).json()["data"]
    assert [row["topic"] for row in mqtt] == ["t/3", "t/1"]
    detail = staff.get(f"{LETTERS}/{mqtt[0]['id']}").json()
    assert (detail["payload"], detail["payload_encoding"]) == ("/wA=", "base64")

    discarded = staff.post(f"{LETTERS}/{mqtt[0]['id']}/discard").json()
    assert discarded["status"] == "discarded" and DeadLetter.objects.get(pk=mqtt[0]["id"]).status == "discarded"
    refused = staff.post(f"{LETTERS}/{mqtt[0]['id']}/replay")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "dead_letter_discarded"
    assert staff.get(LETTERS, {"status": "discarded"}).json()["data"][0]["id"] == mqtt[0]["id"]
    assert staff.get(f"{LETTERS}/999999").json()["error"]["code"] == "dead_letter_not_found"


def test_dead_letters_are_for_operators_only(db, meter):
    letter = DeadLetter.objects.create(fingerprint="a" * 64, door="mqtt", topic="t", payload=b"{}", error_type="X")
    user = APIClient()
    user.force_authenticate(MeterFactory().owner)

    assert user.get(LETTERS).status_code == 403
    assert user.post(f"{LETTERS}/{letter.pk}/discard").status_code == 403
    assert APIClient().get(LETTERS).status_code == 401
    assert DeadLetter.objects.get().status == "pending"


def test_the_admin_shows_dead_letters_read_only_and_replays_them_through_the_service(
    client, post, meter, fleet_key, recent, bug_in, monkeypatch
):
    bug_in("assess")
    post(BATCH, {"readings": [item(meter, recent, kwh=str(MARK))]}, key=fleet_key)
    monkeypatch.undo()
    letter = DeadLetter.objects.get()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    base = "/admin/meters/deadletter/"

    assert client.get(base).status_code == 200 and client.get(f"{base}add/").status_code == 403
    assert client.post(f"{base}{letter.pk}/change/", {"status": "discarded"}).status_code == 403
    assert client.post(f"{base}{letter.pk}/delete/", {"post": "yes"}).status_code == 403
    assert DeadLetter.objects.get().status == "pending"

    client.post(base, {"action": "replay", "_selected_action": [letter.pk]})

    letter.refresh_from_db()
    assert letter.status == "replayed" and letter.replay_result["status"] == "accepted"
    assert stored(meter) == [(recent, MARK)]
