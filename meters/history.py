"""The fleet's figures minute by minute, for the operator's charts (docs/ROLLUPS.md, "The fleet's minutes").

The rollups say how things stand now; a chart of throughput, backlog and holds over the last day needs how
they stood each minute. The beat's fold records one row per minute (the fleet rollup's figures as of the
minute's last fold, upserted), so a chart reads at most 1,441 rows by primary key, however long the history,
and the per-minute rates are differences of counters between neighbouring minutes. Rows older than
``KEPT`` are deleted as new ones are written. Imported by ``meters.models`` so Django registers the model.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models

KEPT = timedelta(days=2)
# Counters only grow (readings stored, readings minted, readings flagged); gauges are how many wait now.
COUNTERS = ("readings", "minted", "flagged")
GAUGES = ("pending", "minting", "awaiting_window", "held", "failed")


class FleetMinute(models.Model):
    """The fleet rollup's figures as of the last fold in one UTC minute (written only by ``fleet_minute_record``)."""

    minute = models.DateTimeField(primary_key=True)
    readings = models.BigIntegerField(help_text="Measured readings stored so far")
    minted = models.BigIntegerField(help_text="Readings minted so far")
    flagged = models.BigIntegerField(help_text="Readings carrying a flag so far")
    pending = models.BigIntegerField()
    minting = models.BigIntegerField()
    awaiting_window = models.BigIntegerField()
    held = models.BigIntegerField()
    failed = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M}Z: {self.readings} readings, {self.minted} minted"


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
