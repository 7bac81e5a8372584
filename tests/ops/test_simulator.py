import os
import re
import signal
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from itertools import pairwise

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from meters.models import ApiKey, Meter, MeterReading, User
from meters.signatures import full_message, verify
from meters.simulator import (
    INTERVAL,
    floor_interval,
    interval_kwh,
    live_readings,
    make_meter,
    readings_at,
    sun_fraction,
)

BANGKOK_NOON_UTC = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)  # 12:00 local solar time at ~105 E; 100.5 E is close


def test_production_is_zero_at_night_and_peaks_around_solar_noon():
    meter = make_meter("SIM-CURVE-1", longitude=100.5)
    midnight = BANGKOK_NOON_UTC + timedelta(hours=12)
    assert interval_kwh(meter, midnight) == Decimal(0)
    day = [interval_kwh(meter, BANGKOK_NOON_UTC + INTERVAL * k) for k in range(-24, 25)]
    peak = day.index(max(day))
    assert 18 <= peak <= 30  # within 1.5 h of 05:00 UTC (solar noon at 100.5 E is 05:18 UTC)
    assert all(kwh <= Decimal(str(meter.capacity_kw)) * Decimal("0.25") for kwh in day)


def test_production_is_exact_watt_hours_and_the_same_on_every_run():
    meter = make_meter("SIM-CURVE-2", seed=7)
    again = make_meter("SIM-CURVE-2", seed=7)
    kwh = interval_kwh(meter, BANGKOK_NOON_UTC, seed=7)
    assert isinstance(kwh, Decimal) and kwh == kwh.quantize(Decimal("0.001")) and kwh > 0
    assert interval_kwh(again, BANGKOK_NOON_UTC, seed=7) == kwh
    assert interval_kwh(meter, BANGKOK_NOON_UTC, seed=8) != kwh


def test_sun_fraction_is_a_bell_between_six_and_eighteen_solar_hours():
    at = lambda hour: sun_fraction(datetime(2026, 6, 1, hour, 0, tzinfo=UTC), 0.0)  # noqa: E731
    assert (at(5), at(6), at(12), at(18), at(23)) == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert at(9) == pytest.approx(0.5) == at(15)


def test_signed_bodies_carry_a_signature_over_the_v2_message_covering_what_they_send():
    meter = make_meter("SIM-SIGN-1", sign=True)
    (reading,) = readings_at([meter], BANGKOK_NOON_UTC)
    v1 = reading.v1_body()
    legacy = reading.legacy_body()
    full = full_message(
        serial=meter.serial,
        reading_timestamp=BANGKOK_NOON_UTC,
        kwh=reading.kwh,
        import_kwh=Decimal(repr(v1["energy_consumed"])),
        export_kwh=reading.kwh,
    )
    assert verify(public_key=meter.public_key, signature=v1["meter_signature"], message=full)
    bare = full_message(
        serial=meter.serial, reading_timestamp=BANGKOK_NOON_UTC, kwh=reading.kwh, import_kwh=None, export_kwh=None
    )
    assert verify(public_key=meter.public_key, signature=legacy["meter_signature"], message=bare)
    assert v1["kwh"] == legacy["kwh_amount"] == format(reading.kwh, "f")
    assert v1["timestamp"] == legacy["reading_timestamp"] == "2026-06-01T05:00:00Z"
    assert legacy["meter_serial"] == meter.serial and "meter_serial" not in v1
    assert reading.v1_body(with_serial=True)["meter_serial"] == meter.serial
    assert v1["energy_generated"] == float(reading.kwh) and v1["power"] == pytest.approx(float(reading.kwh) * 4)


def test_unsigned_meters_send_no_signature():
    (reading,) = readings_at([make_meter("SIM-PLAIN-1")], BANGKOK_NOON_UTC)
    assert "meter_signature" not in reading.v1_body() and "meter_signature" not in reading.legacy_body()


@pytest.fixture
def unlimited(settings):
    settings.INGEST = replace(settings.INGEST, rate_limit_key_per_min=0, rate_limit_user_per_min=0)


def simulate(live_server, *args) -> str:
    out = StringIO()
    call_command(
        "simulate_meters",
        "--url",
        live_server.url,
        "--interval",
        "0",
        "--until-now",
        "--backfill",
        "24",
        *args,
        stdout=out,
    )
    return out.getvalue()


def expected_readings(serials: list[str], *, backfill_hours: int = 24, sign: bool = False) -> dict:
    """What the simulator must have stored: (serial, interval end) -> kWh, for every producing interval."""
    meters = [make_meter(serial, sign=sign) for serial in serials]
    clock, now = floor_interval(timezone.now() - timedelta(hours=backfill_hours)), timezone.now()
    expected = {}
    while clock <= now:
        for reading in readings_at(meters, clock):
            expected[(reading.meter.serial, reading.timestamp)] = reading.kwh
        clock += INTERVAL
    return expected


def stored(serial_prefix: str) -> dict:
    rows = MeterReading.objects.filter(meter__serial__startswith=serial_prefix).select_related("meter")
    return {(row.meter.serial, row.reading_timestamp): row.kwh_amount for row in rows}


@pytest.mark.django_db(transaction=True)
def test_signed_v1_posts_store_every_producing_interval_of_every_meter(live_server, unlimited):
    output = simulate(live_server, "--meters", "3", "--sign", "--password", "pw-sim-1", "--username", "solar-1")
    serials = ["SIM-solar-1-001", "SIM-solar-1-002", "SIM-solar-1-003"]
    assert stored("SIM-solar-1-") == expected_readings(serials)
    user = User.objects.get(username="solar-1")
    meters = Meter.objects.filter(owner=user)
    assert sorted(m.serial for m in meters) == serials and all(m.public_key for m in meters)
    assert all(m.wallet_address == user.wallet_address for m in meters)
    readings = MeterReading.objects.filter(user=user)
    assert all(r.meter_signature and r.telemetry["weather_condition"] for r in readings)
    assert f"Done: accepted {readings.count()}" in output


@pytest.mark.django_db(transaction=True)
def test_a_second_run_reissues_keys_and_resumes_after_the_stored_readings(live_server, unlimited):
    simulate(live_server, "--meters", "2", "--password", "pw-sim-2", "--username", "solar-2", "--legacy")
    first = stored("SIM-solar-2-")
    output = simulate(live_server, "--meters", "2", "--username", "solar-2", "--sign")
    assert stored("SIM-solar-2-") == first  # nothing new to post, nothing duplicated
    assert "Done: none" in output or "duplicate" in output
    keys = ApiKey.objects.filter(owner__username="solar-2", scope="device")
    assert keys.filter(revoked_at__isnull=True).count() == 2  # one live key per meter
    assert all(m.public_key for m in Meter.objects.filter(owner__username="solar-2"))


@pytest.mark.django_db(transaction=True)
def test_batch_mode_posts_with_a_fleet_key_and_registers_meters_as_an_aggregator(live_server, unlimited):
    simulate(live_server, "--meters", "4", "--batch", "--password", "pw-sim-3", "--username", "fleet-3")
    serials = [f"SIM-fleet-3-{i:03d}" for i in range(1, 5)]
    assert stored("SIM-fleet-3-") == expected_readings(serials)
    fleet = ApiKey.objects.get(owner__username="fleet-3", scope="fleet", revoked_at__isnull=True)
    assert fleet.last_used_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_wrong_password_or_unknown_user_stops_with_a_message(live_server, unlimited):
    User.objects.create_user(username="solar-4", password="right-password")
    with pytest.raises(CommandError, match="401"):
        simulate(live_server, "--meters", "1", "--username", "solar-4", "--password", "wrong")
    with pytest.raises(CommandError, match="--password"):
        simulate(live_server, "--meters", "1", "--username", "nobody-yet")


@pytest.mark.django_db
def test_invalid_options_are_refused():
    for args, message in (
        (["--meters", "0"], "--meters"),
        (["--backfill", "200"], "--backfill"),
        (["--interval", "-1"], "--interval"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command("simulate_meters", *args)


@pytest.mark.django_db
def test_a_server_that_is_not_there_is_reported_plainly(closed_port_url):
    User.objects.create_user(username="solar-5", password="pw")
    with pytest.raises(CommandError, match="Cannot reach"):
        call_command("simulate_meters", "--url", f"http://{closed_port_url}", "--username", "solar-5", "--password=pw")


@pytest.mark.django_db(transaction=True)
def test_replays_with_other_values_are_refused_and_reported(live_server, unlimited):
    """A second seed posts different kWh for intervals already stored: 409s, shown and counted."""
    simulate(live_server, "--meters", "1", "--password", "pw-sim-6", "--username", "solar-6")
    first = stored("SIM-solar-6-")
    # Meter 002 is new, so the run starts from the backfill again and meter 001 replays with other values.
    output = simulate(live_server, "--meters", "2", "--username", "solar-6", "--seed", "1")
    after = stored("SIM-solar-6-")
    assert {key: kwh for key, kwh in after.items() if key[0] == "SIM-solar-6-001"} == first
    done = dict(re.findall(r"(accepted|duplicate|rejected) (\d+)", output.splitlines()[-1]))
    # Where both seeds round to the same watt-hours the replay is idempotent; everywhere else it is a 409.
    assert int(done["rejected"]) + int(done.get("duplicate", 0)) == len(first) and int(done["rejected"]) > 0
    assert "refused (409)" in output
    assert len(after) > len(first)


@pytest.mark.django_db(transaction=True)
def test_batch_items_refused_by_the_api_are_reported(live_server, unlimited):
    simulate(live_server, "--meters", "1", "--batch", "--password", "pw-sim-7", "--username", "fleet-7")
    output = simulate(live_server, "--meters", "2", "--batch", "--username", "fleet-7", "--seed", "1")
    assert "refused (item)" in output and "conflict" in output


@pytest.mark.django_db(transaction=True)
def test_a_batch_refused_as_a_whole_counts_every_reading(live_server, unlimited, settings):
    settings.INGEST = replace(settings.INGEST, batch_max=1)
    output = simulate(live_server, "--meters", "2", "--batch", "--password", "pw-sim-8", "--username", "fleet-8")
    expected = expected_readings(["SIM-fleet-8-001", "SIM-fleet-8-002"])
    per_tick = Counter(timestamp for _, timestamp in expected)
    # Ticks where both meters produced are one batch of 2 (refused whole); dawn/dusk ticks may carry 1.
    assert stored("SIM-fleet-8-") == {key: kwh for key, kwh in expected.items() if per_tick[key[1]] == 1}
    assert "refused (400)" in output
    assert f"rejected {sum(n for n in per_tick.values() if n == 2)}" in output.splitlines()[-1]


@pytest.mark.django_db(transaction=True)
def test_a_serial_the_api_refuses_stops_the_simulator(live_server, unlimited):
    with pytest.raises(CommandError, match="POST /api/meters bad prefix!-001: 400"):
        simulate(live_server, "--meters", "1", "--prefix", "bad prefix!", "--password", "pw", "--username", "s-9")


@pytest.mark.django_db(transaction=True)
def test_a_meter_of_another_account_is_not_taken_over(live_server, unlimited):
    simulate(live_server, "--meters", "1", "--password", "pw-a", "--username", "owner-a", "--prefix", "SHARED")
    with pytest.raises(CommandError, match="belongs to another account"):
        simulate(live_server, "--meters", "1", "--password", "pw-b", "--username", "owner-b", "--prefix", "SHARED")


@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_a_live_run_cleanly(live_server, unlimited):
    """Caught up with real time, the simulator waits for the next interval; SIGTERM ends it with a summary."""
    threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    out = StringIO()
    call_command(
        "simulate_meters", "--url", live_server.url, "--meters", "1", "--duration", "120",
        "--password", "pw-sim-10", "--username", "solar-10", stdout=out,
    )  # fmt: skip
    assert "Stopping." in out.getvalue() and "Done:" in out.getvalue()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_live_sun_clock_at_night_moves_on_to_the_first_interval_with_production():
    meters = [make_meter("SIM-LIVE-1", longitude=100.5), make_meter("SIM-LIVE-2", longitude=100.5)]
    midnight = BANGKOK_NOON_UTC + timedelta(hours=12)
    stamp = datetime(2026, 6, 1, 20, 0, 7, tzinfo=UTC)

    sun, readings = live_readings(meters, stamp, midnight)

    assert midnight < sun < midnight + timedelta(hours=12) and readings
    assert all(interval_kwh(m, sun - INTERVAL) == 0 for m in meters)  # the first producing interval
    assert {r.timestamp for r in readings} == {stamp}
    assert [r.kwh for r in readings] == [interval_kwh(m, sun) for m in meters if interval_kwh(m, sun) > 0]


@pytest.mark.django_db(transaction=True)
def test_live_meters_keep_reporting_after_catching_up_with_the_password_from_the_environment(
    live_server, unlimited, settings, monkeypatch
):
    """--live: past real time the meters go on, one reading each per --interval, stamped with the real time."""
    settings.TOKENIZATION = replace(settings.TOKENIZATION, duplicate_window_secs=0)
    monkeypatch.setenv("SIMULATOR_PASSWORD", "pw-live-11")
    started = timezone.now().replace(microsecond=0)
    out = StringIO()
    call_command(
        "simulate_meters", "--url", live_server.url, "--meters", "2", "--username", "solar-11", "--live",
        "--interval", "1", "--backfill", "0", "--duration", "5", stdout=out,
    )  # fmt: skip

    assert User.objects.get(username="solar-11").check_password("pw-live-11")
    live = MeterReading.objects.filter(user__username="solar-11", reading_timestamp__gte=started)
    stamps = sorted(set(live.values_list("reading_timestamp", flat=True)))
    assert len(stamps) >= 3, out.getvalue()
    assert all(later - earlier >= timedelta(seconds=1) for earlier, later in pairwise(stamps))
    assert stamps[-1] <= timezone.now()
    assert all(row.kwh_amount > 0 for row in live)
    assert " live (sun " in out.getvalue()
