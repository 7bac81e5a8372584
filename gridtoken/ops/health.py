"""Readiness checks: can this process reach PostgreSQL, Redis and the Solana RPC right now?

Each check returns ``None`` when the dependency answers, or a short reason when it does not. Reasons name
the failure's kind (``ConnectionRefusedError``, ``timeout``, an RPC error code), never a URL or
credential, because ``/ready`` answers without authentication. The full error goes to the log.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
from django.conf import settings
from django.db import connection

from gridtoken.observability import redis_client

logger = logging.getLogger(__name__)

# The whole probe answers within this; a dependency slower than that is as good as down for a probe.
READY_TIMEOUT_SECS = 3.0
RPC_TIMEOUT_SECS = 2.0


def _reason(exc: BaseException) -> str:
    return type(exc).__name__


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning("database unreachable", extra={"error": str(exc)})
        return _reason(exc)
    finally:
        # Runs in a short-lived thread: give the connection back (or close it) instead of leaking it.
        connection.close()
    return None


def check_redis() -> str | None:
    try:
        redis_client().ping()
    except Exception as exc:
        logger.warning("redis unreachable", extra={"error": str(exc)})
        return _reason(exc)
    return None


def check_rpc() -> str | None:
    """``getHealth`` answers ``"ok"`` on a healthy node and a JSON-RPC error on one that is behind."""
    timeout = min(RPC_TIMEOUT_SECS, float(settings.CHAIN.rpc_timeout_secs))
    body = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}
    try:
        response = httpx.post(settings.CHAIN.rpc_url, json=body, timeout=timeout)
    except Exception as exc:
        logger.warning("rpc unreachable", extra={"error": str(exc)})
        return _reason(exc)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("result") == "ok":
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    logger.warning("rpc unhealthy", extra={"http_status": response.status_code, "rpc_error": error})
    if isinstance(error, dict) and "code" in error:
        return f"rpc error {error['code']}"
    return f"HTTP {response.status_code}"


CHECKS: dict[str, Callable[[], str | None]] = {
    "database": check_database,
    "redis": check_redis,
    "rpc": check_rpc,
}


def readiness(timeout: float = READY_TIMEOUT_SECS) -> dict[str, str]:
    """Run every check at once; name -> ``"ok"`` or ``"down: <reason>"``.

    A fresh executor per call: a check stuck past its own timeout (a blackholed database host without
    ``connect_timeout``) must not queue the next probe behind it.
    """
    executor = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="ready")
    try:
        # Each check runs in a copy of this context, so its log lines keep the request id.
        futures = {name: executor.submit(contextvars.copy_context().run, check) for name, check in CHECKS.items()}
        wait(futures.values(), timeout=timeout)
        results = {}
        for name, future in futures.items():
            if not future.done():
                results[name] = "down: timeout"
            else:
                reason = future.result()
                results[name] = "ok" if reason is None else f"down: {reason}"
        return results
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
