"""JSON request parsing that keeps every number exact.

Non-integer JSON numbers become ``Decimal`` (never ``float``), so a kWh value travels from the request body
to the database without binary rounding. ``NaN`` and ``Infinity`` (which Python's json module would accept)
are refused, as are numbers no Decimal or int can hold (an exponent past +-10^18, an integer past 4,300
digits), objects that repeat a key, bodies past a size limit, invalid UTF-8 and nesting deep
enough to exhaust the recursion limit: each of these is a 4xx, never a 500. ``DecimalJSONParser`` is every
endpoint's only parser (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``), and ``JsonBodyOnly`` makes an empty
body in another media type a 415 too (DRF reads an empty form body as a form without fields, in which a
missing boolean is false).
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.conf import settings
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import BaseParser

from gridtoken.exceptions import ApplicationError

# Ten thousand readings with full telemetry stay well below this; anything larger is not a meter talking.
MAX_BODY_BYTES = 8 * 1024 * 1024


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class RepeatedKey(ValueError):
    """A JSON object names a key twice."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object, refused when a key repeats: which value the sender meant is unknowable (Python would keep
    the last, other readers the first)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise RepeatedKey(f"The key {json.dumps(repeated)} appears more than once in one JSON object.")
    return data


def loads_exact(raw: bytes | str):
    """``json.loads`` with Decimal floats; raises ValueError on anything that is not strict JSON (constants,
    a repeated key, nesting past the recursion limit)."""
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except InvalidOperation:  # an exponent past libmpdec's own range (~10^18), as an int past 4,300 digits
        raise ValueError("a number's exponent is out of range") from None


def dumps_exact(value: object) -> str:
    """JSON text of what ``loads_exact`` read, its Decimal numbers written as they were sent (``json.dumps``
    would need them as floats or strings)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(key))}:{dumps_exact(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps_exact(item) for item in value) + "]"
    return json.dumps(value)


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
        except RepeatedKey as exc:
            raise ApplicationError("malformed_json", str(exc)) from None
        except (ValueError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class JsonBodyOnly:
    """An APIView mixin: a write whose Content-Type no parser of the view reads is a 415, even when empty."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        writes = request.method in ("POST", "PUT", "PATCH") and request.content_type
        if writes and self.get_content_negotiator().select_parser(request, self.get_parsers()) is None:
            raise UnsupportedMediaType(request.content_type)
