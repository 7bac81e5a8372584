"""JSON request parsing that keeps every number exact.

Non-integer JSON numbers become ``Decimal`` (never ``float``), so a kWh value travels from the request body
to the database without binary rounding. ``NaN`` and ``Infinity`` (which Python's json module would accept)
are refused, as are bodies past a size limit, invalid UTF-8 and nesting deep enough to exhaust the
recursion limit: each of these is a 4xx, never a 500.
"""

from __future__ import annotations

import json
from decimal import Decimal

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from gridtoken.exceptions import ApplicationError

# Ten thousand readings with full telemetry stay well below this; anything larger is not a meter talking.
MAX_BODY_BYTES = 8 * 1024 * 1024


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def loads_exact(raw: bytes | str):
    """``json.loads`` with Decimal floats; raises ValueError on anything that is not strict JSON."""
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class DecimalJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise ApplicationError(
                "payload_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes.", status=413
            )
        try:
            text = raw if encoding.lower() in ("utf-8", "utf8") else raw.decode(encoding)
            return loads_exact(text)
        except (ValueError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
