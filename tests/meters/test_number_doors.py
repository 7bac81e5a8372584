"""A number past Decimal's range, on every reading door, is that field's 4xx with a stable code: never a 500,
never a lost batch. Each door is driven with the number as JSON sends it (a bare literal) and as a string."""

from datetime import timedelta

import pytest
from django.utils import timezone

from gridtoken.exceptions import ApplicationError
from meters import formats
from meters.models import MeterReading
from meters.selectors import Caller
from meters.services.batch import readings_submit_batch
from tests.factories import MeterFactory, api_key_for
from tests.meters.test_errors_and_fuzz import assert_error_shape

pytestmark = pytest.mark.django_db

SUBMIT = "/api/meters/submit-reading"
BATCH = "/api/v1/meters/batch/readings"
# Past the default context's Emax (999,999) either side of zero, far below its Etiny, and a million digits.
HUGE = ("1e999999999", "-1e999999999", "1e-999999999", "1" * 10**6 + ".5")
IDS = ("exponent", "negative", "tiny", "million-digits")
# An exponent past libmpdec's own range (~10^18): no Decimal can hold it, so, like an integer past Python's
# 4,300 digits, the JSON body itself is malformed.
UNREADABLE = ("1e99999999999999999999", "1e-99999999999999999999")


def reading(recent, **fields) -> str:
    """A submit-reading body; ``fields`` are spliced in as raw JSON text."""
    parts = {"kwh_amount": '"1.5"', "reading_timestamp": f'"{recent.isoformat()}"', **fields}
    return "{" + ", ".join(f'"{name}": {text}' for name, text in parts.items()) + "}"


@pytest.mark.parametrize("number", HUGE, ids=IDS)
@pytest.mark.parametrize("quoted", [False, True], ids=["literal", "string"])
def test_a_kwh_past_decimals_range_is_a_400_on_the_single_post(post, device_key, recent, number, quoted):
    text = f'"{number}"' if quoted else number

    response = post(SUBMIT, None, raw=reading(recent, kwh_amount=text), key=device_key)

    too_long = quoted and len(number) > 100  # a numeric string past 100 characters is no number at all
    assert_error_shape(response, 400, "validation_error" if too_long else "kwh_out_of_range")
    assert response.json()["error"]["field"] == "kwh_amount"
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize("number", HUGE[::3], ids=IDS[::3])
def test_a_kwh_past_decimals_range_is_a_400_on_the_v1_post(post, meter, device_key, recent, number):
    raw = f'{{"kwh": {number}, "timestamp": "{recent.isoformat()}"}}'

    response = post(f"/api/v1/meters/{meter.serial}/readings", None, raw=raw, key=device_key)

    assert_error_shape(response, 400, "kwh_out_of_range")
    assert response.json()["error"]["field"] == "kwh"
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize(
    ("field", "code"),
    [("kwh", "kwh_out_of_range"), ("voltage", "validation_error"), ("energy_generated", "validation_error"),
     ("registers", "invalid_register")],
    ids=["kwh", "telemetry", "energy", "register"],
)  # fmt: skip
@pytest.mark.parametrize("number", HUGE[:1], ids=IDS[:1])
def test_one_batch_item_with_a_number_past_decimals_range_is_refused_alone(post, recent, field, code, number):
    meter = MeterFactory()
    key = api_key_for(owner=meter.owner)[1]
    items = []
    for index in range(4):
        moment = (recent - timedelta(hours=index)).isoformat()
        fields = {"meter_serial": f'"{meter.serial}"', "kwh": '"1.5"', "timestamp": f'"{moment}"'}
        if index == 2:
            fields[field] = f'{{"1.8.0": {number}}}' if field == "registers" else number
        items.append("{" + ", ".join(f'"{name}": {text}' for name, text in fields.items()) + "}")

    response = post(BATCH, None, raw='{"readings": [' + ",".join(items) + "]}", key=key)

    assert response.status_code in (200, 207), response.content[:300]
    results = response.json()["results"]
    assert [result["status"] for result in results] == ["accepted", "accepted", "rejected", "accepted"]
    assert results[2]["error"]["code"] == code
    assert results[2]["error"]["field"] == ("registers.1.8.0" if field == "registers" else field)
    assert sorted(MeterReading.objects.filter(meter=meter).values_list("reading_timestamp", flat=True)) == [
        recent - timedelta(hours=hours) for hours in (3, 1, 0)
    ]


@pytest.mark.parametrize("number", HUGE[1:], ids=IDS[1:])
def test_a_telemetry_number_past_decimals_range_is_a_400_naming_it(post, device_key, recent, number):
    response = post(SUBMIT, None, raw=reading(recent, voltage=number), key=device_key)

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == "voltage"
    assert not MeterReading.objects.exists()


REGISTER_SHAPES = (
    '{"registers": {"1.8.0": %s}}', '{"Total_in": %s}', '{"SML": {"Total_out": %s}}', '{"WH": %s, "WH_SF": 3}',
    '{"sampledValue": [{"measurand": "Energy.Active.Import.Register", "value": %s}]}',
)  # fmt: skip


# Every number on OBIS registers, every shape with the first number.
REGISTER_CASES = [(REGISTER_SHAPES[0], number) for number in (*HUGE[1:], '"1e999999999"')]
REGISTER_CASES += [(shape, HUGE[0]) for shape in REGISTER_SHAPES]


@pytest.mark.parametrize(("registers", "number"), REGISTER_CASES, ids=[f"case{i}" for i in range(len(REGISTER_CASES))])
def test_a_register_total_past_decimals_range_is_a_400_invalid_register(post, device_key, recent, registers, number):
    totals = registers % number
    raw = f'{{"reading_timestamp": "{recent.isoformat()}", {totals[1:-1]}}}'

    response = post(SUBMIT, None, raw=raw, key=device_key)

    assert_error_shape(response, 400, "invalid_register")
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize("number", UNREADABLE, ids=["huge", "tiny"])
def test_an_exponent_no_decimal_can_hold_is_a_400_malformed_json_not_a_500(post, device_key, recent, number):
    # json hands the literal to Decimal, which raises InvalidOperation (not the ValueError the parser caught).
    response = post(SUBMIT, None, raw=reading(recent, kwh_amount=number), key=device_key)

    assert_error_shape(response, 400, "malformed_json")
    assert not MeterReading.objects.exists()
    with pytest.raises(ApplicationError) as refused:
        formats.reading_body("gridtoken", f'{{"kwh": {number}}}'.encode(), serial="M", received_at=None, timezone="UTC")
    assert refused.value.code == "malformed_json"


# --- MQTT bodies: the ingester's own path (format parser, then the batch service), without a broker ----------------


def mqtt_store(fmt: str, payload: bytes, serial: str) -> dict:
    """What the ingester does with one message: its format's parser, then ``readings_submit_batch``."""
    now = timezone.now()
    try:
        body = formats.reading_body(fmt, payload, serial=serial, received_at=now, timezone="UTC")
    except formats.Ignored:
        return {"status": "ignored"}
    return readings_submit_batch(caller=Caller.protocol(), readings=[body], now=now)["results"][0]


@pytest.mark.parametrize(
    ("fmt", "template"),
    [
        ("gridtoken", '{"kwh": %s, "timestamp": "%s"}'),
        ("gridtoken", '{"kwh": 1.5, "voltage": %s, "timestamp": "%s"}'),
        ("tasmota", '{"SML": {"Total_in": %s}, "Time": "%s"}'),
        ("shelly", '{"total_act": %s, "ignored": "%s"}'),
        ("shelly-rpc", '{"method": "NotifyStatus", "params": {"emdata:0": {"total_act": %s}, "ts": "%s"}}'),
    ],
    ids=["gridtoken-kwh", "gridtoken-voltage", "tasmota", "shelly", "shelly-rpc"],
)
@pytest.mark.parametrize("number", HUGE[:1], ids=IDS[:1])
def test_an_mqtt_body_with_a_number_past_decimals_range_is_refused_with_a_code(recent, fmt, template, number):
    meter = MeterFactory()
    moment = recent.replace(tzinfo=None).isoformat() if fmt == "tasmota" else recent.isoformat()
    if fmt == "shelly-rpc":
        template, moment = template.replace('"%s"', "%s"), str(int(recent.timestamp()))

    try:
        result = mqtt_store(fmt, (template % (number, moment)).encode(), meter.serial)
    except ApplicationError as error:  # refused by the format parser itself: the ingester answers it
        result = {"status": "rejected", "error": error.as_dict()}

    assert result["status"] == "rejected", result
    assert result["error"]["code"] in ("kwh_out_of_range", "invalid_register", "validation_error")
    assert result["error"]["field"] in ("kwh", "voltage", "SML.Total_in", "Total_in", "total_act", "emdata:0.total_act")
    assert not MeterReading.objects.exists()
