"""The single-reading write as one server-side function: one round trip instead of four.

``meters_reading_insert`` runs in its caller's transaction (in autocommit, it is the transaction):

1. takes the meter's advisory write lock (the same lock the batch path takes),
2. checks the meter still is as the caller saw it (active, same owner, wallet and public key) and answers
   ``stale`` otherwise, so the caller may work from a briefly cached meter row,
3. inserts the row (every column, given as JSON) unless a reading of that meter lies strictly within
   the duplicate window, and answers ``inserted`` or ``taken``.

PL/pgSQL statements in a VOLATILE function each take a fresh snapshot, so the window check in step 3 sees
every reading committed by the lock's previous holder.
"""

from django.db import migrations

CREATE = """
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
          AND wallet_address = p_wallet AND public_key = p_public_key;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    INSERT INTO meters_meterreading
        SELECT * FROM json_populate_record(NULL::meters_meterreading, p_row)
        WHERE NOT EXISTS (
            SELECT 1 FROM meters_meterreading
            WHERE meter_id = p_meter_id
              AND reading_timestamp > v_moment - p_window AND reading_timestamp < v_moment + p_window
        )
        ON CONFLICT (meter_id, reading_timestamp) DO NOTHING;
    IF FOUND THEN
        RETURN 'inserted';
    END IF;
    RETURN 'taken';
END
$$;
"""

DROP = "DROP FUNCTION IF EXISTS meters_reading_insert(json, integer, uuid, uuid, text, text, interval);"


class Migration(migrations.Migration):
    dependencies = [("meters", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
