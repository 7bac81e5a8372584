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

from gridtoken import observability
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


def node_health(url: str, timeout: float) -> str | None:
    """``getHealth`` answers ``"ok"`` on a healthy node and a JSON-RPC error on one that is behind."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}
    try:
        response = httpx.post(url, json=body, timeout=timeout)
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


def rpc_probe() -> list[str | None]:
    """Each configured provider's ``node_health``, in order, probed at once."""
    timeout = min(RPC_TIMEOUT_SECS, float(settings.CHAIN.rpc_timeout_secs))
    urls = [endpoint.url for endpoint in settings.CHAIN.rpc_endpoints]
    if len(urls) == 1:
        return [node_health(urls[0], timeout)]
    with ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="ready-rpc") as pool:
        return list(pool.map(lambda url: node_health(url, timeout), urls))


def rpc_reason(probes: list[str | None]) -> str | None:
    """The chain is reachable while one provider is: ``None``; else why not (each provider's reason)."""
    if any(probe is None for probe in probes):
        return None
    if len(probes) == 1:
        return probes[0]
    return "every provider: " + ", ".join(f"{number} {probe}" for number, probe in enumerate(probes, start=1))


def check_rpc() -> str | None:
    return rpc_reason(rpc_probe())


def rpc_providers_readiness(probes: list[str | None]) -> dict[str, str]:
    """Provider number -> ``ok``, ``down: <reason>`` (this probe) or ``out: <codes>`` (some worker took it out and
    has not probed it back in yet). Numbers, not URLs: ``/ready`` answers without authentication."""
    out: dict[int, set[str]] = {}
    try:
        for view in observability.rpc_providers_reports():
            for provider in view:
                if provider["state"] != "in":
                    out.setdefault(provider["number"], set()).add(provider["code"] or "unknown")
    except Exception as exc:  # the redis check reports Redis itself
        logger.warning("rpc provider reports unreadable", extra={"error": str(exc)})
    answer = {}
    for number, probe in enumerate(probes, start=1):
        if probe is not None:
            answer[str(number)] = f"down: {probe}"
        elif number in out:
            answer[str(number)] = f"out: {', '.join(sorted(out[number]))}"
        else:
            answer[str(number)] = "ok"
    return answer


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
    "rpc": check_rpc,  # run as rpc_probe by _probe, which also reports each provider
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


def _probe(timeout: float, *, mqtt: bool) -> tuple[dict[str, str], dict]:
    """Every check (and, with ``mqtt``, the ingesters) at once; see ``readiness``. The second item holds the
    ``mqtt`` object (with ``mqtt``, where it is in use) and ``rpc_providers`` (where several are configured).

    A fresh executor per call: a check stuck past its own timeout (a blackholed database host without
    ``connect_timeout``) must not queue the next probe behind it.
    """
    checks = {**CHECKS, **ADVISORY_CHECKS}
    jobs: dict[str, Callable] = {**checks, "rpc": rpc_probe, **({"mqtt": mqtt_readiness} if mqtt else {})}
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
            reason = rpc_reason(future.result()) if name == "rpc" else future.result()
            if reason is None:
                results[name] = "ok"
            else:
                results[name] = reason if advisory else f"down: {reason}"
        extra = {}
        if mqtt and futures["mqtt"].done():
            extra["mqtt"] = futures["mqtt"].result()
        if futures["rpc"].done() and len(futures["rpc"].result()) > 1:
            extra["rpc_providers"] = rpc_providers_readiness(futures["rpc"].result())
        return results, extra
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

    Where several RPC providers are configured, ``rpc`` is ``ok`` while one answers, ``rpc_providers`` is each
    provider's state by number (``rpc_providers_readiness``) and ``checks["rpc_providers"]`` is ``degraded``
    while one is not in.
    """
    checks, extra = _probe(timeout, mqtt=True)
    mqtt, providers = extra.get("mqtt"), extra.get("rpc_providers")
    if mqtt is not None:
        checks["mqtt"] = mqtt["status"]
    if providers is not None and checks["rpc"] == "ok":
        out = [number for number, state in providers.items() if state != "ok"]
        checks["rpc_providers"] = f"degraded: provider {', '.join(out)} not in" if out else "ok"
    down = sorted(name for name in CHECKS if checks[name] != "ok")
    degraded = sorted(name for name in checks if name not in CHECKS and checks[name] != "ok")
    body: dict = {"status": "unavailable" if down else "degraded" if degraded else "ready", "checks": checks}
    if down:
        body["down"] = down
    if degraded:
        body["degraded"] = degraded
    if mqtt is not None:
        body["mqtt"] = {key: value for key, value in mqtt.items() if key != "status"}
    if providers is not None:
        body["rpc_providers"] = providers
    return (503 if down else 200), body
