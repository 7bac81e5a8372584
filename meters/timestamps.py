"""Reading timestamps: RFC 3339 with an offset, or a device's local time with its IANA zone, and the window of
accepted times. A local time that a daylight saving change repeats or skips has two instants
(``parse_local_timestamp``); ``meters.services.local_time`` decides between them under the meter's lock.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from gridtoken.exceptions import ValidationFailed

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$",
)
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?$")
# A local time that cannot be read safely: held for an operator (docs/METER_DATA.md "Local time").
LOCAL_TIME_NONEXISTENT, LOCAL_TIME_AMBIGUOUS = "local_time_nonexistent", "local_time_ambiguous"


def _invalid(code: str, message: str, name: str) -> ValidationFailed:
    return ValidationFailed(code, message, field=name)


def parse_timestamp(value: object, name: str) -> datetime:
    """An RFC 3339 timestamp with an offset, in UTC (sub-microsecond digits are dropped)."""
    if not isinstance(value, str) or len(value) > 40:
        raise _invalid("validation_error", "An RFC 3339 timestamp with an offset is required.", name)
    moment = _rfc3339(value)
    if moment is None:
        raise _invalid("validation_error", "An RFC 3339 timestamp with an offset is required.", name)
    return moment


def parse_time_zone(value: object, name: str = "time_zone") -> ZoneInfo:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise _invalid("validation_error", "An IANA time zone such as Europe/Berlin is required.", name)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid("validation_error", "An IANA time zone such as Europe/Berlin is required.", name) from None


def parse_local_timestamp(value: object, name: str, zone: ZoneInfo) -> tuple[datetime, datetime | None, bool]:
    """A timestamp sent with ``time_zone``: RFC 3339 (its offset wins) or a local time without offset.

    Returns (moment, alternative, nonexistent): an ambiguous local time (the hour an autumn DST change repeats)
    is its first pass, with the second pass alongside; a nonexistent one (the hour a spring change skips) is read
    with the offset after the change, with the one before alongside, and flagged. ``meters.services.local_time``
    decides between the two under the meter's lock.
    """
    if isinstance(value, str) and _RFC3339.match(value):
        return parse_timestamp(value, name), None, False
    if not isinstance(value, str) or not _LOCAL_TIME.match(value):
        raise _invalid("validation_error", "An RFC 3339 timestamp, or a local time with time_zone, is required.", name)
    try:
        local = datetime.fromisoformat(f"{value[:10]}T{value[11:]}")
        first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
        second = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid("validation_error", "Not a valid date and time.", name) from None
    if first == second:
        return first, None, False
    if first < second:
        return first, second, False
    return second, first, True  # fold=0 of a skipped time reads it with the offset before the change


@functools.lru_cache(maxsize=4096)  # the items of one batch usually share their interval's timestamp
def _rfc3339(value: str) -> datetime | None:
    if not _RFC3339.match(value):
        return None
    text = f"{value[:10]}T{value[11:-1]}{value[-1].upper()}"
    dot = text.find(".")
    if dot != -1:
        end = len(text) - (1 if text[-1] == "Z" else 6)  # the offset is "Z" or "+HH:MM"
        if end - dot - 1 > 6:  # fromisoformat wants at most microseconds
            text = text[: dot + 7] + text[end:]
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def check_timestamp_window(moment: datetime, *, now: datetime, name: str) -> None:
    cfg = settings.TOKENIZATION
    if moment < now - timedelta(days=cfg.reading_max_age_days):
        raise _invalid("timestamp_too_old", f"The reading is older than {cfg.reading_max_age_days} days.", name)
    if moment > now + timedelta(seconds=cfg.future_tolerance_secs):
        raise _invalid(
            "timestamp_in_future",
            f"The reading is more than {cfg.future_tolerance_secs} seconds in the future.",
            name,
        )


def parse_register_start(value: object, zone: ZoneInfo | None) -> datetime:
    """``register_start``: RFC 3339, or local with ``time_zone``; of an ambiguous local time the later pass, so a
    reset is never missed (a reset found too eagerly only makes a read a baseline)."""
    if zone is None:
        return parse_timestamp(value, "register_start")
    first, second, _ = parse_local_timestamp(value, "register_start", zone)
    return max(first, second or first)
