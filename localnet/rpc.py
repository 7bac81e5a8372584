"""The JSON-RPC 2.0 envelope: parse a request body (one request or a batch), dispatch, frame the answers.

Handlers return the JSON text of their ``result`` so nothing is parsed and serialised twice; solders response
types produce that text where they exist (``solders_result``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from solders.pubkey import Pubkey
from solders.signature import Signature

from localnet.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MIN_CONTEXT_SLOT_NOT_REACHED,
    PARSE_ERROR,
    RpcError,
    invalid_params,
)

API_VERSION = "2.1.0"
_SOLDERS_PREFIX = '{"jsonrpc":"2.0","result":'
_SOLDERS_SUFFIX = ',"id":0}'

Handler = Callable[[list], str]


def solders_result(response: Any) -> str:
    """The ``result`` JSON of a solders response object (it always frames it with id 0)."""
    text = response.to_json()
    return text[len(_SOLDERS_PREFIX) : -len(_SOLDERS_SUFFIX)]


def context_json(slot: int) -> str:
    return f'{{"slot":{slot},"apiVersion":"{API_VERSION}"}}'


def with_context(slot: int, value_json: str) -> str:
    return f'{{"context":{context_json(slot)},"value":{value_json}}}'


# -- parameters ------------------------------------------------------------------------------------------


def positional(params: list, required: int, allowed: int) -> list:
    """``params`` padded with None to ``allowed`` entries, after checking the count as the validator does."""
    if not isinstance(params, list):
        raise invalid_params("Invalid params: expected an array of parameters")
    if len(params) < required or len(params) > allowed:
        raise invalid_params(f"Invalid params: invalid length {len(params)}, expected {required} to {allowed}")
    return params + [None] * (allowed - len(params))


def config_of(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_params("Invalid params: expected a configuration object")
    return value


def pubkey_of(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise invalid_params("Invalid params: expected a base-58 public key string")
    try:
        return Pubkey.from_string(value)
    except ValueError as error:
        reason = "WrongSize" if "wrong size" in str(error).lower() else "Invalid"
        raise invalid_params(f"Invalid param: {reason}") from error


def signature_of(value: Any) -> bytes:
    if not isinstance(value, str):
        raise invalid_params("Invalid params: expected a base-58 signature string")
    try:
        return bytes(Signature.from_string(value))
    except ValueError as error:
        raise invalid_params("Invalid param: Invalid") from error


def u64_of(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise invalid_params(f"Invalid params: {name} must be an unsigned 64-bit integer")
    return value


def check_min_context_slot(config: dict, slot: int) -> None:
    minimum = config.get("minContextSlot")
    if minimum is not None and slot < u64_of(minimum, "minContextSlot"):
        raise RpcError(MIN_CONTEXT_SLOT_NOT_REACHED, "Minimum context slot has not been reached", {"contextSlot": slot})


# -- envelope --------------------------------------------------------------------------------------------


def _frame_result(request_id: Any, result: str) -> str:
    id_json = str(request_id) if type(request_id) is int else json.dumps(request_id)
    return f'{{"jsonrpc":"2.0","result":{result},"id":{id_json}}}'


def _frame_error(request_id: Any, error: RpcError) -> str:
    return f'{{"jsonrpc":"2.0","error":{error.to_json()},"id":{json.dumps(request_id)}}}'


class Dispatcher:
    """Maps method names to handlers and turns request bodies into response bodies."""

    def __init__(self, methods: dict[str, Handler], on_error: Callable[[str, BaseException], None] | None = None):
        self.methods = methods
        self.on_error = on_error

    def handle_body(self, body: bytes) -> bytes | None:
        """The response body for a request body; None when every request was a notification (no id)."""
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _frame_error(None, RpcError(PARSE_ERROR, "Parse error")).encode()
        if isinstance(request, list):
            if not request:
                return _frame_error(None, RpcError(INVALID_REQUEST, "Invalid request")).encode()
            answers = [answer for answer in map(self.handle_request, request) if answer is not None]
            return f"[{','.join(answers)}]".encode() if answers else None
        answer = self.handle_request(request)
        return answer.encode() if answer is not None else None

    def handle_request(self, request: Any) -> str | None:
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
        ):
            request_id = request.get("id") if isinstance(request, dict) else None
            return _frame_error(request_id, RpcError(INVALID_REQUEST, "Invalid request"))
        request_id = request.get("id")
        is_notification = "id" not in request
        handler = self.methods.get(request["method"])
        try:
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, "Method not found")
            params = request.get("params")
            result = handler([] if params is None else params)
        except RpcError as error:
            return None if is_notification else _frame_error(request_id, error)
        except Exception as error:  # a bug must answer -32603 and leave the server serving
            if self.on_error is not None:
                self.on_error(request["method"], error)
            return None if is_notification else _frame_error(request_id, RpcError(INTERNAL_ERROR, "Internal error"))
        return None if is_notification else _frame_result(request_id, result)
