"""The MQTT ingesters' shared state in Redis: who is alive and connected, and what they have counted.

``/ready`` and ``/metrics`` run in web processes; the ingesters are other processes (often on other hosts).
They meet in the project's Redis, the way ``gridtoken.observability`` keeps WebSocket counts:

- Liveness: one key per ingester (``name`` = its MQTT client id) holding its last heartbeat, with a TTL of
  ``HEARTBEAT_TTL_SECS`` (three heartbeats). An ingester that dies without a word (SIGKILL, OOM, a lost
  host) drops out of the live list within that TTL; nothing needs clearing by hand.
- Registry: a sorted set of every ingester that has sent a heartbeat (score: its last one). An entry whose
  key has expired is *missing*: it ran here and is gone. A clean stop (``ingester_stopped``) removes it, so
  scaling down is not an outage. Only a heartbeat forgets entries older than ``FORGET_SECS``, so names of
  replaced containers are pruned while some ingester lives, and a fleet that is entirely gone is never
  forgotten.
- Counters: ``HINCRBY`` on one hash (received, stored, duplicates, ``refused:<code>``). They restart from
  zero when Redis is flushed, which Prometheus' ``rate()`` treats as an ordinary counter reset.

The writers (``ingester_heartbeat``, ``ingester_count``, ``ingester_stopped``) are the ingester's and never
raise: a Redis outage is logged, counts are kept in memory and added on the next call that reaches Redis,
and for ``RETRY_SECS`` after a failure no call waits on Redis at all, so a dead Redis cannot slow the
storing loop by a connect timeout per batch. The readers are for ``/ready`` and ``/metrics`` and raise
``redis.RedisError`` like the other figures there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlsplit

import redis

from gridtoken.observability import reason_label, redis_client

logger = logging.getLogger(__name__)

HEARTBEAT_SECS = 5  # how often the ingester should call ingester_heartbeat
HEARTBEAT_TTL_SECS = 3 * HEARTBEAT_SECS
FORGET_SECS = 3600
RETRY_SECS = 5.0
# Hash tags keep every key in one slot, as in gridtoken.observability.
REGISTRY_KEY = "gridtoken:mqtt:{ingest}:ingesters"
HEARTBEAT_PREFIX = "gridtoken:mqtt:{ingest}:heartbeat:"
COUNTS_KEY = "gridtoken:mqtt:{ingest}:counts"
COUNTERS = ("received", "stored", "duplicates")
REFUSED_PREFIX = "refused:"

_lock = threading.Lock()
_pending: Counter[str] = Counter()  # counts not yet in Redis
_retry_at = 0.0  # monotonic time before which the writers skip Redis


def broker_label(broker: str) -> str:
    """``scheme://host:port`` of ``broker``, whatever else it carries (``/ready`` answers unauthenticated)."""
    try:
        parts = urlsplit(broker)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "unknown"
    if not parts.scheme or not host:
        return "unknown"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _redis_available() -> bool:
    return time.monotonic() >= _retry_at


def _redis_failed(message: str, **extra) -> None:
    global _retry_at
    _retry_at = time.monotonic() + RETRY_SECS
    logger.warning(message, extra={**extra, "retry_in": RETRY_SECS})


def ingester_heartbeat(*, name: str, connected: bool, broker: str, lag_seconds: float | None = None) -> None:
    """Call every ``HEARTBEAT_SECS`` from a live ingester; also flushes counts held back by a Redis outage."""
    now = time.time()
    state = {
        "connected": bool(connected),
        "broker": broker_label(broker),
        "lag_seconds": None if lag_seconds is None else max(float(lag_seconds), 0.0),
        "seen_at": now,
    }
    with _lock:
        if not _redis_available():
            return
        try:
            pipe = redis_client().pipeline(transaction=False)
            pipe.set(HEARTBEAT_PREFIX + name, json.dumps(state), ex=HEARTBEAT_TTL_SECS)
            pipe.zadd(REGISTRY_KEY, {name: now})
            pipe.zremrangebyscore(REGISTRY_KEY, "-inf", now - FORGET_SECS)
            _add_pending(pipe)
            pipe.execute()
        except redis.RedisError:
            _redis_failed("could not record the MQTT ingester's heartbeat", ingester=name)
            return
        _pending.clear()


def ingester_count(
    *, received: int = 0, stored: int = 0, duplicates: int = 0, refused: dict[str, int] | None = None
) -> None:
    """Add to the fleet's counters (call once per batch; negative or zero amounts are ignored)."""
    with _lock:
        for field, amount in (("received", received), ("stored", stored), ("duplicates", duplicates)):
            if amount > 0:
                _pending[field] += int(amount)
        for code, amount in (refused or {}).items():
            if amount > 0:
                _pending[REFUSED_PREFIX + reason_label(code)] += int(amount)
        if not _pending or not _redis_available():
            return
        try:
            pipe = redis_client().pipeline(transaction=False)
            _add_pending(pipe)
            pipe.execute()
        except redis.RedisError:
            _redis_failed("could not count MQTT messages", counts=dict(_pending))
            return
        _pending.clear()


def _add_pending(pipe) -> None:
    # A pipeline without MULTI can half-apply if the connection drops mid-way; a repeat then overcounts a
    # little, which for best-effort counters beats losing them.
    for field, amount in _pending.items():
        pipe.hincrby(COUNTS_KEY, field, amount)


def ingester_stopped(*, name: str) -> None:
    """Call on a clean shutdown: the ingester leaves the fleet instead of being reported missing."""
    try:
        ingester_count()  # a last flush of what an outage held back
        pipe = redis_client().pipeline(transaction=False)
        pipe.delete(HEARTBEAT_PREFIX + name)
        pipe.zrem(REGISTRY_KEY, name)
        pipe.execute()
    except redis.RedisError:
        logger.warning("could not deregister the MQTT ingester", extra={"ingester": name})


def ingester_fleet() -> dict[str, list]:
    """``{"live": [...], "missing": [names]}``: live ingesters (as ``ingesters_status``) and the ones that
    sent heartbeats here and stopped without ``ingester_stopped``."""
    client = redis_client()
    names = [member.decode() for member in client.zrange(REGISTRY_KEY, 0, -1)]
    if not names:
        return {"live": [], "missing": []}
    live, missing = [], []
    for name, raw in zip(names, client.mget([HEARTBEAT_PREFIX + name for name in names]), strict=True):
        if raw is None:
            missing.append(name)
            continue
        state = json.loads(raw)
        live.append(
            {
                "name": name,
                "connected": state["connected"],
                "broker": state["broker"],
                "lag_seconds": state["lag_seconds"],
                "last_seen": datetime.fromtimestamp(state["seen_at"], UTC).isoformat(),
            }
        )
    return {"live": live, "missing": missing}


def ingesters_status() -> list[dict]:
    """Live ingesters, by name: ``name``, ``connected``, ``broker``, ``lag_seconds`` (None: not reported),
    ``last_seen`` (ISO 8601, UTC)."""
    return ingester_fleet()["live"]


def ingester_totals() -> dict:
    """``{"received", "stored", "duplicates": int, "refused": {code: int}}`` over every ingester so far."""
    raw = {key.decode(): int(value) for key, value in redis_client().hgetall(COUNTS_KEY).items()}
    totals: dict = {field: raw.get(field, 0) for field in COUNTERS}
    totals["refused"] = {
        key.removeprefix(REFUSED_PREFIX): value for key, value in sorted(raw.items()) if key.startswith(REFUSED_PREFIX)
    }
    return totals
