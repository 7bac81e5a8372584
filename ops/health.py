"""Readiness checks: can this process reach PostgreSQL, Redis and the Solana RPC right now?

Each check returns ``None`` when the dependency answers, or a short reason when it does not. Reasons name
the failure's kind (``ConnectionRefusedError``, ``timeout``, an RPC error code), never a URL or
credential, because ``/ready`` answers without authentication. The full error goes to the log.

Advisory checks (``ADVISORY_CHECKS``) report what the workers see of the chain: they can make the answer
``degraded`` (still 200: restarting or unrouting web pods would cure nothing the workers suffer from),
never ``down``.

The MQTT ingesters are advisory too, and only where MQTT is in use: ``MQTT_URL`` set and some ingester has
sent a heartbeat to this Redis without stopping cleanly since (``protocols.status``). ``MQTT_URL`` has a
default, so the URL alone cannot tell a deployment that runs no ingester from one whose ingesters are all
dead; the registry can. Then the answer carries an ``mqtt`` object and no live, connected ingester makes
it ``degraded``. Elsewhere nothing about MQTT appears.
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
from protocols import status as mqtt_status

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


def mqtt_configured() -> bool:
    return bool(getattr(getattr(settings, "MQTT", None), "url", None))


def mqtt_readiness() -> dict | None:
    """The ``mqtt`` object of ``/ready``, or ``None`` where MQTT is not in use (or Redis cannot say: the
    ``redis`` check then reports that)."""
    if not mqtt_configured():
        return None
    try:
        fleet = mqtt_status.ingester_fleet()
    except Exception as exc:
        logger.warning("mqtt ingester state unreadable", extra={"error": str(exc)})
        return None
    if not fleet["live"] and not fleet["missing"]:
        return None
    connected = any(ingester["connected"] for ingester in fleet["live"])
    if connected:
        state = "ok"
    elif fleet["live"]:
        state = "degraded: no ingester connected to the broker"
    else:
        state = "degraded: no live ingester"
    return {"status": state, "connected": connected, "ingesters": fleet["live"], "missing": fleet["missing"]}


def _probe(timeout: float, *, mqtt: bool) -> tuple[dict[str, str], dict | None]:
    """Every check (and, with ``mqtt``, the ingesters) at once; see ``readiness``.

    A fresh executor per call: a check stuck past its own timeout (a blackholed database host without
    ``connect_timeout``) must not queue the next probe behind it.
    """
    checks = {**CHECKS, **ADVISORY_CHECKS}
    jobs = {**checks, **({"mqtt": mqtt_readiness} if mqtt else {})}
    executor = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="ready")
    try:
        # Each check runs in a copy of this context, so its log lines keep the request id.
        futures = {name: executor.submit(contextvars.copy_context().run, job) for name, job in jobs.items()}
        wait(futures.values(), timeout=timeout)
        results = {}
        for name in checks:
            future = futures[name]
            advisory = name in ADVISORY_CHECKS
            if not future.done():
                results[name] = "unknown: timeout" if advisory else "down: timeout"
                continue
            reason = future.result()
            if reason is None:
                results[name] = "ok"
            else:
                results[name] = reason if advisory else f"down: {reason}"
        mqtt_object = None
        if mqtt and futures["mqtt"].done():
            mqtt_object = futures["mqtt"].result()
        return results, mqtt_object
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def readiness(timeout: float = READY_TIMEOUT_SECS) -> dict[str, str]:
    """Run every check at once; name -> ``"ok"``, ``"down: <reason>"`` (dependencies), or an advisory
    check's own ``"degraded: <reason>"`` / ``"unknown: <reason>"``."""
    return _probe(timeout, mqtt=False)[0]


def ready_answer(timeout: float = READY_TIMEOUT_SECS) -> tuple[int, dict]:
    """``/ready``'s HTTP status and body: 503 ``unavailable`` naming the dependencies ``down``; else 200,
    ``degraded`` naming the advisory checks that are not ``ok`` (``minting``, ``mqtt``), or ``ready``.

    Where MQTT is in use, ``checks["mqtt"]`` is its status and ``mqtt`` the ingesters: ``connected`` (at
    least one live ingester is connected to the broker), ``ingesters`` (live ones: name, connected, broker,
    lag_seconds, last_seen) and ``missing`` (names that stopped sending heartbeats without a clean stop).
    """
    checks, mqtt = _probe(timeout, mqtt=True)
    if mqtt is not None:
        checks["mqtt"] = mqtt["status"]
    down = sorted(name for name in CHECKS if checks[name] != "ok")
    degraded = sorted(name for name in checks if name not in CHECKS and checks[name] != "ok")
    body: dict = {"status": "unavailable" if down else "degraded" if degraded else "ready", "checks": checks}
    if down:
        body["down"] = down
    if degraded:
        body["degraded"] = degraded
    if mqtt is not None:
        body["mqtt"] = {key: value for key, value in mqtt.items() if key != "status"}
    return (503 if down else 200), body
