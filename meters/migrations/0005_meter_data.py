"""Meter data: the energy picture of a reading (source, directions, registers, mintable amount, flags, window),
meter capacity and register behaviour. Existing readings were all positive per-reading mints: their mintable
amount is their kWh. ``meters_reading_insert`` is replaced so its duplicate check and ON CONFLICT target skip
derived window rows (the unique (meter, reading_timestamp) index is now partial)."""

from django.db import migrations, models

FILL = "UPDATE meters_meterreading SET mintable_kwh = kwh_amount"
# Serves the flagged-readings metric and the dashboard's counts (ops/metrics.py: FLAGGED_SQL), which
# filter with exactly this predicate; few readings carry flags, so the index stays small.
FLAGGED_INDEX = (
    "CREATE INDEX reading_flagged_idx ON meters_meterreading (submitted_at) WHERE flags <> '[]'::jsonb",
    "DROP INDEX reading_flagged_idx",
)

FUNCTION = """
CREATE OR REPLACE FUNCTION meters_reading_insert(
    p_row json, p_lock_class integer, p_meter_id uuid, p_owner_id uuid, p_wallet text, p_public_key text,
    p_window interval
) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_moment timestamptz := (p_row->>'reading_timestamp')::timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_class, hashtext(p_meter_id::text));
    PERFORM 1 FROM meters_meter
        WHERE id = p_meter_id AND status = 'active' AND owner_id = p_owner_id
          AND wallet_address = p_wallet AND public_key = p_public_key
        FOR SHARE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    INSERT INTO meters_meterreading
        SELECT * FROM json_populate_record(NULL::meters_meterreading, p_row)
        WHERE NOT EXISTS (
            SELECT 1 FROM meters_meterreading
            WHERE meter_id = p_meter_id AND NOT (source = 'window')
              AND reading_timestamp > v_moment - p_window AND reading_timestamp < v_moment + p_window
        )
        ON CONFLICT (meter_id, reading_timestamp) WHERE NOT (source = 'window') DO NOTHING;
    IF FOUND THEN
        RETURN 'inserted';
    END IF;
    RETURN 'taken';
END
$$;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('meters', '0004_reading_pricing'),
        ('minting', '0003_cluster_decisions'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='meterreading',
            name='reading_unique_meter_timestamp',
        ),
        migrations.RemoveConstraint(
            model_name='meterreading',
            name='reading_kwh_positive',
        ),
        migrations.AddField(
            model_name='meter',
            name='capacity_kw',
            field=models.DecimalField(blank=True, decimal_places=3, help_text="Rated capacity; VEE's capacity check", max_digits=12, null=True),
        ),
        migrations.AddField(
            model_name='meter',
            name='register_baseline_at',
            field=models.DateTimeField(blank=True, help_text='Register reads from here on start a new baseline (meter replaced)', null=True),
        ),
        migrations.AddField(
            model_name='meter',
            name='register_max_kwh',
            field=models.DecimalField(blank=True, decimal_places=9, help_text='Where the energy registers roll over to 0 (e.g. 1000000 for six kWh digits); empty: never', max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='meter',
            name='vee_rules',
            field=models.JSONField(blank=True, default=dict, help_text='Per-rule action overrides, e.g. {"spike": "flag", "capacity": "reject"}'),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='consumed_kwh',
            field=models.DecimalField(blank=True, decimal_places=9, max_digits=18, null=True),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='export_register_kwh',
            field=models.DecimalField(blank=True, decimal_places=9, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='flags',
            field=models.JSONField(blank=True, default=list, help_text='Quality and VEE flags (docs/METER_DATA.md)'),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='generated_kwh',
            field=models.DecimalField(blank=True, decimal_places=9, max_digits=18, null=True),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='import_register_kwh',
            field=models.DecimalField(blank=True, decimal_places=9, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='interval_secs',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='mintable_kwh',
            field=models.DecimalField(decimal_places=9, default=0, max_digits=18),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='source',
            field=models.CharField(choices=[('interval', 'Interval'), ('register', 'Register'), ('window', 'Window')], default='interval', max_length=16),
        ),
        migrations.AddField(
            model_name='meterreading',
            name='window_start',
            field=models.DateTimeField(blank=True, help_text='Window basis: its settlement window', null=True),
        ),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name='meterreading',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('minting', 'Minting'), ('minted', 'Minted'), ('failed', 'Failed'), ('rejected', 'Rejected'), ('recorded', 'Recorded'), ('held', 'Held'), ('awaiting_window', 'Awaiting Window')], default='pending', max_length=16),
        ),
        migrations.AddIndex(
            model_name='meterreading',
            index=models.Index(condition=models.Q(('status', 'awaiting_window')), fields=['meter', 'window_start'], name='reading_awaiting_idx'),
        ),
        migrations.AddIndex(
            model_name='meterreading',
            index=models.Index(condition=models.Q(('status', 'held')), fields=['status'], name='reading_held_idx'),
        ),
        migrations.AddConstraint(
            model_name='meterreading',
            constraint=models.UniqueConstraint(condition=models.Q(('source', 'window'), _negated=True), fields=('meter', 'reading_timestamp'), name='reading_unique_meter_timestamp'),
        ),
        migrations.AddConstraint(
            model_name='meterreading',
            constraint=models.UniqueConstraint(condition=models.Q(('source', 'window')), fields=('meter', 'window_start'), name='reading_one_per_window'),
        ),
        migrations.AddConstraint(
            model_name='meterreading',
            constraint=models.CheckConstraint(condition=models.Q(('mintable_kwh__gte', 0)), name='reading_mintable_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='meterreading',
            constraint=models.CheckConstraint(condition=models.Q(('mintable_kwh__gt', 0), ('status__in', ['recorded', 'held', 'awaiting_window', 'rejected']), _connector='OR'), name='reading_minted_only_if_mintable'),
        ),
        migrations.RunSQL(FUNCTION, migrations.RunSQL.noop),
        migrations.RunSQL(*FLAGGED_INDEX),
    ]
