"""What every message format shares: the JSON object a payload must be, and whether a body has registers."""

from __future__ import annotations

from gridtoken.exceptions import ApplicationError, ValidationFailed
from meters.parsers import loads_exact
from meters.registers import registers_from_body

MAX_PAYLOAD_BYTES = 64 * 1024


class Ignored(Exception):
    """The message carries no reading: acknowledged, counted, not stored and not answered."""


def json_object(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ApplicationError(
            "payload_too_large", f"The message is larger than {MAX_PAYLOAD_BYTES} bytes.", status=413
        )
    try:
        data = loads_exact(payload)
    except (ValueError, UnicodeDecodeError):
        raise ApplicationError("malformed_json", "The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ValidationFailed("validation_error", "Expected a JSON object.")
    return data


def has_registers(body: dict) -> bool:
    """Whether ``body`` carries energy registers; a malformed register counts (the batch refuses it)."""
    try:
        return registers_from_body(body) is not None
    except ApplicationError:
        return True
