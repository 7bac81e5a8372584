"""Cross-process counters that the database cannot answer, kept in Redis.

Two figures on ``/metrics`` are not facts in PostgreSQL: readings the API rejected (they are never stored)
and open WebSocket connections. Every web process updates them here, so whichever process Prometheus
scrapes reports the fleet's totals without prometheus-client's multiprocess mode.

- Rejections: ``HINCRBY`` on one hash, field = the error code (a counter; it restarts from zero when Redis
  is flushed, which Prometheus' ``rate()`` treats as an ordinary counter reset).
- WebSocket connections: one hash field per process (``host:pid``). Containers reuse pids, so each field
  also records the process incarnation (a boot id); the first change from a new incarnation replaces the
  old figure instead of adding to it, atomically (a Lua script), so a restarted server starts from zero.
  A process killed with SIGKILL leaves its figure behind until a process with the same ``host:pid``
  starts again; OPERATIONS.md says how to clear it.

Counting is best effort: a Redis outage must never fail the request or connection being counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import uuid
import weakref
from collections import Counter
from collections.abc import Iterable

import redis
import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

REJECTED_KEY = "gridtoken:metrics:readings_rejected"
# Hash tags keep both keys in one slot, so the script also runs on Redis Cluster.
WS_KEY = "gridtoken:metrics:{ws}:connections"
WS_BOOT_KEY = "gridtoken:metrics:{ws}:boot"
BOOT_ID = uuid.uuid4().hex
OTHER_REASON = "other"
# Label values must stay a small, fixed-looking set: an error code, never free text from a client.
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}

_WS_CHANGE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return tonumber(ARGV[3])
end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
"""

_clients: dict[str, redis.Redis] = {}
# An asyncio client is bound to the event loop that first used it: one per (loop, URL), gone with the loop.
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def redis_url() -> str:
    return settings.SERVICE.redis_url


def redis_client() -> redis.Redis:
    """One client (and connection pool) per Redis URL per process, with short timeouts."""
    url = redis_url()
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, **_TIMEOUTS)
    return client


def _async_client() -> redis.asyncio.Redis:
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    url = redis_url()
    client = per_loop.get(url)
    if client is None:
        client = per_loop[url] = redis.asyncio.Redis.from_url(url, **_TIMEOUTS)
    return client


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def reason_label(code: object) -> str:
    text = str(code or "").strip().lower()
    return text if _REASON.match(text) else OTHER_REASON


def readings_rejected(reasons: Iterable[object]) -> None:
    """Count rejected readings, one per item of ``reasons`` (error codes), in one round trip."""
    counts = Counter(reason_label(reason) for reason in reasons)
    if not counts:
        return
    try:
        pipe = redis_client().pipeline(transaction=False)
        for reason, count in counts.items():
            pipe.hincrby(REJECTED_KEY, reason, count)
        pipe.execute()
    except redis.RedisError:
        logger.warning("could not count rejected readings", extra={"rejections": dict(counts)})


def rejected_counts() -> dict[str, int]:
    raw = redis_client().hgetall(REJECTED_KEY)
    return {key.decode(): int(value) for key, value in raw.items()}


def _ws_change(delta: int) -> None:
    try:
        redis_client().eval(_WS_CHANGE, 2, WS_KEY, WS_BOOT_KEY, process_id(), BOOT_ID, delta)
    except redis.RedisError:
        logger.warning("could not count a WebSocket connection change", extra={"delta": delta})


def ws_connected() -> None:
    """Call once per accepted WebSocket connection (sync code)."""
    _ws_change(1)


def ws_disconnected() -> None:
    """Call once per closed connection that ``ws_connected`` counted (sync code)."""
    _ws_change(-1)


async def _aws_change(delta: int) -> None:
    try:
        await _async_client().eval(_WS_CHANGE, 2, WS_KEY, WS_BOOT_KEY, process_id(), BOOT_ID, delta)
    except redis.RedisError:
        logger.warning("could not count a WebSocket connection change", extra={"delta": delta})


async def aws_connected() -> None:
    """``ws_connected`` for consumers running on the event loop."""
    await _aws_change(1)


async def aws_disconnected() -> None:
    await _aws_change(-1)


def ws_connection_count() -> int:
    values = redis_client().hvals(WS_KEY)
    return sum(max(int(value), 0) for value in values)
