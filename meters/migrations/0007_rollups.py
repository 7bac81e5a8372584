"""Rollups of the readings, kept as data arrives (docs/ROLLUPS.md): the readings table's statement-level
triggers append what each statement changed to meters_readingdelta, meters_rollup_fold adds the deltas to the
rollup tables and deletes them in one statement."""

from django.db import migrations, models


# Kept by the readings table's own statement-level triggers and folded by meters_rollup_fold (docs/ROLLUPS.md).
# The SQL is built once here from the lists below, frozen with this migration.
STATUSES = ("pending", "minting", "minted", "failed", "rejected", "recorded", "held", "awaiting_window")
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
MEASURED = "r.source <> 'window'"
COUNTED = "r.status <> 'rejected'"


def direction(column: str, sign: str) -> str:
    return f"coalesce(r.{column}, greatest({sign}r.kwh_amount, 0))"


# column -> its value for one reading row ``r`` (``b``: its batch, joined only while it is minted).
SUMS = {
    "readings": f"({MEASURED})::int",
    **{status: f"(r.status = '{status}')::int" for status in STATUSES},
    "flagged": "(r.flags <> '[]'::jsonb)::int",
    "net_kwh": f"CASE WHEN {MEASURED} THEN r.kwh_amount ELSE 0 END",
    # As window settlement sums: a reading without its directions counts its positive net as generated.
    "generated_kwh": f"CASE WHEN {MEASURED} AND {COUNTED} THEN {direction('generated_kwh', '')} ELSE 0 END",
    "consumed_kwh": f"CASE WHEN {MEASURED} AND {COUNTED} THEN {direction('consumed_kwh', '-')} ELSE 0 END",
    "mintable_kwh": f"CASE WHEN {COUNTED} THEN r.mintable_kwh ELSE 0 END",
    "minted_kwh": "CASE WHEN r.status = 'minted' THEN r.mintable_kwh ELSE 0 END",
    "minted_units": "CASE WHEN r.status = 'minted' THEN coalesce(r.token_amount, 0) ELSE 0 END",
    "minting_units": "CASE WHEN r.status = 'minting' THEN coalesce(r.token_amount, 0) ELSE 0 END",
}
LATENCY = "b.settled_at - r.submitted_at"
LATENCY_SUMS = {
    **{
        f"latency_le_{i}": f"(b.settled_at IS NOT NULL AND {LATENCY} <= interval '{bound} seconds')::int"
        for i, bound in enumerate(LATENCY_BUCKETS)
    },
    "latency_count": "(b.settled_at IS NOT NULL)::int",
    "latency_seconds": f"coalesce(extract(epoch FROM {LATENCY}), 0)",
}
MAXES = {"last_submitted_at": "r.submitted_at", "mint_slot": "coalesce(b.context_slot, 0)"}
FLOORS = {"last_submitted_at": "NULL::timestamptz", "mint_slot": "0"}  # what a removed row contributes
MEASURES = (*SUMS, *MAXES)
KEYS = ("meter_id", "user_id", "wallet_address", "mint_address", "hour")
DELTA_COLUMNS = (*KEYS, *SUMS, *LATENCY_SUMS, *MAXES)
# What an update must change for the rollups to move; updates of attempts, errors and times write no delta.
TRACKED = (
    "meter_id",
    "user_id",
    "wallet_address",
    "reading_timestamp",
    "source",
    "status",
    "flags",
    "kwh_amount",
    "generated_kwh",
    "consumed_kwh",
    "mintable_kwh",
    "token_amount",
    "batch_id",
    "submitted_at",
)


def contributions(rows: str, sign: int) -> str:
    """One line per reading of ``rows``: its keys and its share of every column, times ``sign``."""
    values = [
        "r.meter_id",
        "r.user_id",
        "r.wallet_address",
        "CASE WHEN r.status = 'minted' THEN coalesce(b.mint_address, '') ELSE '' END",
        "date_trunc('hour', r.reading_timestamp, 'UTC')",
        *(f"{sign} * {expression}" for expression in SUMS.values()),
        # The latency of a reading counts once it is minted from a settled batch.
        *(
            f"{sign} * CASE WHEN r.status = 'minted' THEN {expression} ELSE 0 END"
            for expression in LATENCY_SUMS.values()
        ),
        # Maxima only grow: an insert raises them, nothing lowers them (a removed row leaves them as they were).
        *(expression if sign > 0 else FLOORS[column] for column, expression in MAXES.items()),
    ]
    names = ", ".join(f"{value} AS {column}" for value, column in zip(values, DELTA_COLUMNS, strict=True))
    return f"SELECT {names} FROM {rows} r LEFT JOIN minting_mintbatch b ON r.status = 'minted' AND b.id = r.batch_id"


def grouped(source: str) -> str:
    sums = ", ".join(f"sum({column})" for column in (*SUMS, *LATENCY_SUMS))
    maxes = ", ".join(f"max({column})" for column in MAXES)
    moved = " OR ".join(f"sum({column}) <> 0" for column in (*SUMS, *LATENCY_SUMS))
    keys = ", ".join(KEYS)
    return (
        f"INSERT INTO meters_readingdelta ({', '.join(DELTA_COLUMNS)}) "
        f"SELECT {keys}, {sums}, {maxes} FROM ({source}) c GROUP BY {keys} HAVING {moved}"
    )


CHANGED = " OR ".join(f"o.{column} IS DISTINCT FROM n.{column}" for column in TRACKED)
TRIGGER = f"""
CREATE FUNCTION meters_reading_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {grouped(contributions("new_rows", 1))};
    ELSIF TG_OP = 'UPDATE' THEN
        {
    grouped(
        contributions(f"(SELECT n.* FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE {CHANGED})", 1)
        + " UNION ALL "
        + contributions(f"(SELECT o.* FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE {CHANGED})", -1)
    )
};
    ELSE
        {grouped(contributions("old_rows", -1))};
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER meters_reading_rollup_insert AFTER INSERT ON meters_meterreading
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meters_reading_rollup();
CREATE TRIGGER meters_reading_rollup_update AFTER UPDATE ON meters_meterreading
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meters_reading_rollup();
CREATE TRIGGER meters_reading_rollup_delete AFTER DELETE ON meters_meterreading
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION meters_reading_rollup();
"""
UNTRIGGER = """
DROP TRIGGER meters_reading_rollup_insert ON meters_meterreading;
DROP TRIGGER meters_reading_rollup_update ON meters_meterreading;
DROP TRIGGER meters_reading_rollup_delete ON meters_meterreading;
DROP FUNCTION meters_reading_rollup();
"""


def upsert(table: str, keys: tuple[str, ...], select_keys: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    columns = (*SUMS, *extra)
    sums = ", ".join(f"sum({column})" for column in columns)
    maxes = ", ".join(f"max({column})" for column in MAXES)
    added = ", ".join(f"{column} = t.{column} + excluded.{column}" for column in columns)
    raised = ", ".join(f"{column} = greatest(t.{column}, excluded.{column})" for column in MAXES)
    group = ", ".join(str(i + 1) for i in range(len(keys)))
    return (
        f"INSERT INTO {table} AS t ({', '.join(keys)}, {', '.join(columns)}, {', '.join(MAXES)}) "
        f"SELECT {', '.join(select_keys)}, {sums}, {maxes} FROM moved GROUP BY {group} ORDER BY {group} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}, {raised}"
    )


# 1. One fold at a time (a transaction-scoped advisory lock; a second caller returns -1 at once), so only
#    one transaction ever writes rollup rows and no two can deadlock on them.
# 2. One statement deletes the oldest p_limit deltas and adds them to every rollup: it commits whole or not
#    at all, so a crash (a killed worker, a terminated backend) can neither lose nor double-count a delta.
FOLD = f"""
CREATE FUNCTION meters_rollup_fold(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_folded integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('meters_rollup_fold')) THEN
        RETURN -1;
    END IF;
    WITH moved AS (
        DELETE FROM meters_readingdelta WHERE id IN (SELECT id FROM meters_readingdelta ORDER BY id LIMIT p_limit)
        RETURNING *
    ), meter_hour AS (
        {upsert("meters_meterhourrollup", ("meter_id", "hour"), ("meter_id", "hour"))}
    ), meter AS (
        {upsert("meters_meterrollup", ("meter_id",), ("meter_id",))}
    ), owner_day AS (
        {upsert("meters_ownerdayrollup", ("user_id", "day"), ("user_id", "(hour AT TIME ZONE 'UTC')::date"))}
    ), wallet AS (
        {upsert("meters_walletrollup", ("wallet_address", "mint_address"), ("wallet_address", "mint_address"))}
    ), fleet AS (
        {upsert("meters_fleetrollup", ("id",), ("1",), tuple(LATENCY_SUMS))}
    )
    SELECT count(*) INTO v_folded FROM moved;
    RETURN v_folded;
END
$$;
"""
UNFOLD = "DROP FUNCTION meters_rollup_fold(integer);"
# Readings stored before this migration enter as one delta per (meter, owner, wallet, mint, hour); the next
# fold (the task, or ``manage.py rollups_fold``) adds them up.
BACKFILL = grouped(contributions("meters_meterreading", 1))


class Migration(migrations.Migration):
    dependencies = [
        ("meters", "0006_dead_letters"),
    ]

    operations = [
        migrations.CreateModel(
            name="FleetRollup",
            fields=[
                (
                    "readings",
                    models.BigIntegerField(default=0, help_text="Measured readings (not derived window rows)"),
                ),
                ("pending", models.BigIntegerField(default=0)),
                ("minting", models.BigIntegerField(default=0)),
                ("minted", models.BigIntegerField(default=0)),
                ("failed", models.BigIntegerField(default=0)),
                ("rejected", models.BigIntegerField(default=0)),
                ("recorded", models.BigIntegerField(default=0)),
                ("held", models.BigIntegerField(default=0)),
                ("awaiting_window", models.BigIntegerField(default=0)),
                ("flagged", models.BigIntegerField(default=0, help_text="Rows carrying at least one flag")),
                ("net_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("generated_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("consumed_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("mintable_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("minting_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("last_submitted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "mint_slot",
                    models.BigIntegerField(default=0, help_text="Newest context slot of a batch that minted here"),
                ),
                ("latency_le_0", models.BigIntegerField(default=0)),
                ("latency_le_1", models.BigIntegerField(default=0)),
                ("latency_le_2", models.BigIntegerField(default=0)),
                ("latency_le_3", models.BigIntegerField(default=0)),
                ("latency_le_4", models.BigIntegerField(default=0)),
                ("latency_le_5", models.BigIntegerField(default=0)),
                ("latency_le_6", models.BigIntegerField(default=0)),
                ("latency_le_7", models.BigIntegerField(default=0)),
                ("latency_le_8", models.BigIntegerField(default=0)),
                ("latency_le_9", models.BigIntegerField(default=0)),
                ("latency_le_10", models.BigIntegerField(default=0)),
                ("latency_le_11", models.BigIntegerField(default=0)),
                ("latency_count", models.BigIntegerField(default=0)),
                ("latency_seconds", models.DecimalField(decimal_places=6, default=0, max_digits=30)),
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="MeterRollup",
            fields=[
                (
                    "readings",
                    models.BigIntegerField(default=0, help_text="Measured readings (not derived window rows)"),
                ),
                ("pending", models.BigIntegerField(default=0)),
                ("minting", models.BigIntegerField(default=0)),
                ("minted", models.BigIntegerField(default=0)),
                ("failed", models.BigIntegerField(default=0)),
                ("rejected", models.BigIntegerField(default=0)),
                ("recorded", models.BigIntegerField(default=0)),
                ("held", models.BigIntegerField(default=0)),
                ("awaiting_window", models.BigIntegerField(default=0)),
                ("flagged", models.BigIntegerField(default=0, help_text="Rows carrying at least one flag")),
                ("net_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("generated_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("consumed_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("mintable_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("minting_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("last_submitted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "mint_slot",
                    models.BigIntegerField(default=0, help_text="Newest context slot of a batch that minted here"),
                ),
                ("meter_id", models.UUIDField(primary_key=True, serialize=False)),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="ReadingDelta",
            fields=[
                (
                    "readings",
                    models.BigIntegerField(default=0, help_text="Measured readings (not derived window rows)"),
                ),
                ("pending", models.BigIntegerField(default=0)),
                ("minting", models.BigIntegerField(default=0)),
                ("minted", models.BigIntegerField(default=0)),
                ("failed", models.BigIntegerField(default=0)),
                ("rejected", models.BigIntegerField(default=0)),
                ("recorded", models.BigIntegerField(default=0)),
                ("held", models.BigIntegerField(default=0)),
                ("awaiting_window", models.BigIntegerField(default=0)),
                ("flagged", models.BigIntegerField(default=0, help_text="Rows carrying at least one flag")),
                ("net_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("generated_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("consumed_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("mintable_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("minting_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("last_submitted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "mint_slot",
                    models.BigIntegerField(default=0, help_text="Newest context slot of a batch that minted here"),
                ),
                ("latency_le_0", models.BigIntegerField(default=0)),
                ("latency_le_1", models.BigIntegerField(default=0)),
                ("latency_le_2", models.BigIntegerField(default=0)),
                ("latency_le_3", models.BigIntegerField(default=0)),
                ("latency_le_4", models.BigIntegerField(default=0)),
                ("latency_le_5", models.BigIntegerField(default=0)),
                ("latency_le_6", models.BigIntegerField(default=0)),
                ("latency_le_7", models.BigIntegerField(default=0)),
                ("latency_le_8", models.BigIntegerField(default=0)),
                ("latency_le_9", models.BigIntegerField(default=0)),
                ("latency_le_10", models.BigIntegerField(default=0)),
                ("latency_le_11", models.BigIntegerField(default=0)),
                ("latency_count", models.BigIntegerField(default=0)),
                ("latency_seconds", models.DecimalField(decimal_places=6, default=0, max_digits=30)),
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("meter_id", models.UUIDField()),
                ("user_id", models.UUIDField()),
                ("wallet_address", models.CharField(max_length=44)),
                ("mint_address", models.CharField(blank=True, default="", max_length=44)),
                ("hour", models.DateTimeField()),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="MeterHourRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "readings",
                    models.BigIntegerField(default=0, help_text="Measured readings (not derived window rows)"),
                ),
                ("pending", models.BigIntegerField(default=0)),
                ("minting", models.BigIntegerField(default=0)),
                ("minted", models.BigIntegerField(default=0)),
                ("failed", models.BigIntegerField(default=0)),
                ("rejected", models.BigIntegerField(default=0)),
                ("recorded", models.BigIntegerField(default=0)),
                ("held", models.BigIntegerField(default=0)),
                ("awaiting_window", models.BigIntegerField(default=0)),
                ("flagged", models.BigIntegerField(default=0, help_text="Rows carrying at least one flag")),
                ("net_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("generated_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("consumed_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("mintable_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("minting_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("last_submitted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "mint_slot",
                    models.BigIntegerField(default=0, help_text="Newest context slot of a batch that minted here"),
                ),
                ("meter_id", models.UUIDField()),
                ("hour", models.DateTimeField()),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("meter_id", "hour"), name="meterhour_unique")],
            },
        ),
        migrations.CreateModel(
            name="OwnerDayRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "readings",
                    models.BigIntegerField(default=0, help_text="Measured readings (not derived window rows)"),
                ),
                ("pending", models.BigIntegerField(default=0)),
                ("minting", models.BigIntegerField(default=0)),
                ("minted", models.BigIntegerField(default=0)),
                ("failed", models.BigIntegerField(default=0)),
                ("rejected", models.BigIntegerField(default=0)),
                ("recorded", models.BigIntegerField(default=0)),
                ("held", models.BigIntegerField(default=0)),
                ("awaiting_window", models.BigIntegerField(default=0)),
                ("flagged", models.BigIntegerField(default=0, help_text="Rows carrying at least one flag")),
                ("net_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("generated_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("consumed_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("mintable_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("minting_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("last_submitted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "mint_slot",
                    models.BigIntegerField(default=0, help_text="Newest context slot of a batch that minted here"),
                ),
                ("user_id", models.UUIDField()),
                ("day", models.DateField()),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("user_id", "day"), name="ownerday_unique")],
            },
        ),
        migrations.CreateModel(
            name="WalletRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "readings",
                    models.BigIntegerField(default=0, help_text="Measured readings (not derived window rows)"),
                ),
                ("pending", models.BigIntegerField(default=0)),
                ("minting", models.BigIntegerField(default=0)),
                ("minted", models.BigIntegerField(default=0)),
                ("failed", models.BigIntegerField(default=0)),
                ("rejected", models.BigIntegerField(default=0)),
                ("recorded", models.BigIntegerField(default=0)),
                ("held", models.BigIntegerField(default=0)),
                ("awaiting_window", models.BigIntegerField(default=0)),
                ("flagged", models.BigIntegerField(default=0, help_text="Rows carrying at least one flag")),
                ("net_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("generated_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("consumed_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("mintable_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_kwh", models.DecimalField(decimal_places=9, default=0, max_digits=30)),
                ("minted_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("minting_units", models.DecimalField(decimal_places=0, default=0, max_digits=40)),
                ("last_submitted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "mint_slot",
                    models.BigIntegerField(default=0, help_text="Newest context slot of a batch that minted here"),
                ),
                ("wallet_address", models.CharField(max_length=44)),
                ("mint_address", models.CharField(blank=True, default="", max_length=44)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("wallet_address", "mint_address"), name="wallet_unique")
                ],
            },
        ),
        migrations.RunSQL(TRIGGER + FOLD + BACKFILL, UNFOLD + UNTRIGGER),
    ]
