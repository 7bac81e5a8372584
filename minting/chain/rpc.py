"""A thin Solana JSON-RPC transport over httpx that turns every failure into a typed ChainError.

solana-py's Client parses errors into solders types and loses the ones it does not know (an unknown error
code comes back as a bare int), so the service reads the standard JSON-RPC error object itself.
"""

from __future__ import annotations

import functools
import itertools
import json
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from minting.chain.errors import (
    ChainError,
    RpcBadResponse,
    RpcTimeout,
    RpcUnavailable,
    error_from_rpc_error,
)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every Rpc of the process (httpx's default: certifi's bundle, or SSL_CERT_FILE/DIR):
    building one loads the CA bundle, ~30 ms of CPU, and an Rpc is built per provider of every client (workers,
    chain_init, the certificates' client, each test); a context is safe to share between connections."""
    return httpx.create_ssl_context()


class Rpc:
    def __init__(self, url: str, *, timeout: float = 10.0, max_connections: int = 16) -> None:
        self.url = url
        # Messages name the host only: providers put API keys in the path or the query string.
        parts = urlsplit(url)
        self.where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        self._ids = itertools.count(1)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.Client(
            timeout=timeout, limits=limits, headers={"Content-Type": "application/json"}, verify=_tls_context()
        )

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, params: list | None = None, *, program_ids: Sequence[str] | None = None) -> Any:
        """The ``result`` of one JSON-RPC call; any transport, HTTP or RPC error raised as a ChainError."""
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []})
        return _answer(self._post(method, body), method, program_ids)

    def call_batch(self, method: str, calls: Sequence[tuple[list, Sequence[str] | None]]) -> list[Any]:
        """One JSON-RPC batch of ``method`` calls: per call its result or its ChainError (returned, not raised).

        A failure of the batch as a whole (transport, HTTP, a refused batch) is raised for all of them.
        """
        ids = [next(self._ids) for _ in calls]
        requests = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (params, _) in zip(ids, calls, strict=True)
        ]
        body = json.dumps(requests)
        payload = self._post(method, body)
        if isinstance(payload, dict):  # a node that refuses batches answers with one error
            _answer(payload, method, None)
        if not isinstance(payload, list):
            raise RpcBadResponse(f"{self.where} answered a {method} batch with a JSON {type(payload).__name__}")
        by_id = {answer.get("id"): answer for answer in payload if isinstance(answer, dict)}
        results: list[Any] = []
        for request_id, (_, program_ids) in zip(ids, calls, strict=True):
            try:
                answer = by_id.get(request_id)
                if answer is None:
                    raise RpcBadResponse(f"{self.where} left request {request_id} of a {method} batch unanswered")
                results.append(_answer(answer, method, program_ids))
            except ChainError as error:
                results.append(error)
        return results

    def _post(self, method: str, body: str) -> Any:
        try:
            response = self._http.post(self.url, content=body)
        except httpx.TimeoutException as exc:
            raise RpcTimeout(f"{method} to {self.where} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise RpcUnavailable(f"cannot reach {self.where} ({method}): {exc or type(exc).__name__}") from exc
        status = response.status_code
        # Every HTTP error is the provider's (key, quota, plan, outage), never a transaction's: transient for
        # the pipeline, which pauses and says what to check instead of blaming readings.
        if status == 429:
            raise RpcUnavailable(f"{self.where} is rate limiting ({method}): HTTP 429", code="rpc_rate_limited")
        if status >= 500:
            raise RpcUnavailable(f"{self.where} failed ({method}): HTTP {status}")
        if status in (401, 403, 407):
            raise RpcUnavailable(
                f"{self.where} refused {method}: HTTP {status}: check the RPC URL's API key and plan",
                code="rpc_unauthorized",
            )
        if status >= 400:
            raise RpcUnavailable(f"{self.where} refused {method}: HTTP {status}", code="rpc_http_error")
        try:
            return response.json()
        except ValueError as exc:
            raise RpcBadResponse(
                f"{self.where} answered {method} (HTTP {status}) with something that is not JSON"
            ) from exc


def _answer(payload: Any, method: str, program_ids: Sequence[str] | None) -> Any:
    """The result of one JSON-RPC response object, or its error raised as a ChainError."""
    if not isinstance(payload, dict):
        raise RpcBadResponse(f"{method} was answered with a JSON {type(payload).__name__}")
    error = payload.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise RpcBadResponse(f"{method} was answered with a malformed error: {error!r}")
        raise error_from_rpc_error(error, program_ids=program_ids)
    if "result" not in payload:
        raise RpcBadResponse(f"{method} was answered with neither result nor error")
    return payload["result"]
