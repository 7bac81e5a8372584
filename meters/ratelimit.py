"""Rate limits counted in Redis: writes per API key and per user, token logins per username.

A sliding window approximated from two fixed one-minute buckets (the current count plus the previous
bucket's count weighted by how much of it still overlaps the last 60 seconds). This avoids the 2x burst a
plain fixed window allows at minute boundaries, and costs one Redis round trip (a pipeline) per write.
A batch request counts once; reads are never limited. Limits come from ``settings.INGEST``; 0 disables one.

If Redis cannot be reached the request is allowed and a warning is logged (at most every 30 s per process):
a rate limiter must not take ingestion down with it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

import redis
from django.conf import settings
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import BaseThrottle

from gridtoken.exceptions import RateLimited
from meters.services.api_keys import ApiKeyPrincipal

logger = logging.getLogger(__name__)

WINDOW_SECS = 60
_clients: dict[str, redis.Redis] = {}
_last_warning = 0.0


def _client() -> redis.Redis:
    url = settings.SERVICE.redis_url
    client = _clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        _clients[url] = client
    return client


def check_write_allowed(*, key_id=None, user_id=None, now: float | None = None) -> None:
    """Count one write against the key's and the user's limits; raises RateLimited when over either."""
    ingest = settings.INGEST
    counters = []
    if key_id is not None and ingest.rate_limit_key_per_min > 0:
        counters.append((f"gt:rl:key:{key_id}", ingest.rate_limit_key_per_min))
    if user_id is not None and ingest.rate_limit_user_per_min > 0:
        counters.append((f"gt:rl:user:{user_id}", ingest.rate_limit_user_per_min))
    _count(counters, "writes", now)


def check_login_allowed(*, username: str, now: float | None = None) -> None:
    """Count one token login attempt for ``username`` (right or wrong password): guessing passwords is
    limited per account, whichever address the guesses come from."""
    limit = settings.INGEST.rate_limit_login_per_min
    if limit > 0:
        digest = hashlib.sha256(username.encode()).hexdigest()[:24]
        _count([(f"gt:rl:login:{digest}", limit)], "login attempts", now)


def _count(counters: list[tuple[str, int]], what: str, now: float | None) -> None:
    if not counters:
        return
    now = time.time() if now is None else now
    bucket = int(now // WINDOW_SECS)
    elapsed = now - bucket * WINDOW_SECS
    try:
        pipe = _client().pipeline(transaction=False)
        for name, _ in counters:
            pipe.incr(f"{name}:{bucket}")
            pipe.expire(f"{name}:{bucket}", 2 * WINDOW_SECS)
            pipe.get(f"{name}:{bucket - 1}")
        replies = pipe.execute()
    except redis.RedisError as error:
        _warn(error)
        return
    for index, (name, limit) in enumerate(counters):
        current, previous = int(replies[3 * index]), int(replies[3 * index + 2] or 0)
        estimate = previous * (WINDOW_SECS - elapsed) / WINDOW_SECS + current
        if estimate > limit:
            raise RateLimited(
                f"More than {limit} {what} per minute for this {name.split(':')[2]}.",
                retry_after=_retry_after(current, previous, limit, elapsed),
            )


def _retry_after(current: int, previous: int, limit: int, elapsed: float) -> int:
    """Seconds until the estimate drops to the limit again, if no more writes arrive."""
    if current > limit:
        # Wait for this bucket to become the previous one and decay below the limit.
        wait = (WINDOW_SECS - elapsed) + WINDOW_SECS * (1 - limit / current)
    else:
        wait = (previous * (WINDOW_SECS - elapsed) / WINDOW_SECS + current - limit) * WINDOW_SECS / max(previous, 1)
    return max(1, math.ceil(wait))


def _warn(error: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning > 30:
        _last_warning = time.monotonic()
        logger.warning("rate limiter unavailable, allowing requests: %s", error)


class WriteRateLimit(BaseThrottle):
    """The ingestion limit as a DRF throttle (runs after authentication, raises RateLimited)."""

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS or not request.user.is_authenticated:
            return True
        auth = request.auth
        key_id = auth.key_id if isinstance(auth, ApiKeyPrincipal) else None
        check_write_allowed(key_id=key_id, user_id=request.user.pk)
        return True
