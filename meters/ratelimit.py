"""Rate limits counted in Redis: writes per API key and per user, logins per username.

Logins share one budget per username whichever door they come through: the token endpoint, the dashboard's
sign-in page and the Django admin's (``LoginRateLimitMixin`` on their forms, ``session_login_limited``
around their views for the 429).

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
from functools import wraps

import redis
from django import forms
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
    """Count one login attempt for ``username`` (right or wrong password): guessing passwords is limited per
    account, whichever address and whichever door (token, dashboard, admin) the guesses come from."""
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


class LoginRateLimitMixin:
    """For an ``AuthenticationForm``: count the attempt before the password is checked, and refuse it with a
    form error saying when to retry once the username's budget is spent (the password is then not checked,
    so a right one does not get through either)."""

    retry_after: int | None = None

    def clean(self):
        username = self.cleaned_data.get("username")
        if username:
            try:
                check_login_allowed(username=username)
            except RateLimited as refused:
                self.retry_after = refused.retry_after
                raise forms.ValidationError(
                    f"Too many sign-in attempts for this account. Try again in {refused.retry_after} s.",
                    code="rate_limited",
                ) from None
        return super().clean()


def session_login_limited(view):
    """Wrap a login view whose form uses LoginRateLimitMixin: a refused attempt answers 429 with Retry-After
    (the page still renders the form and the error)."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        retry_after = getattr(form, "retry_after", None)
        if retry_after is not None:
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response

    return wrapped


class WriteRateLimit(BaseThrottle):
    """The ingestion limit as a DRF throttle (runs after authentication, raises RateLimited)."""

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS or not request.user.is_authenticated:
            return True
        auth = request.auth
        key_id = auth.key_id if isinstance(auth, ApiKeyPrincipal) else None
        check_write_allowed(key_id=key_id, user_id=request.user.pk)
        return True
