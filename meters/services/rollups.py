"""Folding the readings' rollup deltas into the rollup tables (docs/ROLLUPS.md).

The readings table's triggers append what every statement changed to ``meters_readingdelta`` in the
writer's own transaction (an insert, never an update of a shared row, so concurrent ingestion never waits
on a counter). ``meters_rollup_fold`` moves the oldest deltas into the rollups: one statement deletes them
and adds them up, so a crash at any point leaves each delta either folded once or still waiting, never lost
and never counted twice. Reads add the deltas still waiting, so they are exact whether or not a fold ran.
"""

from __future__ import annotations

from django.db import connection, transaction

FOLD_LIMIT = 50_000  # deltas per fold statement: bounds its transaction


def rollups_fold(*, limit: int = FOLD_LIMIT) -> int:
    """Fold up to ``limit`` of the oldest deltas; the number folded, or -1 while another fold runs."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT meters_rollup_fold(%s)", [limit])
        return cursor.fetchone()[0]


def rollups_fold_all(*, limit: int = FOLD_LIMIT) -> int:
    """Fold until no delta waits (or another fold holds the lock); the number folded."""
    total = 0
    while (folded := rollups_fold(limit=limit)) > 0:
        total += folded
        if folded < limit:
            break
    return total
