"""The readings' rollups (docs/ROLLUPS.md) equal a recomputation from the raw rows: after a mixed workload
through the real pipeline (a worker killed while settling, held readings approved and rejected, a reading
removed) and after folds killed half-way, by SIGKILL of the folding process and by terminating its backend.

The recomputation is written here with the ORM, apart from the triggers' SQL, so the two can disagree.
"""

import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection
from django.db.models import Case, Count, F, Max, Q, Sum, Value, When
from django.db.models.functions import Coalesce, Greatest, TruncDate, TruncHour

from meters.models import (
    FlagDelta,
    FlagHourRollup,
    FleetRollup,
    MeterHourRollup,
    MeterReading,
    MeterRollup,
    OwnerDayRollup,
    OwnerRollup,
    ReadingDelta,
    WalletRollup,
)
from meters.selectors import rollup_totals
from meters.services.holds import readings_approve, readings_reject
from meters.services.rollups import rollups_fold, rollups_fold_all
from minting.tasks import reconcile_batches
from minting.triggers import mint_soon
from tests.conftest import ROOT, database_url, wait_until
from tests.minting.pipeline_harness import (
    celery_processes_fixture,  # noqa: F401 (the celery_processes fixture)
    make_meter,
    make_readings,
    make_user,
    set_tokenization,
    use_chain,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
R = MeterReading.Status
MEASURED = ~Q(source=MeterReading.Source.WINDOW)
COUNTED = ~Q(status=R.REJECTED)
ZERO = Decimal(0)


KWH = Coalesce("kwh_amount", ZERO)
# What every rollup column should hold, as aggregates over the rows themselves. Aliased apart: an aggregate may not
# share a field's name (mintable_kwh) inside one aggregate() or annotate() call.
SUMS = {
    f"sum_{name}": value
    for name, value in dict(
        readings=Count("pk", filter=MEASURED),
        **{status: Count("pk", filter=Q(status=status)) for status in R.values},
        flagged=Count("pk", filter=~Q(flags=[])),
        net_kwh=Coalesce(Sum(KWH, filter=MEASURED), ZERO),
        generated_kwh=Coalesce(Sum(Coalesce("generated_kwh", Greatest(KWH, ZERO)), filter=MEASURED & COUNTED), ZERO),
        consumed_kwh=Coalesce(Sum(Coalesce("consumed_kwh", Greatest(-KWH, ZERO)), filter=MEASURED & COUNTED), ZERO),
        mintable_kwh=Coalesce(Sum("mintable_kwh", filter=COUNTED), ZERO),
        minted_kwh=Coalesce(Sum("mintable_kwh", filter=Q(status=R.MINTED)), ZERO),
        minted_units=Coalesce(Sum("token_amount", filter=Q(status=R.MINTED)), 0),
        minting_units=Coalesce(Sum("token_amount", filter=Q(status=R.MINTING)), 0),
        last_submitted_at=Max("submitted_at"),
    ).items()
}


def as_row(aggregated: dict) -> dict:
    row = {name.removeprefix("sum_"): aggregated[name] for name in SUMS}
    row["minted_units"], row["minting_units"] = int(row["minted_units"]), int(row["minting_units"])
    return row


def recomputed(readings) -> dict:
    """What every rollup column should hold for ``readings``, from the rows themselves."""
    return as_row(readings.aggregate(**SUMS))


def recomputed_by(readings, *keys: str) -> dict:
    """``recomputed`` for each value of ``keys`` among ``readings`` (a tuple), in one grouped query."""
    grouped = readings.values(*keys).annotate(**SUMS).order_by()
    return {tuple(row[key] for key in keys): as_row(row) for row in grouped}


def as_rolled_up(totals: dict, expected: dict) -> dict:
    return {column: totals[column] for column in expected}


SAMPLE = 30  # hours and days checked per meter and owner (the crash test's backlog has 500 per meter)


def assert_rollups_exact(*, maxima: bool = True) -> None:
    """Every rollup (with the deltas not folded yet) equals the recomputation, per scope and key.

    Maxima only grow: a reading removed, or minted out of its wallet's "not minted" row, leaves the
    ``last_submitted_at`` it raised, so they are compared only where rows never leave (``maxima``)."""
    readings = MeterReading.objects.all()

    def check(actual: dict, expected: dict, label: str, *, maxima: bool = maxima) -> None:
        expected = dict(expected)
        if not maxima:
            expected.pop("last_submitted_at")
        assert as_rolled_up(actual, expected) == expected, label

    check(rollup_totals(FleetRollup), recomputed(readings), "fleet")
    days = recomputed_by(readings.annotate(day=TruncDate("reading_timestamp", tzinfo=UTC)), "user_id", "day")
    for (user_id,), expected in recomputed_by(readings, "user_id").items():
        check(rollup_totals(OwnerRollup, user_id=user_id), expected, "owner")
        check(rollup_totals(OwnerDayRollup, user_id=user_id), expected, "owner's days")
        by_day = rollup_totals(OwnerDayRollup, group_by="day", user_id=user_id)
        for day in sorted(day for owner, day in days if owner == user_id)[:SAMPLE]:
            check(by_day[day], days[user_id, day], f"owner day {day}")
    hours = recomputed_by(readings.annotate(hour=TruncHour("reading_timestamp", tzinfo=UTC)), "meter_id", "hour")
    for (meter_id,), expected in recomputed_by(readings, "meter_id").items():
        check(rollup_totals(MeterRollup, meter_id=meter_id), expected, "meter")
        by_hour = rollup_totals(MeterHourRollup, group_by="hour", meter_id=meter_id)
        for hour in sorted((hour for meter, hour in hours if meter == meter_id), reverse=True)[:SAMPLE]:
            check(by_hour[hour], hours[meter_id, hour], f"meter hour {hour}")
    # A minted reading counts under its batch's mint, any other under no mint ("").
    mint = Case(When(status=R.MINTED, then="batch__mint_address"), default=Value(""))
    by_wallet = recomputed_by(readings.annotate(mint=mint), "wallet_address", "mint")
    for wallet in {wallet for wallet, _ in by_wallet}:
        rolled = rollup_totals(WalletRollup, group_by="mint_address", wallet_address=wallet)
        for (owner_wallet, mint_address), expected in by_wallet.items():
            if owner_wallet == wallet:
                check(rolled[mint_address], expected, f"wallet {wallet} mint {mint_address!r}", maxima=False)

    assert flag_totals() == flags_recomputed()


def flag_totals() -> dict:
    """(hour, flag) -> readings from the flag rollup and the deltas not folded yet, zeros left out."""
    totals = Counter()
    for model in (FlagHourRollup, FlagDelta):
        for hour, flag, count in model.objects.values_list("hour", "flag", "readings"):
            totals[hour, flag] += count
    return {key: count for key, count in totals.items() if count}


def flags_recomputed() -> dict:
    """(UTC hour of submitted_at, flag) -> readings carrying it, from the rows (a flag that is no flag code
    counts as "other")."""
    counts = Counter()
    for submitted_at, flags in MeterReading.objects.exclude(flags=[]).values_list("submitted_at", "flags"):
        hour = submitted_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        for flag in flags:
            counts[hour, flag if re.fullmatch(r"[a-z][a-z0-9_]{0,39}", flag) else "other"] += 1
    return dict(counts)


def assert_folded_exactly(*, maxima: bool = True) -> None:
    """Fold everything: no delta waits and the rollup tables alone hold the recomputation."""
    rollups_fold_all()
    assert not ReadingDelta.objects.exists()
    assert not FlagDelta.objects.exists()
    assert_rollups_exact(maxima=maxima)


def test_rollups_equal_a_recomputation_after_inserts_updates_and_a_removal_folded_or_not():
    owner = make_user()
    meters = [make_meter(owner=owner) for _ in range(3)] + [make_meter()]
    readings = make_readings(meters, 40)
    recorded = make_readings(meters[:2], 6, kwh="0", status=R.RECORDED)
    MeterReading.objects.filter(id__in=[r.id for r in recorded]).update(kwh_amount=Decimal("-0.75"))
    held = make_readings(meters, 8, status=R.HELD, flags=["spike"])
    assert ReadingDelta.objects.exists()  # written by the insert's trigger, nothing folded yet
    assert_rollups_exact()

    rollups_fold(limit=3)  # part of them
    assert_rollups_exact()
    readings_approve(reading_ids=[r.id for r in held[:4]])
    readings_reject(reading_ids=[r.id for r in held[4:]])
    MeterReading.objects.filter(id__in=[r.id for r in readings[:10]]).update(
        status=R.MINTING, token_amount=1_500_000_000
    )
    MeterReading.objects.filter(id__in=[r.id for r in readings[10:12]]).update(attempts=3)  # changes no rollup
    MeterReading.objects.filter(id__in=[r.id for r in readings[20:24]]).update(flags=["gap", "Not a code!"])
    MeterReading.objects.filter(id=held[0].id).update(submitted_at=F("submitted_at") - timedelta(hours=5))
    MeterReading.objects.filter(id=readings[39].id).delete()
    assert FlagDelta.objects.filter(flag="other").exists()
    assert_rollups_exact(maxima=False)
    assert_folded_exactly(maxima=False)


@pytest.fixture
def chain(settings, localnet, tmp_path):
    set_tokenization(settings, batch_size=10, trigger_debounce_ms=100)
    return use_chain(settings, localnet, tmp_path)


def folding_backend(function: str = "meters_rollup_fold") -> int | None:
    """The backend of a fold (a call of ``function``) waiting for a lock inside its statement, if one is."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
            " AND wait_event_type = 'Lock' AND query LIKE %s AND pid <> pg_backend_pid()",
            [f"%{function}%"],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


def fold_killed_mid_statement(*, hold: str, kill: str, function: str = "meters_rollup_fold") -> None:
    """Run ``rollups_fold`` while another session holds a rollup row (``hold``, a ``SELECT ... FOR UPDATE``), so
    the fold stops inside its statement, its deltas deleted and other rollups already added to; then kill it
    there (``kill``: ``sigkill_client`` or ``terminate_backend``) and wait for its backend to be gone."""
    with psycopg.connect(database_url()) as holder:
        holder.execute(hold)
        fold = start_fold()
        backend = wait_until(
            lambda: folding_backend(function), timeout=60, interval=0.05, message="a fold waiting mid-statement"
        )
        if kill == "sigkill_client":
            fold.send_signal(signal.SIGKILL)
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        fold.wait(timeout=60)
        holder.rollback()
    wait_until(lambda: not backend_alive(backend), timeout=120, message="the killed fold's backend gone")


def start_fold() -> subprocess.Popen:
    env = {"DEBUG": "true", "DATABASE_URL": database_url(), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(
        [sys.executable, "manage.py", "rollups_fold"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_rollups_stay_exact_through_the_real_pipeline_a_killed_worker_and_killed_folds(chain, celery_processes):
    """1. Readings are minted by real workers, the first one SIGKILLed while settling.
    2. Held readings are approved and rejected, a large backlog of deltas waits.
    3. A fold is SIGKILLed mid-statement, another has its backend terminated mid-statement (both held there by
       a lock on the fleet row another session takes): each time the
       rollups (with what waits) still equal the recomputation, and a final fold leaves the tables exact."""
    meters = [make_meter() for _ in range(4)]
    to_mint = make_readings(meters, 24)
    mint_soon()
    doomed = celery_processes(chain=chain, env={"GRIDTOKEN_CRASH_AT": "while_settling"})
    assert doomed.wait_killed() == -signal.SIGKILL, doomed.output()
    assert_rollups_exact()
    celery_processes(chain=chain)
    mint_soon(force=True)
    minted = [r.id for r in to_mint]

    def all_minted() -> bool:
        reconcile_batches.apply_async()  # settles the batch the killed worker left signed
        return set(MeterReading.objects.filter(id__in=minted).values_list("status", flat=True)) == {R.MINTED}

    wait_until(all_minted, interval=2.0, message="every reading minted")
    assert_rollups_exact()

    held = make_readings(meters, 6, status=R.HELD, flags=["capacity"])
    readings_approve(reading_ids=[held[0].id])
    # The running worker mints the approved reading; let it finish, or its status changes would add deltas
    # while the backlog below is counted.
    wait_until(
        lambda: MeterReading.objects.get(id=held[0].id).status == R.MINTED,
        interval=0.5,
        message="the approved reading minted",
    )
    rollups_fold_all()
    readings_reject(reading_ids=[held[1].id])
    with connection.cursor() as cursor:  # a backlog of deltas: one reading per hour and meter
        cursor.execute(
            "INSERT INTO meters_meterreading (id, user_id, meter_id, wallet_address, kwh_amount, reading_timestamp,"
            " source, mintable_kwh, flags, submitted_at, minted, status, attempts, next_attempt_at, last_error,"
            " telemetry) SELECT gen_random_uuid(), m.owner_id, m.id, m.wallet_address, 0.5, "
            " '2020-01-01'::timestamptz + g * interval '1 hour', 'interval', 0, '[]', now(), false, 'recorded', 0,"
            " now(), '', '{}' FROM meters_meter m CROSS JOIN generate_series(1, 500) g"
        )
    waiting = ReadingDelta.objects.count()
    assert waiting >= 2_000

    for kill in ("sigkill_client", "terminate_backend"):
        fold_killed_mid_statement(hold="SELECT 1 FROM meters_fleetrollup WHERE id = 1 FOR UPDATE", kill=kill)
        assert ReadingDelta.objects.count() == waiting  # rolled back whole: nothing folded, nothing lost
        assert_rollups_exact()

    assert_folded_exactly()
