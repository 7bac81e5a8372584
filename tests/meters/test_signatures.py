"""Meter signatures: the canonical message, base58/base64 signatures, and when they are checked."""

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from solders.keypair import Keypair

from meters import signatures
from meters.models import MeterReading
from tests.factories import MeterFactory, api_key_for
from tests.meters.conftest import rfc3339

SUBMIT = "/api/meters/submit-reading"


def test_the_canonical_message_fixes_timestamp_and_kwh_formats():
    moment = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)

    assert signatures.canonical_message(serial="M-1", reading_timestamp=moment, kwh=Decimal("1.5")) == (
        b"gridtoken:v1:M-1:2025-03-01T12:00:05Z:1.500000000"
    )
    with_fraction = moment.replace(microsecond=120)
    assert signatures.canonical_message(serial="M-1", reading_timestamp=with_fraction, kwh=Decimal("25")) == (
        b"gridtoken:v1:M-1:2025-03-01T12:00:05.000120Z:25.000000000"
    )


def test_the_canonical_timestamp_is_in_utc():
    from datetime import timezone

    moment = datetime(2025, 3, 1, 19, 0, tzinfo=timezone(timedelta(hours=7)))

    assert signatures.canonical_timestamp(moment) == "2025-03-01T12:00:00Z"


@pytest.mark.parametrize("text", ["", "abc", "0OIl" * 22, "=" * 88, base64.b64encode(b"x" * 63).decode()])
def test_text_that_is_no_signature_does_not_verify(text):
    key = Keypair()

    assert signatures.decode_signature(text) is None
    assert not signatures.verify(public_key=str(key.pubkey()), signature=text, message=b"m")


def test_a_bad_public_key_does_not_verify():
    key = Keypair()
    signature = str(key.sign_message(b"m"))

    assert not signatures.verify(public_key="nope", signature=signature, message=b"m")


@pytest.fixture
def signed_meter(db):
    keypair = Keypair()
    meter = MeterFactory(public_key=str(keypair.pubkey()))
    return meter, keypair, api_key_for(meter=meter)[1]


def sign(keypair, meter, moment, kwh):
    message = signatures.canonical_message(serial=meter.serial, reading_timestamp=moment, kwh=Decimal(kwh))
    return keypair.sign_message(message)


@pytest.mark.parametrize("encoding", ["base58", "base64"])
def test_a_correctly_signed_reading_is_stored_with_its_signature(post, signed_meter, recent, encoding):
    meter, keypair, key = signed_meter
    signature = sign(keypair, meter, recent, "2.5")
    text = str(signature) if encoding == "base58" else base64.b64encode(bytes(signature)).decode()
    data = {"kwh_amount": "2.50", "reading_timestamp": rfc3339(recent), "meter_signature": text}

    response = post(SUBMIT, data, key=key)

    assert response.status_code == 201
    assert MeterReading.objects.get().meter_signature == text


@pytest.mark.parametrize(
    ("signed_kwh", "signed_offset", "sent_kwh"),
    [("2.5", 0, "2.6"), ("2.5", 1, "2.5")],
)
def test_a_signature_over_other_values_is_invalid(post, signed_meter, recent, signed_kwh, signed_offset, sent_kwh):
    meter, keypair, key = signed_meter
    signature = sign(keypair, meter, recent + timedelta(seconds=signed_offset), signed_kwh)
    data = {"kwh_amount": sent_kwh, "reading_timestamp": rfc3339(recent), "meter_signature": str(signature)}

    response = post(SUBMIT, data, key=key)

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_signature"
    assert not MeterReading.objects.exists()


def test_a_signature_of_another_meter_is_invalid(post, signed_meter, recent):
    meter, _, key = signed_meter
    impostor = Keypair()
    data = {
        "kwh_amount": "1",
        "reading_timestamp": rfc3339(recent),
        "meter_signature": str(sign(impostor, meter, recent, "1")),
    }

    assert post(SUBMIT, data, key=key).json()["error"]["code"] == "invalid_signature"


def test_a_meter_with_a_key_must_sign(post, signed_meter, recent):
    _, _, key = signed_meter

    response = post(SUBMIT, {"kwh_amount": "1", "reading_timestamp": rfc3339(recent)}, key=key)

    assert response.json()["error"]["code"] == "signature_required" and not MeterReading.objects.exists()


def test_an_unsigned_meter_stores_any_signature_text_as_sent(post, meter, device_key, recent):
    data = {"kwh_amount": "1", "reading_timestamp": rfc3339(recent), "meter_signature": "firmware-v2 sig ~~ not base58"}

    response = post(SUBMIT, data, key=device_key)

    assert response.status_code == 201
    assert MeterReading.objects.get().meter_signature == "firmware-v2 sig ~~ not base58"


def test_when_signatures_are_required_an_unsigned_reading_is_refused(post, meter, device_key, recent, ingest_settings):
    ingest_settings(signature_required=True)

    response = post(SUBMIT, {"kwh_amount": "1", "reading_timestamp": rfc3339(recent)}, key=device_key)

    assert response.json()["error"]["code"] == "signature_required"


def test_when_required_a_meter_without_a_key_cannot_be_verified(post, meter, device_key, recent, ingest_settings):
    ingest_settings(signature_required=True)
    data = {"kwh_amount": "1", "reading_timestamp": rfc3339(recent), "meter_signature": "x"}

    response = post(SUBMIT, data, key=device_key)

    assert response.json()["error"]["code"] == "invalid_signature" and not MeterReading.objects.exists()


def test_a_v1_reading_without_timestamp_cannot_carry_a_valid_signature(post, signed_meter, recent):
    meter, keypair, key = signed_meter
    data = {"kwh": "1", "meter_signature": str(sign(keypair, meter, recent, "1"))}

    response = post(f"/api/v1/meters/{meter.serial}/readings", data, key=key)

    assert response.json()["error"]["code"] == "invalid_signature"
    assert "must carry its timestamp" in response.json()["error"]["message"]


def test_signed_batch_items_are_verified_one_by_one(post, signed_meter, recent):
    meter, keypair, key = signed_meter
    good = {"kwh": "1", "timestamp": rfc3339(recent), "meter_signature": str(sign(keypair, meter, recent, "1"))}
    later = recent + timedelta(minutes=15)
    bad = {"kwh": "2", "timestamp": rfc3339(later), "meter_signature": str(sign(keypair, meter, later, "3"))}

    body = post("/api/v1/meters/batch/readings", {"readings": [good, bad]}, key=key).json()

    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["error"]["code"] == "invalid_signature"
    assert MeterReading.objects.count() == 1
