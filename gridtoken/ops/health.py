"""Readiness checks: can this process reach PostgreSQL, Redis and the Solana RPC right now?

Each check returns ``None`` when the dependency answers, or a short reason when it does not. Reasons name
the failure's kind (``ConnectionRefusedError``, ``timeout``, an RPC error code), never a URL or
credential, because ``/ready`` answers without authentication. The full error goes to the log.

Advisory checks (``ADVISORY_CHECKS``) report what the workers see of the chain: they can make the answer
``degraded`` (still 200: restarting or unrouting web pods would cure nothing the workers suffer from),
never ``down``.
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
from minting.selectors import chain_state, control_peek

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


def check_minting() -> str | None:
    """``None`` while automatic minting runs freely; else ``"degraded: ..."`` naming codes only (an error
    message may carry the RPC URL and its API key). Unknown when the database cannot say: that is the
    database check's failure, not a second one."""
    try:
        chain = chain_state(control=control_peek())
    except Exception as exc:
        logger.warning("minting state unreadable", extra={"error": str(exc)})
        return f"unknown: {_reason(exc)}"
    finally:
        connection.close()
    problems = []
    if chain["paused"]:
        problems.append(f"paused by the outage breaker ({chain['reason_code']})")
    if chain["decisions_blocked"]:
        problems.append(f"settlement decisions blocked ({chain['decisions_blocked_code']})")
    return f"degraded: {'; '.join(problems)}" if problems else None


CHECKS: dict[str, Callable[[], str | None]] = {
    "database": check_database,
    "redis": check_redis,
    "rpc": check_rpc,
}
ADVISORY_CHECKS: dict[str, Callable[[], str | None]] = {
    "minting": check_minting,
}


def readiness(timeout: float = READY_TIMEOUT_SECS) -> dict[str, str]:
    """Run every check at once; name -> ``"ok"``, ``"down: <reason>"`` (dependencies), or an advisory
    check's own ``"degraded: <reason>"`` / ``"unknown: <reason>"``.

    A fresh executor per call: a check stuck past its own timeout (a blackholed database host without
    ``connect_timeout``) must not queue the next probe behind it.
    """
    checks = {**CHECKS, **ADVISORY_CHECKS}
    executor = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="ready")
    try:
        # Each check runs in a copy of this context, so its log lines keep the request id.
        futures = {name: executor.submit(contextvars.copy_context().run, check) for name, check in checks.items()}
        wait(futures.values(), timeout=timeout)
        results = {}
        for name, future in futures.items():
            advisory = name in ADVISORY_CHECKS
            if not future.done():
                results[name] = "unknown: timeout" if advisory else "down: timeout"
                continue
            reason = future.result()
            if reason is None:
                results[name] = "ok"
            else:
                results[name] = reason if advisory else f"down: {reason}"
        return results
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
