"""What one connection asked to receive. Filters only narrow: what a user may see is decided by groups."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

USER_EVENT_TYPES = frozenset(
    {
        "meter_reading_received",
        "tokens_minted",
        "meter_reading_validation_failed",
        "mint_failed",
        "meter_reading_reviewed",
        "certificate_issued",
        "certificate_changed",
        "hour_matched",
    }
)
OPERATOR_EVENT_TYPES = USER_EVENT_TYPES | {"batch_minting_completed", "certificate_held"}
MAX_METERS = 1000
MAX_METER_LENGTH = 64


class FilterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class EventFilter:
    """``None`` in a field means "no constraint". An event that lacks a field (a batch has no meter and no
    kWh) passes that field's constraint; ``event_types`` is the way to leave such events out."""

    event_types: frozenset[str] | None = None
    meters: frozenset[str] | None = None
    min_amount: Decimal | None = None

    def matches(self, event: dict) -> bool:
        if self.event_types is not None and event.get("type") not in self.event_types:
            return False
        if self.meters is not None:
            identities = {event.get("meter_serial"), event.get("meter_id")} - {None}
            if identities and not identities & self.meters:
                return False
        if self.min_amount is not None and event.get("kwh_amount") is not None:
            try:
                if Decimal(event["kwh_amount"]) < self.min_amount:
                    return False
            except (InvalidOperation, TypeError):
                return False
        return True

    def as_dict(self) -> dict:
        return {
            "event_types": None if self.event_types is None else sorted(self.event_types),
            "meters": None if self.meters is None else sorted(self.meters),
            "min_amount": None if self.min_amount is None else format(self.min_amount, "f"),
        }


def parse_filter(message: dict, *, is_operator: bool) -> EventFilter:
    """Build the filter of a ``subscribe`` message; raises FilterError naming the first bad field."""
    allowed = OPERATOR_EVENT_TYPES if is_operator else USER_EVENT_TYPES
    event_types = message.get("event_types")
    if event_types is not None:
        if not isinstance(event_types, list) or not all(isinstance(t, str) for t in event_types):
            raise FilterError("event_types", "event_types must be a list of event type names")
        unknown = sorted(set(event_types) - allowed)
        if unknown:
            raise FilterError("event_types", f"unknown or not permitted event types: {', '.join(unknown)}")
        event_types = frozenset(event_types)

    meters = message.get("meters")
    if meters is not None:
        if not isinstance(meters, list) or not all(
            isinstance(m, str) and 0 < len(m) <= MAX_METER_LENGTH for m in meters
        ):
            raise FilterError("meters", f"meters must be a list of meter serials or ids (1..{MAX_METER_LENGTH} chars)")
        if len(meters) > MAX_METERS:
            raise FilterError("meters", f"at most {MAX_METERS} meters")
        meters = frozenset(meters)

    min_amount = message.get("min_amount")
    if min_amount is not None:
        # The consumer parses JSON numbers as Decimal, so no float ever carries an amount.
        if isinstance(min_amount, bool) or not isinstance(min_amount, str | int | Decimal):
            raise FilterError("min_amount", "min_amount must be a decimal number or string")
        try:
            min_amount = Decimal(str(min_amount))
        except InvalidOperation:
            raise FilterError("min_amount", "min_amount must be a decimal number or string") from None
        if not min_amount.is_finite() or min_amount < 0:
            raise FilterError("min_amount", "min_amount must be a finite number >= 0")

    return EventFilter(event_types=event_types, meters=meters, min_amount=min_amount)
