"""Folding the readings' rollup deltas into the rollup tables (docs/ROLLUPS.md).

The readings table's triggers append what every statement changed to ``meters_readingdelta`` in the
writer's own transaction (an insert, never an update of a shared row, so concurrent ingestion never waits
on a counter). ``meters_rollup_fold`` moves the oldest deltas into the rollups: one statement deletes them
and adds them up, so a crash at any point leaves each delta either folded once or still waiting, never lost
and never counted twice. Reads add the deltas still waiting, so they are exact whether or not a fold ran.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from meters.history import COUNTERS, GAUGES, KEPT, FleetMinute, minute_of
from meters.selectors import fleet_totals

FOLD_LIMIT = 50_000  # deltas per fold statement: bounds its transaction
READINGS_FOLD = "meters_rollup_fold"
# The fold functions of every delta log kept this way: the readings' (migration 0007), their flags' (0013) and
# those an upper app registers at start-up (the mint batches', minting 0006). Each takes a limit and answers
# the number folded, or -1 while another fold of the same log runs.
_folds = [READINGS_FOLD, "meters_flag_rollup_fold"]


def register_fold(function: str) -> None:
    """Fold the delta log of ``function`` (a SQL function shaped as meters_rollup_fold) with the readings'."""
    if function not in _folds:
        _folds.append(function)


def rollups_fold(*, limit: int = FOLD_LIMIT, fold: str = READINGS_FOLD) -> int:
    """Fold up to ``limit`` of the oldest deltas of one log; the number folded, or -1 while another fold runs."""
    if fold not in _folds:
        raise ValueError(f"{fold!r} is not a registered fold: one of {_folds}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT {fold}(%s)", [limit])
        return cursor.fetchone()[0]


def rollups_fold_all(*, limit: int = FOLD_LIMIT) -> int:
    """Fold every log until no delta waits (or another fold holds its lock); the number folded."""
    total = 0
    for fold in _folds:
        while (folded := rollups_fold(limit=limit, fold=fold)) > 0:
            total += folded
            if folded < limit:
                break
    return total


def fleet_minute_record(*, now: datetime | None = None) -> datetime:
    """Upsert this minute's row of the fleet's minutes (meters/history.py) from the fleet rollup (exact: it adds
    the deltas not folded yet) and delete the rows past ``KEPT``; the minute written. Harmless twice: the
    second run writes the same minute."""
    minute = minute_of(now or timezone.now())
    totals = fleet_totals()
    FleetMinute.objects.update_or_create(minute=minute, defaults={name: totals[name] for name in (*COUNTERS, *GAUGES)})
    FleetMinute.objects.filter(minute__lt=minute - KEPT).delete()
    return minute
