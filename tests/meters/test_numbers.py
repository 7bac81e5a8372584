"""The bounded number reader (``meters.numbers``) and every parser built on it, driven with extreme values: the
only outcomes are a bounded exact value or a ``ValidationFailed`` naming the field, never another exception."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridtoken.exceptions import ApplicationError, ValidationFailed
from meters import formats
from meters.numbers import MAX_DIGITS, MAX_EXPONENT, decimal_places, read_integer, read_number, shift
from meters.parsers import loads_exact
from meters.registers import registers_from_body
from meters.validation import KWH_QUANTUM, parse_reading
from tests.meters.conftest import exact_json
from tests.meters.extreme import SPECIAL_TEXT, number_text, scalars, values

FAST = settings(max_examples=150, deadline=None, database=None)
LIMIT = Decimal(10) ** 9


def bounded(amount: Decimal) -> bool:
    _, digits, exponent = amount.as_tuple()
    return amount.is_finite() and len(digits) <= MAX_DIGITS and -MAX_EXPONENT <= exponent <= MAX_EXPONENT


@FAST
@given(value=values, strings=st.booleans(), signed=st.booleans(), below=st.booleans())
def test_the_reader_returns_a_bounded_number_or_refuses_naming_the_field(value, strings, signed, below):
    try:
        amount = read_number(value, "x", limit=LIMIT, below=below, signed=signed, strings=strings, range_code="r")
    except ValidationFailed as refused:
        assert refused.field == "x" and refused.code in ("validation_error", "r")
        return
    assert type(amount) is Decimal and bounded(amount)
    assert abs(amount) < LIMIT if below else abs(amount) <= LIMIT
    assert signed or amount >= 0
    assert not (amount.is_zero() and amount.is_signed())
    # Whatever follows the reader cannot raise: the default context's arithmetic on a bounded number.
    assert abs(amount).quantize(KWH_QUANTUM) >= 0 and amount + amount == 2 * amount


@FAST
@given(text=number_text)
def test_every_number_within_the_bounds_is_read_exactly_as_sent(text):
    sent = Decimal(text)
    if not bounded(sent):
        with pytest.raises(ValidationFailed):
            read_number(sent, "x")
        return
    assert read_number(sent, "x").as_tuple() == (sent.copy_abs() if sent.is_zero() else sent).as_tuple()
    assert read_number(text, "x", strings=True) == sent


@pytest.mark.parametrize("text", [t for t in SPECIAL_TEXT if "n" in t.lower() and "0x" not in t], ids=str)
def test_nan_and_infinity_in_every_spelling_are_refused(text):
    with pytest.raises(ValidationFailed) as refused:
        read_number(text, "kwh", strings=True, range_code="kwh_out_of_range")
    assert refused.value.code == "kwh_out_of_range" and refused.value.field == "kwh"
    with pytest.raises(ValidationFailed):
        read_number(Decimal(text), "kwh")


@pytest.mark.parametrize("value", [True, False, None, 1.5, "1.5", [1], {"v": 1}], ids=repr)
def test_a_json_number_field_refuses_bools_floats_strings_and_containers(value):
    with pytest.raises(ValidationFailed) as refused:
        read_number(value, "voltage")
    assert refused.value.as_dict() == {"code": "validation_error", "message": "Must be a number.", "field": "voltage"}


def test_numeric_strings_are_read_as_decimal_reads_them_within_the_text_bound():
    assert read_number(" 1.5 ", "kwh", strings=True) == Decimal("1.5")
    assert read_number("-0", "kwh", strings=True).as_tuple() == Decimal("0").as_tuple()
    for refused in ("1_000", "\u0661\u0662", "0x10", "1" * 101, ""):
        with pytest.raises(ValidationFailed):
            read_number(refused, "kwh", strings=True)


def test_the_bounds_are_inclusive_at_their_edges():
    edge = Decimal((0, (9,) * MAX_DIGITS, MAX_EXPONENT))
    assert read_number(edge, "x") == edge and read_number(edge.copy_negate(), "x") == edge.copy_negate()
    assert read_number(Decimal(1).scaleb(-MAX_EXPONENT), "x") == Decimal(1).scaleb(-MAX_EXPONENT)
    assert read_number(10**MAX_DIGITS - 1, "x") == 10**MAX_DIGITS - 1
    for past in (shift(edge, 1), Decimal(1).scaleb(-MAX_EXPONENT - 1), Decimal("1" * (MAX_DIGITS + 1)), 10**MAX_DIGITS):
        with pytest.raises(ValidationFailed):
            read_number(past, "x")


@FAST
@given(value=scalars)
def test_integers_are_json_integers_within_their_range(value):
    try:
        assert read_integer(value, "zone_id", minimum=-10, maximum=10) in range(-10, 11)
    except ValidationFailed as refused:
        assert refused.field == "zone_id"
        assert type(value) is not int or not -10 <= value <= 10


@FAST
@given(amount=number_text.map(Decimal), places=st.integers(-12, 12))
def test_shift_moves_the_point_exactly_and_places_are_counted_on_the_tuple(amount, places):
    try:
        amount = read_number(amount, "x")
    except ValidationFailed:
        return
    assert shift(shift(amount, places), -places).as_tuple() == amount.as_tuple()
    plain = format(amount, "f")
    assert decimal_places(amount) == (len(plain.rstrip("0").split(".")[1]) if "." in plain else 0)


# --- Every format parser and every reading body, at the parser level ----------------------------------------------

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
STAMP = (NOW - timedelta(hours=1)).isoformat()
# Where each format carries its numbers; ``{}`` marks the slot the extreme value goes into.
SHAPES = {
    "gridtoken": [
        {"kwh": "{}", "timestamp": STAMP},
        {"kwh": 1, "voltage": "{}", "timestamp": STAMP},
        {"kwh": 1, "energy_generated": "{}", "energy_consumed": "{}", "timestamp": STAMP},
        {"registers": {"1.8.0": "{}", "2.8.1": "{}", "2.8.2": "{}"}, "timestamp": STAMP},
        {"kwh": 1, "zone_id": "{}", "interval_seconds": "{}", "timestamp": STAMP},
        {"WH": "{}", "WH_SF": "{}", "timestamp": STAMP},
        {"sampledValue": [{"measurand": "Energy.Active.Export.Register", "value": "{}",
                           "unitOfMeasure": {"unit": "kWh", "multiplier": "{}"}}], "timestamp": STAMP},
    ],
    "tasmota": [{"Time": "2026-03-01T11:00:00", "SML": {"Total_in": "{}", "Total_out": "{}"}}],
    "shelly": [{"total_act": "{}", "total_act_ret": "{}"}],
    "shelly-rpc": [{"method": "NotifyStatus", "params": {"ts": "{}", "emdata:0": {"total_act": "{}"}}},
                   {"method": "NotifyStatus", "params": {"ts": 1772362800, "em1data:0": {"total_act_energy": "{}"}}}],
}  # fmt: skip
CASES = [(fmt, shape) for fmt, shapes in SHAPES.items() for shape in shapes]


def filled(shape: object, value: object) -> object:
    if shape == "{}":
        return value
    if isinstance(shape, dict):
        return {key: filled(item, value) for key, item in shape.items()}
    if isinstance(shape, list):
        return [filled(item, value) for item in shape]
    return shape


@pytest.mark.parametrize(("fmt", "shape"), CASES, ids=[f"{fmt}-{i}" for i, (fmt, _) in enumerate(CASES)])
@settings(max_examples=40, deadline=None, database=None)
@given(value=values)
def test_every_format_parser_gives_a_reading_or_an_application_error(fmt, shape, value):
    payload = exact_json(filled(shape, value)).encode()  # NaN/Infinity bare, as a device might
    try:
        body = formats.reading_body(fmt, payload, serial="M-1", received_at=NOW, timezone="Europe/Berlin")
    except (formats.Ignored, ApplicationError):
        return
    item = parse_reading(body, kwh_key="kwh", timestamp_key="timestamp", timestamp_required=True, now=NOW)
    assert item.error is None or isinstance(item.error, ApplicationError)
    if item.error is None:
        assert item.kwh is not None or item.registers is not None


@FAST
@given(registers=st.dictionaries(st.sampled_from(["1.8.0", "1.8.1", "1.8.2", "2.8.0", "2.8.3", "1.8.0*255"]), scalars))
def test_register_totals_are_exact_kwh_below_the_column_or_invalid_register(registers):
    try:
        found = registers_from_body({"registers": registers})
    except ApplicationError as refused:
        assert refused.code == "invalid_register"
        return
    for total in (found.import_kwh, found.export_kwh):
        assert total is None or (Decimal(0) <= total < Decimal(10) ** 15 and decimal_places(total) <= 9)


@FAST
@given(text=number_text | st.sampled_from(SPECIAL_TEXT))
def test_the_json_parser_reads_any_number_literal_or_refuses_it_as_malformed(text):
    try:
        parsed = loads_exact(f'{{"n": {text}}}')
    except ValueError:
        return  # the DRF parser and the MQTT formats answer this as 400 malformed_json
    assert type(parsed["n"]) in (int, Decimal)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_a_reading_body_with_any_value_in_any_numeric_field_is_parsed_or_refused(value):
    for name in ("kwh", "kwh_amount", "voltage", "latitude", "energy_generated", "zone_id", "interval_seconds"):
        body = {"meter_serial": "M-1", "kwh": "1.5", "timestamp": STAMP, name: value}
        item = parse_reading(body, kwh_key="kwh", timestamp_key="timestamp", timestamp_required=True, now=NOW)
        if item.error is not None:
            assert item.error.field is not None
        else:
            assert item.kwh is not None and bounded(item.kwh)
