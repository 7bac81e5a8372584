"""Dead letters: the messages a door could not handle because of a bug, kept for an operator to replay.

1. A door that meets an unexpected exception (not an ``ApplicationError``, not a transient database error)
   while handling one item of a batch calls ``dead_letter_refusal``: the item is recorded (one row per
   fingerprint, a repeat raises ``deliveries``), logged with the request id and traceback, counted by door
   (``gridtoken_internal_errors_total``), and refused with ``internal_error``; the other items go on.
2. The MQTT ingester records each message it takes on before processing it (``message_attempts_begin``, one
   statement per batch) and deletes the records before acknowledging (``message_attempts_end``). A record
   still present on redelivery means the process died while handling the message: it is then retried alone,
   and quarantined unprocessed once it has been attempted ``MQTT_POISON_MAX_DELIVERIES`` times.
3. ``dead_letter_replay`` sends the stored message through its door's own ingestion again (the replayer the
   door registered at start-up): a reading stored meanwhile answers as a duplicate, so replaying is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from gridtoken import observability
from gridtoken.exceptions import ApplicationError, Conflict, NotFound
from gridtoken.middleware import current_request_id
from meters.models import ApiKey, DeadLetter, MessageAttempt
from meters.parsers import dumps_exact
from meters.selectors import Caller

logger = logging.getLogger("meters.dead_letters")
audit = logging.getLogger("meters.admin")
TRANSIENT = (OperationalError, InterfaceError)
INTERNAL_ERROR = "internal_error"
Door = DeadLetter.Door
Status = DeadLetter.Status
# What a door does to replay one of its dead letters: the batch result of that one message.
Replayer = Callable[[DeadLetter], dict]
# What a batch calls for an item that met an unexpected exception: the door records it, returns its refusal.
DeadLetterHook = Callable[[int, BaseException], ApplicationError]
_REPLAYERS: dict[str, Replayer] = {}


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from, as its door received it."""

    door: str
    topic: str
    payload: bytes
    meter_serial: str = ""
    caller: dict = field(default_factory=dict)
    request_id: str | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.door, self.topic, self.payload)


def fingerprint(door: str, topic: str, payload: bytes) -> str:
    digest = hashlib.sha256(door.encode())
    digest.update(b"\0" + topic.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(payload)
    return digest.hexdigest()


def caller_record(caller: Caller) -> dict:
    """The caller as a dead letter keeps it, to replay with the same rights."""
    return {
        "scope": caller.scope,
        **{name: str(value) for name in ("user_id", "key_id", "meter_id") if (value := getattr(caller, name))},
    }


def caller_restore(record: dict) -> Caller:
    """The caller a dead letter was sent by; 409 ``replay_caller_revoked`` when its API key is gone or revoked."""
    if record.get("key_id") and not ApiKey.objects.filter(pk=record["key_id"], revoked_at__isnull=True).exists():
        raise Conflict("replay_caller_revoked", "The API key that sent this message is revoked; it cannot be replayed.")
    ids = {name: uuid.UUID(record[name]) if record.get(name) else None for name in ("user_id", "key_id", "meter_id")}
    return Caller(scope=record.get("scope", "protocol"), **ids)


class PoisonMessage(Exception):
    """A message whose consumer died every time it handled it (recorded, never raised)."""

    def __init__(self, attempts: int) -> None:
        super().__init__(
            f"Quarantined unprocessed on delivery {attempts}: the process handling it died on each of the "
            f"{attempts - 1} before."
        )


def internal_error(dead_letter_id: int | None, message: str | None = None) -> ApplicationError:
    return ApplicationError(
        INTERNAL_ERROR,
        message
        or "This item could not be handled because of a fault on our side; it is kept for an operator to "
        "replay once fixed.",
        details={"dead_letter_id": dead_letter_id},
        status=500,
    )


UPSERT_SQL = (
    f"INSERT INTO {DeadLetter._meta.db_table} (fingerprint, door, topic, meter_serial, payload, caller, error_type, "  # noqa: S608
    "error_message, error_traceback, request_id, first_seen, last_seen, deliveries, status) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (fingerprint) DO UPDATE SET last_seen = EXCLUDED.last_seen, "
    f"deliveries = GREATEST({DeadLetter._meta.db_table}.deliveries + 1, EXCLUDED.deliveries), "
    "error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message, "
    "error_traceback = EXCLUDED.error_traceback, request_id = EXCLUDED.request_id, status = EXCLUDED.status "
    "RETURNING id"
)


def dead_letter_record(
    *, origin: Origin, error: BaseException, status: str = Status.PENDING, deliveries: int = 1
) -> int:
    """Record (or count again) ``origin`` as a dead letter; its id. Logged with the traceback, counted by door."""
    now = timezone.now()
    request_id = origin.request_id or current_request_id() or ""
    trace = "".join(traceback.format_exception(error))
    with connection.cursor() as cursor:
        cursor.execute(
            UPSERT_SQL,
            [
                origin.fingerprint,
                origin.door,
                origin.topic[:1024],
                origin.meter_serial[:64],
                origin.payload,
                json.dumps(origin.caller),
                f"{type(error).__module__}.{type(error).__qualname__}"[:255],
                str(error)[:10_000],
                trace[-50_000:],
                request_id[:128],
                now,
                now,
                deliveries,
                status,
            ],
        )
        dead_letter_id = cursor.fetchone()[0]
    logger.error(
        "internal error: message kept as dead letter %s",
        dead_letter_id,
        exc_info=error,
        extra={"door": origin.door, "topic": origin.topic, "dead_letter_id": dead_letter_id, "status": status},
    )
    observability.internal_errors(origin.door)
    return dead_letter_id


def dead_letter_refusal(*, origin: Origin, error: BaseException) -> ApplicationError:
    """``error`` met while handling ``origin``: recorded as a dead letter; the item's ``internal_error`` refusal.
    A transient database error is re-raised: the door retries (or answers 503) as for any outage."""
    if isinstance(error, TRANSIENT):
        raise error
    return internal_error(dead_letter_record(origin=origin, error=error))


def rest_batch_hook(*, caller: Caller, readings: list, path: str = "") -> DeadLetterHook:
    """Dead letters of a REST batch: each failing item's JSON (numbers written as sent), by its caller."""

    def hook(index: int, error: BaseException) -> ApplicationError:
        item = readings[index]
        serial = item.get("meter_serial") if isinstance(item, dict) else None
        try:
            payload = dumps_exact(item).encode()
        except RecursionError:
            payload = b'"(nested too deeply to keep)"'
        origin = Origin(
            Door.REST_BATCH, path, payload, serial if isinstance(serial, str) else "", caller_record(caller)
        )
        return dead_letter_refusal(origin=origin, error=error)

    return hook


# --- MQTT: messages taken on and not yet finished ---------------------------------------------------------------

ATTEMPTS = MessageAttempt._meta.db_table
BEGIN_SQL = (
    f"INSERT INTO {ATTEMPTS} (fingerprint, attempts, first_seen) SELECT f, 1, now() FROM unnest(%s::text[]) AS f "  # noqa: S608
    "ON CONFLICT (fingerprint) DO NOTHING RETURNING fingerprint"
)
AGAIN_SQL = f"UPDATE {ATTEMPTS} SET attempts = attempts + 1 WHERE fingerprint = %s RETURNING attempts"  # noqa: S608
END_SQL = f"DELETE FROM {ATTEMPTS} WHERE fingerprint = ANY(%s::text[])"  # noqa: S608


def message_attempts_begin(fingerprints: list[str]) -> set[str]:
    """Record that these messages are being handled (one statement); the ones already recorded, i.e.
    redelivered after the process handling them died."""
    unique = list(dict.fromkeys(fingerprints))
    with connection.cursor() as cursor:
        cursor.execute(BEGIN_SQL, [unique])
        fresh = {row[0] for row in cursor.fetchall()}
    return set(unique) - fresh


def message_attempt_again(fingerprint_: str) -> int:
    """Count one more attempt at a redelivered message; how many there have been, this one included."""
    with connection.cursor() as cursor:
        cursor.execute(AGAIN_SQL, [fingerprint_])
        row = cursor.fetchone()
    if row is None:  # finished by another ingester meanwhile (a shared subscription): a fresh attempt
        message_attempts_begin([fingerprint_])
        return 1
    return row[0]


def message_attempts_end(fingerprints: list[str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(END_SQL, [list(dict.fromkeys(fingerprints))])


# --- Operators ----------------------------------------------------------------------------------------------------


def replayer_register(door: str, replayer: Replayer) -> None:
    """Called by each door at start-up (its AppConfig.ready): how its dead letters are replayed."""
    _REPLAYERS[door] = replayer


def dead_letter_get(*, dead_letter_id: int) -> DeadLetter:
    letter = DeadLetter.objects.filter(pk=dead_letter_id).first()
    if letter is None:
        raise NotFound("dead_letter_not_found", "No dead letter has this id.")
    return letter


def dead_letter_replay(*, dead_letter_id: int, actor: str) -> DeadLetter:
    """Send the dead letter through its door's ingestion again; ``replayed`` unless it fails internally again
    (then it stays pending with the new error). A discarded one is 409 ``dead_letter_discarded``."""
    letter = dead_letter_get(dead_letter_id=dead_letter_id)
    if letter.status == Status.DISCARDED:
        raise Conflict("dead_letter_discarded", "This dead letter was discarded; it cannot be replayed.")
    caller_restore(letter.caller)  # a revoked key's message is refused here, not recorded as a replay
    replayer = _REPLAYERS[letter.door]
    try:
        result = replayer(letter)
    except TRANSIENT:
        raise
    except ApplicationError as error:
        result = {"status": "rejected", "error": error.as_dict()}
    except Exception as error:  # the fix is not in yet: the letter stays, with this error
        origin = Origin(letter.door, letter.topic, bytes(letter.payload), letter.meter_serial, letter.caller)
        result = {"status": "rejected", "error": dead_letter_refusal(origin=origin, error=error).as_dict()}
    letter.refresh_from_db()
    failed_again = (result.get("error") or {}).get("code") == INTERNAL_ERROR
    if not failed_again:
        letter.status, letter.replayed_at = Status.REPLAYED, timezone.now()
    letter.replay_result = result
    letter.save(update_fields=["status", "replayed_at", "replay_result"])
    audit.info(
        "dead letter replayed",
        extra={"audit": "dead_letter_replay", "actor": actor, "dead_letter_id": letter.pk, "result": result},
    )
    return letter


def dead_letter_discard(*, dead_letter_id: int, actor: str) -> DeadLetter:
    """Mark the dead letter as not to be stored (a replayed one stays replayed: 409 ``dead_letter_replayed``)."""
    letter = dead_letter_get(dead_letter_id=dead_letter_id)
    if letter.status == Status.REPLAYED:
        raise Conflict("dead_letter_replayed", "This dead letter was replayed already.")
    DeadLetter.objects.filter(pk=letter.pk).update(status=Status.DISCARDED)
    letter.status = Status.DISCARDED
    audit.info(
        "dead letter discarded", extra={"audit": "dead_letter_discard", "actor": actor, "dead_letter_id": letter.pk}
    )
    return letter
