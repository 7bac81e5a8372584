"""A new reading's energy picture: its net and directions, what it mints under the mint basis, its VEE verdict.

``assess`` runs under the meter's write lock, on the readings stored around the new one (``MeterContext``,
loaded by ``contexts_load`` with one query for a whole batch), and updates the context so the items of one
batch see each other in timestamp order whatever order they arrived in.

- **Interval readings** carry their signed net kWh (positive surplus, negative deficit, zero) and, optionally,
  ``energy_generated``/``energy_consumed`` and ``interval_seconds``.
- **Register reads** carry totals; the interval's energy is the difference to the previous read of the meter
  (in timestamp order, after the meter's baseline). A late read that falls between two stored ones splits the
  gap: the later read's energy is re-derived from the late one (``Resplit``), unless that later read has been
  priced, claimed or settled in a window already, in which case the late read adds nothing
  (``late_register_read``): its energy was counted once, in the later read.
- **Mint basis** (``TOKENIZATION_MINT_BASIS``): ``reading`` mints a reading's positive net, ``export`` its
  export/generation, ``window`` nothing per reading (``awaiting_window``; the window's net surplus is minted once
  per (meter, window) by ``minting.services.windows``).
- **Signature coverage**: when a reading's signature was checked, every quantity its mint depends on must be
  one the verified form covers (``meters.signatures``); otherwise it is held with ``unsigned_<quantity>`` flags
  (or refused ``signature_incomplete`` when ``METER_SIGNATURE_UNCOVERED=reject``), never minted silently.
- **VEE** (``settings.VEE``, per-meter overrides in ``Meter.vee_rules``): each rule flags, holds (status ``held``,
  never minted until an operator approves) or rejects (a 400 with code ``vee_<rule>``).
"""

from __future__ import annotations

import bisect
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection

from gridtoken.exceptions import ValidationFailed
from meters import signatures
from meters.models import MeterReading
from meters.registers import Registers, derive, overlay
from meters.selectors import MeterRow
from meters.timestamps import LOCAL_TIME_AMBIGUOUS, LOCAL_TIME_NONEXISTENT
from meters.validation import KWH_COLUMN_LIMIT, KWH_QUANTUM, ReadingInput, is_wallet_address

Status, Source = MeterReading.Status, MeterReading.Source
TABLE = MeterReading._meta.db_table
ZERO = Decimal(0)
# Readings whose energy may still be re-derived: not priced, claimed, minted or counted in a settled window.
OPEN_STATUSES = (Status.PENDING, Status.HELD, Status.AWAITING_WINDOW)
HELD_TIMES = frozenset((LOCAL_TIME_AMBIGUOUS, LOCAL_TIME_NONEXISTENT))
VEE_MESSAGES = {
    "capacity": "The energy is more than the meter's rated capacity can produce in the interval.",
    "spike": "The energy is far above this meter's recent readings.",
    "frozen": "The meter's registers have not moved for longer than allowed.",
    "gap": "Readings are missing before this one.",
    "clock_drift": "The reading's timestamp is ahead of the server's clock.",
    "meter_quality": "The meter marked this reading as not good.",
}


@dataclass(slots=True)
class Neighbour:
    """A stored (or earlier accepted) reading of the meter, as far as assessing a new one needs it."""

    id: uuid.UUID
    moment: datetime
    source: str
    status: str
    mintable: Decimal
    registers: Registers | None
    window_start: datetime | None
    priced: bool
    flags: list[str]

    @property
    def open(self) -> bool:
        return not self.priced and (
            self.status in OPEN_STATUSES or (self.status == Status.RECORDED and self.window_start is None)
        )


@dataclass(slots=True)
class MeterContext:
    """The readings around a batch's items of one meter, in timestamp order, and its settled windows."""

    readings: list[Neighbour] = field(default_factory=list)
    settled_windows: set[datetime] = field(default_factory=set)

    def add(self, neighbour: Neighbour) -> None:
        moments = [reading.moment for reading in self.readings]
        self.readings.insert(bisect.bisect(moments, neighbour.moment), neighbour)

    def before(self, moment: datetime, *, source: str | None = None, after: datetime | None = None):
        for reading in reversed(self.readings):
            if reading.moment < moment and (source is None or reading.source == source):
                return None if after is not None and reading.moment < after else reading
        return None

    def after(self, moment: datetime, *, source: str) -> Neighbour | None:
        for reading in self.readings:
            if reading.moment > moment and reading.source == source:
                return reading
        return None


@dataclass(slots=True)
class Resplit:
    """A stored register read whose energy a late read re-derives (applied only if it is still open)."""

    reading_id: uuid.UUID
    kwh: Decimal
    generated: Decimal
    consumed: Decimal
    mintable: Decimal
    status: str
    interval_secs: int


@dataclass(slots=True)
class Assessment:
    """The derived columns of one new row."""

    kwh: Decimal
    generated: Decimal | None
    consumed: Decimal | None
    mintable: Decimal
    status: str
    flags: list[str]
    window_start: datetime | None = None
    resplit: Resplit | None = None
    interval_secs: int | None = None  # as sent, or a register read's time since the previous read
    registers: Registers | None = None  # a register read's totals, left-out ones overlaid from the previous read


def window_of(moment: datetime) -> datetime:
    """The start of the settlement window ``moment`` falls in (windows are aligned to the hour, in UTC)."""
    secs = settings.TOKENIZATION.window_secs
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % secs, tz=UTC)


def needs_context(item: ReadingInput) -> bool:
    """Whether assessing ``item`` needs the meter's other readings (else the single post's one round trip)."""
    vee = settings.VEE
    return (
        item.source == Source.REGISTER
        or item.timestamp_alternative is not None  # decided against the meter's readings, under its lock
        or settings.TOKENIZATION.mint_basis == "window"
        or (item.interval_secs is not None and vee.actions["gap"] != "off")
        or vee.actions["spike"] != "off"
    )


CONTEXT_SQL = (
    "SELECT q.meter_id, r.id, r.reading_timestamp, r.source, r.status, r.mintable_kwh, r.import_register_kwh,"  # noqa: S608
    " r.export_register_kwh, r.window_start, r.token_amount IS NOT NULL OR r.batch_id IS NOT NULL, r.flags"
    " FROM json_to_recordset(%(spans)s::json) AS q(meter_id uuid, lo timestamptz, hi timestamptz, since timestamptz)"
    " CROSS JOIN LATERAL ("
    f"(SELECT * FROM {TABLE} WHERE meter_id = q.meter_id AND NOT (source = 'window')"
    "  AND reading_timestamp < q.lo AND reading_timestamp >= q.since ORDER BY reading_timestamp DESC LIMIT %(history)s)"
    f" UNION ALL (SELECT * FROM {TABLE} WHERE meter_id = q.meter_id AND NOT (source = 'window')"
    "  AND reading_timestamp >= q.lo AND reading_timestamp <= q.hi)"
    f" UNION ALL (SELECT * FROM {TABLE} WHERE meter_id = q.meter_id AND source = 'register'"
    "  AND reading_timestamp < q.lo AND reading_timestamp >= q.since ORDER BY reading_timestamp DESC LIMIT 1)"
    f" UNION ALL (SELECT * FROM {TABLE} WHERE meter_id = q.meter_id AND source = 'register'"
    "  AND reading_timestamp > q.hi ORDER BY reading_timestamp LIMIT 1)"
    f" UNION ALL (SELECT * FROM {TABLE} WHERE meter_id = q.meter_id AND source = 'window'"
    "  AND window_start >= q.lo - %(window)s AND window_start <= q.hi)"
    ") AS r"
)
FROZEN_SINCE_SQL = (
    f"SELECT min(reading_timestamp) FROM {TABLE} WHERE meter_id = %s AND source = 'register'"  # noqa: S608
    " AND reading_timestamp <= %s AND reading_timestamp >= %s"
    " AND import_register_kwh IS NOT DISTINCT FROM %s AND export_register_kwh IS NOT DISTINCT FROM %s"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def contexts_load(cursor, items: list[tuple[ReadingInput, MeterRow]]) -> dict[uuid.UUID, MeterContext]:
    """One query: for each meter, its readings within the items' time span, the recent history before it, the
    register reads just outside it, and its settled windows in the span."""
    spans: dict[uuid.UUID, list] = {}
    for item, meter in items:
        span = spans.setdefault(meter.id, [item.reading_timestamp, item.reading_timestamp, meter])
        span[0], span[1] = min(span[0], item.reading_timestamp), max(span[1], item.reading_timestamp)
    rows = [
        {
            "meter_id": str(meter_id),
            "lo": lo.isoformat(),
            "hi": hi.isoformat(),
            "since": (meter.register_baseline_at or _EPOCH).isoformat(),
        }
        for meter_id, (lo, hi, meter) in spans.items()
    ]
    window = timedelta(seconds=settings.TOKENIZATION.window_secs)
    cursor.execute(CONTEXT_SQL, {"spans": json.dumps(rows), "history": settings.VEE.spike_history, "window": window})
    contexts = {meter_id: MeterContext() for meter_id in spans}
    seen: set[uuid.UUID] = set()
    for meter_id, *row in sorted(cursor.fetchall(), key=lambda row: row[2]):
        reading_id, moment, source, status, mintable, imported, exported, window_start, priced, flags = row
        if source == Source.WINDOW:
            contexts[meter_id].settled_windows.add(window_start)
            continue
        if reading_id in seen:
            continue
        seen.add(reading_id)
        registers = Registers(imported, exported) if source == Source.REGISTER else None
        flags = json.loads(flags) if isinstance(flags, str) else flags
        contexts[meter_id].readings.append(
            Neighbour(reading_id, moment, source, status, mintable, registers, window_start, priced, flags)
        )
    return contexts


def _rules(meter: MeterRow) -> dict:
    rules = meter.vee_rules
    return json.loads(rules) if isinstance(rules, str) else (rules or {})


def _mintable(kwh: Decimal, exported: Decimal | None) -> Decimal:
    basis = settings.TOKENIZATION.mint_basis
    if basis == "export" and exported is not None:
        return exported
    return max(kwh, ZERO)


def _status(mintable: Decimal, window_start: datetime | None) -> str:
    if window_start is not None:
        return Status.AWAITING_WINDOW
    return Status.PENDING if mintable > 0 else Status.RECORDED


def assess(
    item: ReadingInput, meter: MeterRow, context: MeterContext | None, *, reading_id: uuid.UUID, now: datetime
) -> Assessment:
    """The new row's derived columns; raises ValidationFailed when a VEE rule set to ``reject`` fails."""
    flags = list(item.flags or ())
    if item.wallet_address is not None and item.wallet_address != meter.wallet_address:
        valid = 32 <= len(item.wallet_address) <= 44 and is_wallet_address(item.wallet_address)
        flags.append("wallet_mismatch" if valid else "wallet_invalid")
    resplit = None
    elapsed: timedelta | None = None
    registers = item.registers
    if item.source == Source.REGISTER:
        kwh, generated, consumed, elapsed, resplit, registers = _register(item, meter, context, flags)
        exported = generated
    else:
        kwh, generated, consumed = item.kwh, item.generated, item.consumed
        exported = generated if generated is not None else max(kwh, ZERO)
        if item.interval_secs is not None:
            elapsed = timedelta(seconds=item.interval_secs)
    mintable = _mintable(kwh, exported)
    window_start = None
    if settings.TOKENIZATION.mint_basis == "window":
        window_start = window_of(item.reading_timestamp)
        mintable = ZERO
        if context is not None and window_start in context.settled_windows:
            flags.append("late_settled_window")  # stored and shown; the window was minted already
            window_start = None
    if mintable > settings.TOKENIZATION.max_reading_kwh:
        flags.append("above_maximum")
    status = _status(mintable, window_start)  # a late reading into a settled window: nothing to mint, recorded
    failed = _vee(item, meter, context, registers, exported=exported, elapsed=elapsed, now=now)
    rules = _rules(meter)
    for rule in failed:
        action = settings.VEE.action(rule, rules)
        if action == "reject":
            raise ValidationFailed(f"vee_{rule}", VEE_MESSAGES[rule])
        flags.append(rule)
        if action == "hold":
            status = Status.HELD
    if "above_maximum" in flags or HELD_TIMES & set(flags):
        status = Status.HELD  # a jump beyond the largest reading, a local time not read safely: never minted unseen
    unsigned = signatures.uncovered(
        item, basis=settings.TOKENIZATION.mint_basis, minting=mintable > 0 or window_start is not None
    )
    if unsigned:
        if settings.INGEST.signature_uncovered == "reject":
            raise ValidationFailed(
                "signature_incomplete",
                f"The signature does not cover the {', '.join(unsigned)} this reading would mint; sign the "
                "gridtoken:v2 form (or the bridge's JSON form).",
                field="meter_signature",
                details={"unsigned": unsigned},
            )
        flags.extend(f"unsigned_{quantity}" for quantity in unsigned)
        status = Status.HELD
    if context is not None:
        context.add(
            Neighbour(
                reading_id,
                item.reading_timestamp,
                item.source,
                status,
                mintable,
                registers,
                window_start,
                False,
                flags,
            )
        )
    seconds = item.interval_secs if elapsed is None else int(elapsed.total_seconds())
    return Assessment(
        _exact(kwh), _exact(generated), _exact(consumed), _exact(mintable), status, list(dict.fromkeys(flags)),
        window_start, resplit, seconds, registers,
    )  # fmt: skip


def _exact(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(KWH_QUANTUM)


def late_register_read(verdict: Assessment) -> Assessment:
    """A late read whose following read was claimed while the late one was assessed: it adds no energy."""
    held = verdict.status == Status.HELD
    zero = _exact(ZERO)
    status = Status.HELD if held else Status.RECORDED
    flags = [*verdict.flags, "late_register_read"]
    return Assessment(
        zero, zero, zero, zero, status, flags, interval_secs=verdict.interval_secs, registers=verdict.registers
    )


def _register(item: ReadingInput, meter: MeterRow, context: MeterContext | None, flags: list[str]):
    rollover = meter.register_max_kwh
    previous = context.before(item.reading_timestamp, source=Source.REGISTER, after=meter.register_baseline_at)
    if previous is not None and item.register_start is not None and item.register_start > previous.moment:
        flags.append("register_reset")  # the device says its registers restarted since the previous read
        previous = None
    registers = overlay(item.registers, previous.registers if previous else None)
    if registers != item.registers:
        flags.append("registers_overlaid")  # a partial update: the left-out registers did not move
    delta = derive(registers, previous.registers if previous else None, rollover_kwh=rollover)
    flags.extend(delta.flags)
    imported, exported = delta.imported, delta.exported
    if max(imported, exported) >= KWH_COLUMN_LIMIT:  # far beyond any interval: a corrupt or foreign register
        flags.append("register_reset")
        imported = exported = ZERO
    elapsed = item.reading_timestamp - previous.moment if previous else None
    resplit = None
    following = context.after(item.reading_timestamp, source=Source.REGISTER)
    if following is not None:
        if following.open:
            later = derive(following.registers, registers, rollover_kwh=rollover)
            net = later.net
            mintable = ZERO if following.window_start is not None else _mintable(net, later.exported)
            status = following.status
            if status in (Status.PENDING, Status.RECORDED):
                status = _status(mintable, None)
            seconds = int((following.moment - item.reading_timestamp).total_seconds())
            resplit = Resplit(following.id, net, later.exported, later.imported, mintable, status, seconds)
        else:
            flags.append("late_register_read")  # the later read's energy, already counted, covers this one
            imported = exported = ZERO
    return exported - imported, exported, imported, elapsed, resplit, registers


def _vee(item, meter: MeterRow, context, registers, *, exported, elapsed, now) -> list[str]:
    """The VEE rules this reading fails."""
    vee = settings.VEE
    failed = []
    if meter.capacity_kw is not None and elapsed is not None and exported:
        hours = Decimal(int(elapsed.total_seconds())) / 3600
        if exported > meter.capacity_kw * hours * vee.capacity_margin:
            failed.append("capacity")
    if context is not None and exported:
        history = [r.mintable for r in context.readings if r.moment < item.reading_timestamp and r.mintable > 0]
        history = history[-vee.spike_history :]
        if len(history) >= vee.spike_history:
            mean = sum(history, ZERO) / len(history)
            if exported > mean * vee.spike_factor:
                failed.append("spike")
    if item.source == Source.REGISTER and context is not None and _frozen(item, registers, meter, context):
        failed.append("frozen")
    if item.source == Source.INTERVAL and item.interval_secs is not None and context is not None:
        previous = context.before(item.reading_timestamp)
        expected = item.reading_timestamp - timedelta(seconds=item.interval_secs + vee.gap_tolerance_secs)
        if previous is not None and previous.moment < expected:
            failed.append("gap")
    if item.reading_timestamp > now + timedelta(seconds=vee.clock_drift_secs):
        failed.append("clock_drift")
    if item.meter_quality:
        failed.append("meter_quality")
    return failed


def _frozen(item: ReadingInput, registers: Registers, meter: MeterRow, context: MeterContext) -> bool:
    """Both registers unchanged since a read at least VEE_FROZEN_SECS before this one (the run of equal reads is
    followed back through the context, then, if it starts before what the context holds, in the database)."""
    limit = item.reading_timestamp - timedelta(seconds=settings.VEE.frozen_secs)
    run_start = None
    for reading in reversed(context.readings):
        if reading.moment >= item.reading_timestamp or reading.source != Source.REGISTER:
            continue
        if meter.register_baseline_at is not None and reading.moment < meter.register_baseline_at:
            break
        if reading.registers != registers:
            return run_start is not None and run_start <= limit
        run_start = reading.moment
    if run_start is None:
        return False
    if run_start <= limit:
        return True
    start = meter.register_baseline_at or _EPOCH
    with connection.cursor() as cursor:
        cursor.execute(FROZEN_SINCE_SQL, [meter.id, run_start, start, registers.import_kwh, registers.export_kwh])
        since = cursor.fetchone()[0]
    return since is not None and since <= limit
