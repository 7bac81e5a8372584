"""The aggregator-bridge envelope's numbers (OBIS energies, plain energies, kwh, telemetry, the signed value) driven
with extreme values at the parser level: a reading body or an ``ApplicationError`` naming the field, never a crash.
The REST doors themselves are driven in tests/meters/test_number_endpoints.py."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtoken.exceptions import ApplicationError
from meters.parsers import loads_exact
from meters.validation import parse_reading
from protocols import bridge
from tests.meters.conftest import exact_json
from tests.meters.extreme import values

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
STAMP = (NOW - timedelta(hours=1)).isoformat()
SLOTS = (
    "kwh", "energy_generated", "energy_consumed", bridge.IMPORT_WH, bridge.EXPORT_WH, *bridge.IMPORT_TARIFFS[:2],
    *bridge.OBIS_TELEMETRY, "voltage", "zone_code",
)  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(payload=st.dictionaries(st.sampled_from(SLOTS), values, min_size=1, max_size=4), item=st.booleans())
def test_a_bridge_payload_with_any_numbers_is_a_reading_body_or_refused(payload, item):
    try:  # as the door reads it: JSON text written by a device, parsed exactly (a NaN, a float sNaN are not JSON)
        payload = loads_exact(exact_json({"timestamp": STAMP, **payload}))
    except ValueError:
        return
    try:
        if item:
            reading = bridge.reading_from_item({"device_id": "MTR-0042", **payload})
        else:
            reading = bridge.reading_from_payload(payload, device_id="MTR-0042")
    except ApplicationError as refused:
        assert refused.field is not None
        return
    parsed = parse_reading(reading.body, kwh_key="kwh", timestamp_key="timestamp", timestamp_required=True, now=NOW)
    if parsed.error is None:
        assert parsed.kwh is not None and abs(parsed.kwh) < Decimal(10) ** 9


@pytest.mark.parametrize("code", [bridge.IMPORT_WH, bridge.IMPORT_TARIFFS[0]])
@pytest.mark.parametrize("number", [Decimal("1e999999999"), Decimal("1e23"), Decimal("-1e999999999"), 10**400])
def test_an_obis_energy_past_the_columns_range_is_refused_naming_its_code(code, number):
    with pytest.raises(ApplicationError) as refused:
        bridge.reading_from_payload({"timestamp": STAMP, code: number}, device_id="MTR-0042")

    assert (refused.value.code, refused.value.field) == ("validation_error", code)


def test_obis_tariffs_are_summed_exactly_and_cut_to_nine_places_only_past_them():
    payload = {"timestamp": STAMP, bridge.IMPORT_TARIFFS[0]: Decimal("1e-400"), bridge.IMPORT_TARIFFS[1]: 1250}

    body = bridge.reading_from_payload(payload, device_id="MTR-0042").body

    assert body["energy_consumed"] == Decimal("1.250000000") and body["kwh"] == Decimal("-1.25")
    exact = bridge.reading_from_payload({"timestamp": STAMP, bridge.IMPORT_WH: Decimal("400.5")}, device_id="M").body
    assert str(exact["energy_consumed"]) == "0.4005"


@pytest.mark.parametrize("number", [10**400, Decimal("1e999999999"), Decimal("-1e999999999"), Decimal("1e-999999999")])
def test_the_signed_json_form_of_a_number_past_f64_is_written_as_serde_json_writes_it(number):
    payload = {"timestamp": STAMP, "kwh": 1, "voltage": number}

    messages = [form.message for form in bridge.signed_messages(payload, device_id="MTR-0042")]

    assert messages is not None and messages[0].startswith(b"MTR-0042:1:")
    expected = "0.0" if isinstance(number, Decimal) and number.adjusted() < 0 else "null"
    assert f'"voltage":{expected}'.encode() in messages[2]
