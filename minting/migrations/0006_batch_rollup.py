"""The mint batches' rollup (docs/ROLLUPS.md): counts by status and the created-to-settled histogram that
/metrics serves, kept as batches change. Statement-level triggers on the batch table append what each
statement changed to minting_batchdelta; minting_batch_rollup_fold adds the deltas to minting_batchrollup and
deletes them in one statement, as the readings' fold does (meters 0007)."""

from django.db import migrations, models

# Frozen with this migration (minting.models.BATCH_DURATION_BUCKETS names the same bounds).
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DURATION = "b.settled_at - b.created_at"
# column -> its value for one batch row ``b``
SUMS = {
    "batches": "1",
    **{f"duration_le_{i}": f"({DURATION} <= interval '{bound} seconds')::int" for i, bound in enumerate(BUCKETS)},
    "duration_count": "(b.settled_at IS NOT NULL)::int",
    "duration_seconds": f"coalesce(extract(epoch FROM {DURATION}), 0)",
}
COLUMNS = ("status", *SUMS)
# An update that changes none of these (send attempts, sent_at, the error text) writes no delta.
TRACKED = ("status", "created_at", "settled_at")


def contributions(rows: str, sign: int) -> str:
    values = ", ".join(f"{sign} * coalesce({expression}, 0) AS {column}" for column, expression in SUMS.items())
    return f"SELECT b.status, {values} FROM {rows} b"


def grouped(source: str, table: str = "minting_batchdelta") -> str:
    sums = ", ".join(f"sum({column})" for column in SUMS)
    moved = " OR ".join(f"sum({column}) <> 0" for column in SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) "
        f"SELECT status, {sums} FROM ({source}) c GROUP BY status HAVING {moved}"
    )


CHANGED = " OR ".join(f"o.{column} IS DISTINCT FROM n.{column}" for column in TRACKED)
TRIGGER = f"""
CREATE FUNCTION minting_batch_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER minting_batch_rollup_insert AFTER INSERT ON minting_mintbatch
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION minting_batch_rollup();
CREATE TRIGGER minting_batch_rollup_update AFTER UPDATE ON minting_mintbatch
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION minting_batch_rollup();
CREATE TRIGGER minting_batch_rollup_delete AFTER DELETE ON minting_mintbatch
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION minting_batch_rollup();
"""
UNTRIGGER = """
DROP TRIGGER minting_batch_rollup_insert ON minting_mintbatch;
DROP TRIGGER minting_batch_rollup_update ON minting_mintbatch;
DROP TRIGGER minting_batch_rollup_delete ON minting_mintbatch;
DROP FUNCTION minting_batch_rollup();
"""
ADDED = ", ".join(f"{column} = t.{column} + excluded.{column}" for column in SUMS)
# 1. One fold at a time (a transaction-scoped advisory lock; a second caller returns -1 at once).
# 2. One statement deletes the oldest p_limit deltas and adds them to the rollup: it commits whole or not at
#    all, so a crash can neither lose nor double-count a delta.
FOLD = f"""
CREATE FUNCTION minting_batch_rollup_fold(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_folded integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('minting_batch_rollup_fold')) THEN
        RETURN -1;
    END IF;
    WITH moved AS (
        DELETE FROM minting_batchdelta WHERE id IN (SELECT id FROM minting_batchdelta ORDER BY id LIMIT p_limit)
        RETURNING *
    ), added AS (
        INSERT INTO minting_batchrollup AS t ({", ".join(COLUMNS)})
        SELECT status, {", ".join(f"sum({column})" for column in SUMS)} FROM moved GROUP BY status ORDER BY status
        ON CONFLICT (status) DO UPDATE SET {ADDED}
    )
    SELECT count(*) INTO v_folded FROM moved;
    RETURN v_folded;
END
$$;
"""
UNFOLD = "DROP FUNCTION minting_batch_rollup_fold(integer);"
# Batches stored before this migration go straight into the rollup: the trigger created in the same
# transaction holds the table's writers until it commits, so nothing changes between the two.
BACKFILL = grouped(contributions("minting_mintbatch", 1), table="minting_batchrollup")


class Migration(migrations.Migration):

    dependencies = [
        ('minting', '0005_batch_time_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='BatchDelta',
            fields=[
                ('batches', models.BigIntegerField(default=0)),
                ('duration_le_0', models.BigIntegerField(default=0)),
                ('duration_le_1', models.BigIntegerField(default=0)),
                ('duration_le_2', models.BigIntegerField(default=0)),
                ('duration_le_3', models.BigIntegerField(default=0)),
                ('duration_le_4', models.BigIntegerField(default=0)),
                ('duration_le_5', models.BigIntegerField(default=0)),
                ('duration_le_6', models.BigIntegerField(default=0)),
                ('duration_le_7', models.BigIntegerField(default=0)),
                ('duration_le_8', models.BigIntegerField(default=0)),
                ('duration_le_9', models.BigIntegerField(default=0)),
                ('duration_le_10', models.BigIntegerField(default=0)),
                ('duration_count', models.BigIntegerField(default=0)),
                ('duration_seconds', models.DecimalField(decimal_places=6, default=0, max_digits=30)),
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('status', models.CharField(max_length=16)),
            ],
            options={
                'abstract': False,
            },
        ),
        migrations.CreateModel(
            name='BatchRollup',
            fields=[
                ('batches', models.BigIntegerField(default=0)),
                ('duration_le_0', models.BigIntegerField(default=0)),
                ('duration_le_1', models.BigIntegerField(default=0)),
                ('duration_le_2', models.BigIntegerField(default=0)),
                ('duration_le_3', models.BigIntegerField(default=0)),
                ('duration_le_4', models.BigIntegerField(default=0)),
                ('duration_le_5', models.BigIntegerField(default=0)),
                ('duration_le_6', models.BigIntegerField(default=0)),
                ('duration_le_7', models.BigIntegerField(default=0)),
                ('duration_le_8', models.BigIntegerField(default=0)),
                ('duration_le_9', models.BigIntegerField(default=0)),
                ('duration_le_10', models.BigIntegerField(default=0)),
                ('duration_count', models.BigIntegerField(default=0)),
                ('duration_seconds', models.DecimalField(decimal_places=6, default=0, max_digits=30)),
                ('status', models.CharField(max_length=16, primary_key=True, serialize=False)),
            ],
            options={
                'abstract': False,
            },
        ),
        migrations.RunSQL(TRIGGER + FOLD + BACKFILL, UNFOLD + UNTRIGGER),
        # The oldest in-flight batch, reconciliation's signed batches and the admin's status filter read one
        # index on (status, created_at); the partial one on signed batches served only the first two.
        migrations.RemoveIndex(model_name="mintbatch", name="batch_in_flight_idx"),
        migrations.AddIndex(
            model_name="mintbatch",
            index=models.Index(fields=["status", "created_at"], name="batch_status_created_idx"),
        ),
    ]
