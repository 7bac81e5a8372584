"""The charts' JSON: a producer's energy, tokens and certificates per hour or day, the fleet per minute.

The figures come from rollups (exact whether or not the fold ran); the seeded readings' sums are written out
by hand here, so a bucket off by one hour or a lost delta fails."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from certificates.services.issuance import certificates_issue_due
from gridtoken.events import rfc3339
from meters.history import KEPT, FleetMinute, minute_of
from meters.services.rollups import fleet_minute_record, rollups_fold_all
from realtime.charts import CHART_METERS, ENERGY_SPANS, FLEET_SPANS, energy_series, fleet_series
from tests.certificates.helpers import HOUR0, add_readings, close_hour, make_device

pytestmark = pytest.mark.django_db


def hour_start(hours_ago: int):
    return minute_of(timezone.now()).replace(minute=0) - timedelta(hours=hours_ago)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def seeded(people, producer, meter, second_meter):
    """Two meters over three hours: generated and consumed apart, one reading minted, one rejected."""
    two_ago, one_ago = hour_start(2), hour_start(1)
    people.reading(meter, "2.5", generated_kwh=Decimal("3"), consumed_kwh=Decimal("0.5"), reading_timestamp=two_ago)
    people.reading(
        meter, "1.25", reading_timestamp=two_ago + timedelta(minutes=15), status="minted", token_amount=1_250_000_000
    )
    people.reading(
        meter, "-0.75", reading_timestamp=one_ago + timedelta(minutes=5), status="recorded", mintable_kwh=Decimal(0)
    )
    people.reading(second_meter, "4", reading_timestamp=one_ago, status="minted", token_amount=4_000_000_000)
    people.reading(second_meter, "9", reading_timestamp=one_ago + timedelta(minutes=1), status="rejected")
    return two_ago, one_ago


def test_energy_per_hour_adds_each_meters_readings_and_their_total(seeded, producer, meter, second_meter):
    two_ago, one_ago = seeded
    body = energy_series(user=producer, span=ENERGY_SPANS["48h"])

    assert len(body["buckets"]) == 48 and body["buckets"][-1] == rfc3339(hour_start(0))
    at = {stamp: i for i, stamp in enumerate(body["buckets"])}
    i2, i1 = at[rfc3339(two_ago)], at[rfc3339(one_ago)]
    first, second = body["meters"]
    assert (first["serial"], second["serial"]) == (meter.serial, second_meter.serial)
    assert first["generated"][i2] == "4.250000000" and first["consumed"][i2] == "0.500000000"
    assert first["net"][i2] == "3.750000000" and first["minted"][i2] == "1.250000000"
    assert first["consumed"][i1] == "0.750000000" and first["net"][i1] == "-0.750000000"
    assert second["generated"][i1] == "4.000000000"  # the rejected 9 kWh count nowhere
    assert body["total"]["net"][i1] == "3.250000000" and body["total"]["minted"][i1] == "4.000000000"
    assert body["total"]["generated"][0] == "0.000000000"
    assert body["tokens_minted_base_units"][i2] == "1250000000" and body["tokens_minted_base_units"][i1] == "4000000000"
    assert body["tokens_held_base_units"][i2 - 1] == "0" and body["tokens_held_base_units"][i2] == "1250000000"
    assert body["tokens_held_base_units"][-1] == "5250000000"

    rollups_fold_all()  # the same figures once the deltas sit in the hour rollups
    assert energy_series(user=producer, span=ENERGY_SPANS["48h"])["meters"] == body["meters"]


def test_energy_per_day_puts_the_hours_into_utc_days(seeded, producer):
    two_ago, _one_ago = seeded
    body = energy_series(user=producer, span=ENERGY_SPANS["30d"])

    assert len(body["buckets"]) == 30 and body["step_seconds"] == 86400
    day = rfc3339(two_ago.replace(hour=0))
    assert body["buckets"][-1] == rfc3339(timezone.now().replace(hour=0, minute=0, second=0, microsecond=0))
    days = {stamp: i for i, stamp in enumerate(body["buckets"])}
    generated = sum(Decimal(body["total"]["generated"][i]) for i in range(30))
    assert generated == Decimal("8.25")
    assert sum(Decimal(body["total"]["net"][i]) for i in range(30)) == Decimal("7")  # the rejected 9 kWh not
    assert Decimal(body["total"]["generated"][days[day]]) > 0
    assert body["tokens_held_base_units"][-1] == "5250000000"


def test_the_total_adds_up_the_meters_drawn_and_says_how_many_there_are(people, producer):
    for number in range(CHART_METERS + 2):
        people.reading(people.meter(producer, serial=f"SM-MANY-{number:02d}"), "1", reading_timestamp=hour_start(1))

    body = energy_series(user=producer, span=ENERGY_SPANS["48h"])

    assert len(body["meters"]) == CHART_METERS and body["meters_total"] == CHART_METERS + 2
    assert body["total"]["net"][-2] == f"{CHART_METERS}.000000000"


def test_certificates_held_and_claimed_are_counted_by_their_production_hour():
    device = make_device()
    add_readings(device, 0, ["1.5", "0.5"])
    add_readings(device, 1, ["2"])
    close_hour(device, 1)
    certificates_issue_due(now=HOUR0 + timedelta(hours=6))
    owner = device.meter.owner

    body = energy_series(user=owner, span=ENERGY_SPANS["48h"], now=HOUR0 + timedelta(hours=5))

    at = {stamp: i for i, stamp in enumerate(body["buckets"])}
    first = at[rfc3339(HOUR0)]
    assert body["certificates_wh"]["held"][first : first + 2] == [2000, 2000]
    assert sum(body["certificates_wh"]["claimed"]) == 0


def test_the_fleet_per_minute_is_the_difference_of_recorded_minutes_with_gaps_left_open(people, meter):
    now = timezone.now()
    minute = minute_of(now)
    people.reading(meter, "1")
    fleet_minute_record(now=now - timedelta(minutes=3))  # 1 stored
    people.reading(meter, "1", status="minted", token_amount=10**9)
    people.reading(meter, "1", status="held", flags=["spike"])
    fleet_minute_record(now=now - timedelta(minutes=2))  # 3 stored, 1 minted, 1 held and flagged
    people.reading(meter, "1")  # minute -1 has no row: a gap, and the current minute has nothing to compare with

    body = fleet_series(span=FLEET_SPANS["1h"], now=now)

    assert len(body["buckets"]) == 60 and body["buckets"][-1] == rfc3339(minute)
    assert body["readings_in"][-3:] == [2, None, None] and body["minted"][-3] == 1 and body["flagged"][-3] == 1
    assert body["backlog"][-4:] == [1, 1, None, 2] and body["held"][-3:] == [1, None, 1]
    assert body["readings_in"][-4] is None  # minute -4 has no row before it


def test_minute_rows_past_their_keep_are_deleted_as_new_ones_are_written(people, meter):
    now = timezone.now()
    fleet_minute_record(now=now - KEPT - timedelta(minutes=5))
    fleet_minute_record(now=now - timedelta(minutes=1))
    fleet_minute_record(now=now)
    fleet_minute_record(now=now)  # twice in a minute: the same row, updated

    assert FleetMinute.objects.count() == 2


def test_the_chart_endpoints_answer_json_to_their_audience_and_refuse_a_bad_span(seeded, producer, operator):
    producer_client, operator_client = logged_in(producer), logged_in(operator)

    energy = producer_client.get("/dashboard/energy.json?span=30d")
    assert energy.status_code == 200 and len(energy.json()["buckets"]) == 30
    assert producer_client.get("/dashboard/fleet.json").status_code == 403
    fleet = operator_client.get("/dashboard/fleet.json?span=24h")
    assert fleet.status_code == 200 and len(fleet.json()["buckets"]) == 1440
    bad = producer_client.get("/dashboard/energy.json?span=1y")
    assert bad.status_code == 400 and json.loads(bad.content)["error"]["code"] == "invalid_span"
    assert Client().get("/dashboard/energy.json").status_code == 401


def test_the_beats_fold_records_this_minutes_fleet_figures(people, meter):
    from meters.tasks import fold_rollups

    people.reading(meter, "1")
    people.reading(meter, "2", status="held", flags=["spike"])

    before = minute_of(timezone.now())
    fold_rollups()

    row = FleetMinute.objects.get(minute__gte=before)  # this minute's (or the next, if it turned meanwhile)
    assert (row.readings, row.pending, row.held, row.flagged, row.minted) == (2, 1, 1, 1, 0)
