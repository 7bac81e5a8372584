from datetime import timedelta
from decimal import Decimal

import pytest

from meters.models import Meter, MeterReading
from tests.factories import MeterFactory, ReadingFactory, api_key_for, new_wallet
from tests.meters.conftest import INTERVAL_FIELDS, rfc3339

SUBMIT = "/api/meters/submit-reading"
pytestmark = pytest.mark.django_db


def body(meter, moment, kwh="1.5", **extra):
    return {"meter_serial": meter.serial, "kwh_amount": kwh, "reading_timestamp": rfc3339(moment), **extra}


def test_a_reading_is_stored_for_the_meters_owner_and_wallet(post, meter, device_key, recent):
    response = post(SUBMIT, body(meter, recent, kwh="2.25"), key=device_key)

    assert response.status_code == 201
    reading = MeterReading.objects.get()
    assert (reading.meter, reading.user, reading.wallet_address) == (meter, meter.owner, meter.wallet_address)
    assert reading.kwh_amount == Decimal("2.25") and reading.reading_timestamp == recent
    assert reading.status == MeterReading.Status.PENDING and reading.minted is False
    assert response.json() == {
        "id": str(reading.id),
        "user_id": str(meter.owner_id),
        "meter_id": str(meter.id),
        "meter_serial": meter.serial,
        "wallet_address": meter.wallet_address,
        "kwh_amount": "2.250000000",
        "mintable_kwh": "2.250000000",
        "reading_timestamp": rfc3339(recent).replace("Z", ".000000Z"),
        "submitted_at": response.json()["submitted_at"],
        "minted": False,
        "mint_tx_signature": None,
        "status": "pending",
        **INTERVAL_FIELDS,
        "duplicate": False,
    }
    assert response.json()["submitted_at"].endswith("Z")


def test_kwh_sent_as_a_json_number_keeps_every_decimal(post, meter, device_key, recent):
    raw = b'{"kwh_amount": 0.123456789, "reading_timestamp": "%s"}' % rfc3339(recent).encode()
    response = post(SUBMIT, raw, key=device_key)

    assert response.status_code == 201
    assert MeterReading.objects.get().kwh_amount == Decimal("0.123456789")
    assert response.json()["kwh_amount"] == "0.123456789"


def test_a_device_key_needs_no_meter_in_the_body(post, meter, device_key, recent):
    response = post(SUBMIT, {"kwh_amount": 1, "reading_timestamp": rfc3339(recent)}, key=device_key)

    assert response.status_code == 201 and MeterReading.objects.get().meter == meter


def test_a_user_token_submits_for_the_users_own_meter_by_id(post, meter, user_token, recent):
    response = post(
        SUBMIT, {"meter_id": str(meter.id), "kwh_amount": "3", "reading_timestamp": rfc3339(recent)}, token=user_token
    )

    assert response.status_code == 201 and MeterReading.objects.get().user == meter.owner


def test_a_body_wallet_equal_to_the_meters_is_accepted(post, meter, device_key, recent):
    response = post(SUBMIT, body(meter, recent, wallet_address=meter.wallet_address), key=device_key)

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("wallet", "flag"),
    [(new_wallet(), "wallet_mismatch"), ("not-a-wallet-0OIl", "wallet_invalid"), (7, "wallet_invalid")],
    ids=["another-wallet", "not-base58", "a-number"],  # fixed ids: parallel workers must collect the same tests
)
def test_a_body_wallet_is_never_credited_nor_a_reason_to_drop_the_reading(
    post, meter, device_key, recent, wallet, flag
):
    response = post(SUBMIT, body(meter, recent, wallet_address=wallet), key=device_key)

    assert response.status_code == 201
    assert response.json()["flags"] == [flag]
    assert response.json()["wallet_address"] == meter.wallet_address
    stored = MeterReading.objects.get()
    assert (stored.wallet_address, stored.flags, stored.status) == (meter.wallet_address, [flag], "pending")


def test_the_meters_own_wallet_in_the_body_raises_no_flag(post, meter, device_key, recent):
    response = post(SUBMIT, body(meter, recent, wallet_address=meter.wallet_address), key=device_key)

    assert response.json()["flags"] == []


def test_user_id_in_the_body_is_ignored(post, meter, device_key, recent, stranger):
    post(SUBMIT, body(meter, recent, user_id=str(stranger.id)), key=device_key)

    assert MeterReading.objects.get().user == meter.owner


def test_an_identical_replay_answers_200_with_the_stored_reading(post, meter, device_key, recent):
    first = post(SUBMIT, body(meter, recent, kwh="1.5"), key=device_key)
    again = post(SUBMIT, body(meter, recent, kwh="1.500"), key=device_key)

    assert again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["id"] == first.json()["id"]
    assert MeterReading.objects.count() == 1


def test_the_same_timestamp_with_another_kwh_is_a_409(post, meter, device_key, recent):
    first = post(SUBMIT, body(meter, recent, kwh="1.5"), key=device_key)
    response = post(SUBMIT, body(meter, recent, kwh="1.6"), key=device_key)

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "duplicate_reading_conflict"
    assert error["details"] == {"existing_reading_id": first.json()["id"], "existing_kwh_amount": "1.500000000"}
    assert MeterReading.objects.get().kwh_amount == Decimal("1.5")


@pytest.mark.parametrize("seconds", [1, 450, 899, -1, -899])
def test_another_reading_inside_the_window_is_a_409(post, meter, device_key, recent, seconds):
    post(SUBMIT, body(meter, recent), key=device_key)
    response = post(SUBMIT, body(meter, recent + timedelta(seconds=seconds)), key=device_key)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "reading_within_duplicate_window"
    assert MeterReading.objects.count() == 1


def test_fifteen_minute_interval_meters_pass_the_exclusive_window(post, meter, device_key, recent):
    for step in range(4):
        response = post(SUBMIT, body(meter, recent + timedelta(minutes=15 * step)), key=device_key)
        assert response.status_code == 201
    response = post(SUBMIT, body(meter, recent - timedelta(minutes=15)), key=device_key)

    assert response.status_code == 201 and MeterReading.objects.filter(meter=meter).count() == 5


def test_a_zero_window_only_guards_the_same_timestamp(post, meter, device_key, recent, ingest_settings):
    ingest_settings(duplicate_window_secs=0)
    assert post(SUBMIT, body(meter, recent), key=device_key).status_code == 201
    assert post(SUBMIT, body(meter, recent + timedelta(seconds=1)), key=device_key).status_code == 201
    assert post(SUBMIT, body(meter, recent, kwh="9"), key=device_key).status_code == 409


def test_readings_of_other_meters_do_not_conflict(post, meter, device_key, recent):
    other = MeterFactory(owner=meter.owner)
    ReadingFactory(meter=other, reading_timestamp=recent)

    assert post(SUBMIT, body(meter, recent), key=device_key).status_code == 201


def test_an_unknown_meter_is_404(post, fleet_key, recent):
    data = {"meter_serial": "NOPE", "kwh_amount": 1, "reading_timestamp": rfc3339(recent)}
    response = post(SUBMIT, data, key=fleet_key)

    assert response.status_code == 404 and response.json()["error"]["code"] == "meter_not_found"


def test_an_unknown_meter_id_is_404(post, fleet_key, recent, meter):
    data = {"meter_id": "00000000-0000-0000-0000-000000000000", "kwh_amount": 1, "reading_timestamp": rfc3339(recent)}

    assert post(SUBMIT, data, key=fleet_key).json()["error"]["code"] == "meter_not_found"


def test_a_fleet_key_must_name_the_meter(post, fleet_key, recent):
    response = post(SUBMIT, {"kwh_amount": 1, "reading_timestamp": rfc3339(recent)}, key=fleet_key)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "meter_serial"


def test_meter_id_and_serial_naming_different_meters_is_400(post, meter, fleet_key, recent):
    other = MeterFactory(owner=meter.owner)
    response = post(SUBMIT, body(meter, recent, meter_id=str(other.id)), key=fleet_key)

    assert response.status_code == 400 and response.json()["error"]["field"] == "meter_id"
    assert not MeterReading.objects.exists()


def test_a_suspended_meter_is_refused(post, meter, device_key, recent):
    Meter.objects.filter(pk=meter.pk).update(status=Meter.Status.SUSPENDED)

    response = post(SUBMIT, body(meter, recent), key=device_key)

    assert response.status_code == 403 and response.json()["error"]["code"] == "meter_suspended"
    assert not MeterReading.objects.exists()


def test_a_device_key_cannot_submit_for_another_meter(post, meter, device_key, recent):
    other = MeterFactory(owner=meter.owner)

    response = post(SUBMIT, body(other, recent), key=device_key)

    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert not MeterReading.objects.exists()


def test_a_fleet_key_cannot_submit_for_another_accounts_meter(post, fleet_key, recent):
    foreign = MeterFactory()

    response = post(SUBMIT, body(foreign, recent), key=fleet_key)

    assert response.status_code == 403 and not MeterReading.objects.exists()


def test_a_user_cannot_submit_for_another_users_meter(post, user_token, recent):
    foreign = MeterFactory()

    response = post(SUBMIT, body(foreign, recent), token=user_token)

    assert response.status_code == 403 and not MeterReading.objects.exists()


def test_a_fleet_key_submits_for_any_of_its_owners_meters(post, meter, recent):
    second = MeterFactory(owner=meter.owner)
    _, key = api_key_for(owner=meter.owner)

    assert post(SUBMIT, body(meter, recent), key=key).status_code == 201
    assert post(SUBMIT, body(second, recent), key=key).status_code == 201
    assert MeterReading.objects.filter(user=meter.owner).count() == 2


def test_a_new_reading_is_announced_to_the_owner(post, meter, device_key, recent, listen):
    listener = listen(meter.owner)

    response = post(SUBMIT, body(meter, recent, kwh="4.2"), key=device_key)

    [event] = listener.receive(expected=1)
    assert event["type"] == "meter_reading_received"
    assert event["reading_id"] == response.json()["id"]
    assert (event["meter_serial"], event["kwh_amount"]) == (meter.serial, "4.200000000")


def test_a_replay_is_not_announced_again(post, meter, device_key, recent, listen):
    post(SUBMIT, body(meter, recent), key=device_key)
    listener = listen(meter.owner)

    post(SUBMIT, body(meter, recent), key=device_key)

    assert listener.receive() == []


def test_a_rejected_reading_of_a_known_meter_is_announced(post, meter, device_key, recent, listen):
    listener = listen(meter.owner)

    post(SUBMIT, body(meter, recent, kwh="1000"), key=device_key)

    [event] = listener.receive(expected=1)
    assert event["type"] == "meter_reading_validation_failed"
    assert event["meter_serial"] == meter.serial and event["kwh_amount"] == "1000"
    assert event["error_reason"].startswith("kwh_out_of_range:")


def test_a_409_is_announced_as_a_validation_failure(post, meter, device_key, recent, listen):
    post(SUBMIT, body(meter, recent), key=device_key)
    listener = listen(meter.owner)

    post(SUBMIT, body(meter, recent + timedelta(minutes=1)), key=device_key)

    [event] = listener.receive(expected=1)
    assert event["error_reason"].startswith("reading_within_duplicate_window:")


def test_a_submission_for_someone_elses_meter_is_not_announced_to_them(post, device_key, recent, listen):
    foreign = MeterFactory()
    listener = listen(foreign.owner)

    post(SUBMIT, body(foreign, recent), key=device_key)

    assert listener.receive() == []


def test_a_meter_suspended_after_it_was_cached_is_refused_at_once(post, meter, device_key, recent):
    assert post(SUBMIT, body(meter, recent), key=device_key).status_code == 201  # the meter is now cached
    Meter.objects.filter(pk=meter.pk).update(status=Meter.Status.SUSPENDED)  # as an operator elsewhere would

    response = post(SUBMIT, body(meter, recent + timedelta(minutes=15)), key=device_key)

    assert response.status_code == 403 and response.json()["error"]["code"] == "meter_suspended"
    assert MeterReading.objects.count() == 1


def test_a_meter_reactivated_after_it_was_cached_is_accepted_at_once(post, meter, device_key, recent):
    Meter.objects.filter(pk=meter.pk).update(status=Meter.Status.SUSPENDED)
    assert post(SUBMIT, body(meter, recent), key=device_key).status_code == 403  # cached as suspended
    Meter.objects.filter(pk=meter.pk).update(status=Meter.Status.ACTIVE)

    assert post(SUBMIT, body(meter, recent), key=device_key).status_code == 201


def test_a_wallet_changed_after_the_meter_was_cached_gets_the_reading(post, meter, device_key, recent):
    post(SUBMIT, body(meter, recent), key=device_key)
    wallet = new_wallet()
    Meter.objects.filter(pk=meter.pk).update(wallet_address=wallet)

    post(SUBMIT, body(meter, recent + timedelta(minutes=15)), key=device_key)

    assert MeterReading.objects.order_by("reading_timestamp").last().wallet_address == wallet


def test_the_stored_row_has_the_model_defaults(post, meter, device_key, recent):
    response = post(SUBMIT, body(meter, recent), key=device_key)

    reading = MeterReading.objects.get()
    assert (reading.attempts, reading.last_error, reading.token_amount, reading.batch_id) == (0, "", None, None)
    assert reading.next_attempt_at == reading.submitted_at
    assert response.json()["submitted_at"] == reading.submitted_at.isoformat(timespec="microseconds")[:26] + "Z"
