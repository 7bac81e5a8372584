"""Cross-process counters that the database cannot answer, kept in Redis.

Three figures on ``/metrics`` are not facts in PostgreSQL: readings the API rejected (they are never stored),
items the doors refused with ``internal_error`` (counted where web processes and MQTT ingesters meet them; a
dead letter row counts a message, not each failure) and open WebSocket connections. Every process updates
them here, so whichever process Prometheus scrapes reports the fleet's totals without prometheus-client's
multiprocess mode.

- Rejections: ``HINCRBY`` on one hash, field = the error code (a counter; it restarts from zero when Redis
  is flushed, which Prometheus' ``rate()`` treats as an ordinary counter reset).
- WebSocket connections: one counter key per process incarnation (``host:pid:boot id``) with a TTL of
  ``WS_TTL_SECS``, listed in one set. Every change renews the TTL and a keep-alive task on the process's
  event loop renews it while the process lives, so a process that dies without closing its connections
  (SIGKILL, OOM, a lost container) drops out of the gauge within ``WS_TTL_SECS``; the scrape forgets
  processes whose key has expired.

Counting is best effort: a Redis outage must never fail the request or connection being counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Iterable

import redis
import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

REJECTED_KEY = "gridtoken:metrics:readings_rejected"
INTERNAL_ERRORS_KEY = "gridtoken:metrics:internal_errors"
MINT_INTERNAL_ERRORS_KEY = "gridtoken:metrics:mint_internal_errors"
RPC_ERRORS_KEY = "gridtoken:metrics:rpc_provider_errors"  # field "<provider number>|<code>"
RPC_STATES_KEY = "gridtoken:metrics:rpc_providers"  # field = process id, value = its view of the providers
RPC_STATE_TTL_SECS = 90
# Hash tags keep both keys in one slot, so the script also runs on Redis Cluster.
WS_PROCESSES_KEY = "gridtoken:metrics:{ws}:processes"
WS_COUNT_PREFIX = "gridtoken:metrics:{ws}:count:"
WS_TTL_SECS = 90
BOOT_ID = uuid.uuid4().hex[:12]
OTHER_REASON = "other"
# Label values must stay a small, fixed-looking set: an error code, never free text from a client.
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}

_WS_CHANGE = """
redis.call('SADD', KEYS[1], ARGV[1])
local count = redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return count
"""

_clients: dict[str, redis.Redis] = {}
# An asyncio client is bound to the event loop that first used it: one per (loop, URL), gone with the loop.
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_keepalives: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> its keep-alive task


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
    return f"{socket.gethostname()}:{os.getpid()}:{BOOT_ID}"


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


def internal_errors(door: str) -> None:
    """Count one item a door refused with ``internal_error`` (a dead letter); doors run in several processes."""
    try:
        redis_client().hincrby(INTERNAL_ERRORS_KEY, reason_label(door), 1)
    except redis.RedisError:
        logger.warning("could not count an internal error", extra={"door": door})


def internal_error_counts() -> dict[str, int]:
    raw = redis_client().hgetall(INTERNAL_ERRORS_KEY)
    return {key.decode(): int(value) for key, value in raw.items()}


def mint_internal_errors(count: int) -> None:
    """Count readings or certificate operations whose mint raised an unexpected error (``internal_error``); a lost
    count only logs."""
    try:
        redis_client().incrby(MINT_INTERNAL_ERRORS_KEY, count)
    except redis.RedisError:
        logger.warning("could not count mint internal errors", extra={"count": count})


def mint_internal_error_count() -> int:
    return int(redis_client().get(MINT_INTERNAL_ERRORS_KEY) or 0)


def rpc_provider_error(provider: int, code: object) -> None:
    """Count one error a process met at RPC provider number ``provider`` (1 = the first configured)."""
    try:
        redis_client().hincrby(RPC_ERRORS_KEY, f"{provider}|{reason_label(code)}", 1)
    except redis.RedisError:
        logger.warning("could not count an rpc provider error", extra={"provider": provider, "code": str(code)})


def rpc_provider_error_counts() -> dict[tuple[int, str], int]:
    counts = {}
    for key, value in redis_client().hgetall(RPC_ERRORS_KEY).items():
        provider, _, code = key.decode().partition("|")
        if provider.isdigit():
            counts[(int(provider), code)] = int(value)
    return counts


def rpc_providers_report(providers: list[dict]) -> None:
    """This process's view of the providers (state, lag per provider), replacing its previous one."""
    document = json.dumps({"at": time.time(), "providers": providers}, separators=(",", ":"))
    try:
        redis_client().hset(RPC_STATES_KEY, process_id(), document)
    except redis.RedisError:
        logger.warning("could not report the rpc providers' state")


def rpc_providers_reports() -> list[list[dict]]:
    """Every live process's view (reported within ``RPC_STATE_TTL_SECS``); older views are removed."""
    client, now = redis_client(), time.time()
    views, stale = [], []
    for process, raw in client.hgetall(RPC_STATES_KEY).items():
        try:
            document = json.loads(raw)
            fresh = now - float(document["at"]) <= RPC_STATE_TTL_SECS
        except (ValueError, KeyError, TypeError):
            fresh = False
        if fresh:
            views.append(document["providers"])
        else:
            stale.append(process)
    if stale:
        client.hdel(RPC_STATES_KEY, *stale)
    return views


async def _aws_change(delta: int) -> None:
    process = process_id()
    key = WS_COUNT_PREFIX + process
    try:
        await _async_client().eval(_WS_CHANGE, 2, WS_PROCESSES_KEY, key, process, delta, WS_TTL_SECS)
    except redis.RedisError:
        logger.warning("could not count a WebSocket connection change", extra={"delta": delta})
    loop = asyncio.get_running_loop()
    task = _keepalives.get(loop)
    if task is None or task.done():
        _keepalives[loop] = loop.create_task(_keep_alive(key))


async def _keep_alive(key: str) -> None:
    while True:
        await asyncio.sleep(WS_TTL_SECS / 3)
        try:
            await _async_client().expire(key, WS_TTL_SECS)
        except redis.RedisError:
            logger.warning("could not renew the WebSocket connection count", extra={"key": key})


async def aws_connected() -> None:
    """Call once per accepted WebSocket connection (on the event loop)."""
    await _aws_change(1)


async def aws_disconnected() -> None:
    """Call once per closed connection that ``aws_connected`` counted."""
    await _aws_change(-1)


def ws_connection_count() -> int:
    """Open connections of every live process; forgets processes whose count expired."""
    client = redis_client()
    processes = [member.decode() for member in client.smembers(WS_PROCESSES_KEY)]
    if not processes:
        return 0
    counts = client.mget([WS_COUNT_PREFIX + process for process in processes])
    gone = [process for process, count in zip(processes, counts, strict=True) if count is None]
    if gone:
        client.srem(WS_PROCESSES_KEY, *gone)
    return sum(max(int(count), 0) for count in counts if count is not None)
