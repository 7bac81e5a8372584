"""API keys: issue (plaintext shown once), revoke, and authenticate a presented key.

A key is ``gtk_`` followed by 43 url-safe characters (256 random bits). Only its sha256 is stored: the key
has full entropy, so a slow password hash would add latency per request and no security. The ``gtk_``
prefix lets ``Authorization: Bearer ...`` be routed to the key lookup or the user-token lookup without
trying both.

Authentication is on the hot path of every device post, so a successful lookup is remembered in-process for
``CACHE_SECS``. Revoking clears the entry in the revoking process at once; other worker processes notice
within ``CACHE_SECS``. ``last_used_at`` is written at most once a minute per key and process, not at all
while the value the lookup read is less than a minute old (another process wrote it), and the UPDATE itself
skips rows written less than a minute ago, so it costs no write per request.

The lookup and the UPDATE are plain SQL, one statement each: the lookup runs for every key every
``CACHE_SECS`` in every process, and composing it through the ORM cost more CPU than the rest of a single
reading post (docs/BENCHMARKS.md, "Ingest").
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from gridtoken.exceptions import Conflict, NotFound, ValidationFailed
from meters.models import ApiKey, Meter, User

KEY_PREFIX = "gtk_"
CACHE_SECS = 5.0
LAST_USED_EVERY_SECS = 60.0
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ApiKeyPrincipal:
    """What ``request.auth`` holds for an API-key request."""

    key_id: uuid.UUID
    scope: str
    owner_id: uuid.UUID
    meter_id: uuid.UUID | None

    @property
    def is_device(self) -> bool:
        return self.scope == ApiKey.Scope.DEVICE


class InvalidApiKey(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_cache: dict[str, tuple[float, ApiKeyPrincipal, User]] = {}
_last_used_written: dict[uuid.UUID, float] = {}
_lock = threading.Lock()


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


@transaction.atomic
def api_key_create(*, owner: User, scope: str, meter: Meter | None = None, name: str = "") -> tuple[ApiKey, str]:
    """Issue a key; returns the row and the plaintext, which is never stored and cannot be shown again."""
    if scope == ApiKey.Scope.DEVICE and meter is None:
        raise ValidationFailed("validation_error", "A device key belongs to one meter.", field="meter")
    if scope == ApiKey.Scope.FLEET and meter is not None:
        raise ValidationFailed("validation_error", "A fleet key is not tied to a meter.", field="meter")
    if scope not in ApiKey.Scope.values:
        raise ValidationFailed("validation_error", "Scope must be device or fleet.", field="scope")
    if meter is not None and meter.owner_id != owner.pk:
        raise ValidationFailed("validation_error", "The meter belongs to another user.", field="meter")
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        owner=owner, scope=scope, meter=meter, name=name, prefix=raw_key[:12], key_hash=hash_key(raw_key)
    )
    return key, raw_key


def api_key_issue(*, owner: str, scope: str, meter: str | None = None, name: str = "") -> tuple[ApiKey, str]:
    """``api_key_create`` for an operator who names the owner by username and the meter by serial
    (the operator API and ``manage.py api_key``): unknown names are stable 400s, not lookups that raise."""
    user = User.objects.filter(username=owner).first()
    if user is None:
        raise ValidationFailed("unknown_owner", f"No user is called {owner!r}.", field="owner")
    if not user.is_active:
        raise ValidationFailed("owner_inactive", f"User {owner!r} is inactive: its keys would not work.", field="owner")
    found = None
    if meter:
        found = Meter.objects.filter(serial=meter).first()
        if found is None:
            raise ValidationFailed("unknown_meter", f"No meter has the serial {meter!r}.", field="meter")
    return api_key_create(owner=user, scope=scope, meter=found, name=name)


def api_key_get(*, ref: str) -> ApiKey:
    """The key an operator names by its id or by its prefix (``gtk_`` and the next 8 characters)."""
    keys = ApiKey.objects.select_related("owner", "meter")
    try:
        matches = list(keys.filter(pk=uuid.UUID(ref)))
    except ValueError:
        # Prefixes carry 48 random bits, so two keys sharing one is unlikely but not impossible.
        matches = list(keys.filter(prefix=ref)[:2]) if looks_like_api_key(ref) else []
    if not matches:
        raise NotFound("api_key_not_found", f"No API key has the id or prefix {ref!r}.")
    if len(matches) > 1:
        raise Conflict("api_key_ambiguous", f"More than one API key starts with {ref!r}: use its id.")
    return matches[0]


def api_key_list(
    *, owner: str | None = None, scope: str | None = None, active: bool | None = None, limit: int = 100
) -> list[ApiKey]:
    """Keys newest first, optionally one owner's (by username), one scope, active or revoked only."""
    keys = ApiKey.objects.select_related("owner", "meter").order_by("-created_at", "prefix")
    if owner is not None:
        keys = keys.filter(owner__username=owner)
    if scope is not None:
        keys = keys.filter(scope=scope)
    if active is not None:
        keys = keys.filter(revoked_at__isnull=active)
    return list(keys[:limit])


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke ``key`` (idempotent: the first revocation time is kept)."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db(fields=["revoked_at"])
    forget(key.key_hash)
    return key


def forget(key_hash: str | None = None) -> None:
    """Drop cached lookups (one key, or all of them)."""
    with _lock:
        if key_hash is None:
            _cache.clear()
            _last_used_written.clear()
        else:
            _cache.pop(key_hash, None)


def api_key_authenticate(*, raw_key: str) -> tuple[User, ApiKeyPrincipal]:
    """The owner and principal for a presented key; raises InvalidApiKey when it is unknown or revoked."""
    key_hash = hash_key(raw_key)
    now = time.monotonic()
    cached = _cache.get(key_hash)
    if cached is not None and cached[0] > now:
        _, principal, owner = cached
    else:
        principal, owner, last_used_at = _load(key_hash)
        with _lock:
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[key_hash] = (now + CACHE_SECS, principal, owner)
        if last_used_at is not None:  # written recently, maybe by another process: the next write is due later
            age = (timezone.now() - last_used_at).total_seconds()
            _last_used_written[principal.key_id] = max(_last_used_written.get(principal.key_id, -1e9), now - age)
    _touch(principal.key_id, now)
    return owner, principal


_USER_FIELDS = list(User._meta.concrete_fields)
KEY_SQL = (
    "SELECT api_key.id, api_key.scope, api_key.owner_id, api_key.meter_id, api_key.revoked_at, api_key.last_used_at, "  # noqa: S608
    + ", ".join(f"owner.{connection.ops.quote_name(field.column)}" for field in _USER_FIELDS)
    + f" FROM {ApiKey._meta.db_table} AS api_key JOIN {User._meta.db_table} AS owner ON owner.id = api_key.owner_id"
    " WHERE api_key.key_hash = %s"
)
TOUCH_SQL = (
    f"UPDATE {ApiKey._meta.db_table} SET last_used_at = %s WHERE id = %s"  # noqa: S608
    " AND (last_used_at IS NULL OR last_used_at < %s)"
)


def _load(key_hash: str) -> tuple[ApiKeyPrincipal, User, object]:
    """The key's principal, its owner and when it was last used (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(KEY_SQL, [key_hash])
        row = cursor.fetchone()
    if row is None:
        raise InvalidApiKey("Unknown API key.")
    key_id, scope, owner_id, meter_id, revoked_at, last_used_at, *user = row
    if revoked_at is not None:
        raise InvalidApiKey("This API key has been revoked.")
    owner = User.from_db(connection.alias, [field.attname for field in _USER_FIELDS], user)
    if not owner.is_active:
        raise InvalidApiKey("The owner of this API key is inactive.")
    principal = ApiKeyPrincipal(key_id=key_id, scope=scope, owner_id=owner_id, meter_id=meter_id)
    return principal, owner, last_used_at


def _touch(key_id: uuid.UUID, now: float) -> None:
    if now - _last_used_written.get(key_id, -LAST_USED_EVERY_SECS) < LAST_USED_EVERY_SECS:
        return
    _last_used_written[key_id] = now
    moment = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(TOUCH_SQL, [moment, key_id, moment - timedelta(seconds=LAST_USED_EVERY_SECS)])
