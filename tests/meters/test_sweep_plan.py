"""The minting sweep's query is served by the partial index ``reading_pending_due_idx``."""

import re

import pytest
from django.db import connection

from meters.models import MeterReading
from tests.factories import ReadingFactory

SWEEP = (
    "SELECT id FROM meters_meterreading WHERE status = 'pending' AND next_attempt_at <= now() "
    "ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED"
)


@pytest.mark.django_db
def test_the_pending_sweep_uses_the_partial_index():
    ReadingFactory.create_batch(5)
    ReadingFactory.create_batch(5, status=MeterReading.Status.MINTED, minted=True, mint_tx_signature="sig")

    with connection.cursor() as cursor:
        # On a table this small the planner would rightly scan it; forbid that to see the index is usable.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("ANALYZE meters_meterreading")
        cursor.execute(f"EXPLAIN {SWEEP}")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "reading_pending_due_idx" in plan, plan
    # The index already yields next_attempt_at order: no Sort node (a Merge Append of the monthly partitions'
    # index scans keeps that order; its "Sort Key" line sorts nothing).
    assert not re.search(r"^(\s*->)?\s*Sort\s+\(", plan, re.MULTILINE), plan
