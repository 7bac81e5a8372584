"""Property tests (Hypothesis) for the device doors added for issue 23: whatever a device sends as a plug's
``ENERGY.Total`` / ``TotalStartTime`` / ``Time``, a local time with its zone, or the bridge's signed value, the
parser answers a reading body or a typed refusal (``ApplicationError``, ``Ignored``), never anything else.
Payload shapes: Tasmota docs "Power Monitoring" (tele/<topic>/SENSOR ENERGY); the bridge's
``canonical_sign_value`` (numbers, or text ``str::parse::<f64>`` reads)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtoken.exceptions import ApplicationError, ValidationFailed
from meters import formats
from meters.parsers import loads_exact
from meters.timestamps import parse_local_timestamp
from meters.validation import parse_reading
from protocols import bridge
from tests.meters.conftest import exact_json
from tests.meters.extreme import SPECIAL_TEXT, scalars, values

FAST = settings(max_examples=150, deadline=None, database=None)
ZONES = st.sampled_from([*sorted(available_timezones() - {"Factory"})[::7], "Europe/Berlin", "Australia/Lord_Howe"])
WALL = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1))


@FAST
@given(total=values, started=scalars, time=scalars | WALL.map(lambda w: w.isoformat()), zone=ZONES)
def test_a_plug_message_is_a_reading_body_or_a_typed_refusal(total, started, time, zone):
    payload = {"Time": time, "ENERGY": {"Total": total, "TotalStartTime": started, "Today": total}}
    try:
        text = exact_json(payload).encode()
    except (TypeError, ValueError):
        return  # not JSON at all (a float NaN): the broker's bytes would be malformed_json
    try:
        body = formats.reading_body("tasmota", text, serial="P", received_at=timezone.now(), timezone=zone)
    except (ApplicationError, formats.Ignored):
        return
    item = parse_reading(body, kwh_key="kwh", timestamp_key="timestamp", timestamp_required=True, now=timezone.now())
    assert item.error is None or isinstance(item.error, ApplicationError)
    assert item.error is not None or item.registers is not None


@FAST
@given(wall=WALL, zone=ZONES)
def test_a_local_time_has_one_instant_or_two_that_render_as_it(wall, zone):
    first, second, nonexistent = parse_local_timestamp(wall.isoformat(), "timestamp", ZoneInfo(zone))
    tz = ZoneInfo(zone)
    if second is not None:
        assert timedelta(0) < second - first <= timedelta(hours=3)
    for moment in (first, second):
        if moment is not None and not nonexistent:
            assert moment.astimezone(tz).replace(tzinfo=None) == wall
    assert first.tzinfo is UTC or first.utcoffset() == timedelta(0)


@FAST
@given(text=st.text(max_size=50) | st.sampled_from(SPECIAL_TEXT), zone=ZONES)
def test_any_text_as_a_local_time_is_read_or_refused_naming_the_field(text, zone):
    try:
        parse_local_timestamp(text, "timestamp", ZoneInfo(zone))
    except ValidationFailed as error:
        assert error.field == "timestamp"


@FAST
@given(
    signed=st.dictionaries(
        st.sampled_from(["kwh", "energy_consumed", "energy_generated", bridge.IMPORT_WH, bridge.EXPORT_WH]),
        scalars | st.sampled_from(SPECIAL_TEXT),
        max_size=5,
    )
)
def test_the_bridges_signed_forms_are_built_or_absent_never_an_error(signed):
    try:  # as the door reads it: JSON text through loads_exact (ints and Decimals, never floats)
        payload = loads_exact(exact_json({"timestamp": "2026-01-20T10:07:30+00:00", **signed}))
    except (TypeError, ValueError):
        return  # not JSON (a float NaN): malformed_json at the door

    forms = bridge.signed_messages(payload, device_id="D")

    assert forms is None or all(form.message.startswith(b"D:") for form in forms[:2])
