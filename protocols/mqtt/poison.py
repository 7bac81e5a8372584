"""How the MQTT ingester keeps one message from stopping it (``Ingester.process`` runs these steps).

- An unexpected exception in a batch call is narrowed by bisecting the batch; the message that fails alone
  becomes a dead letter, answered with ``internal_error`` and acknowledged like any refusal.
- A message that kills the process cannot be caught, so it is recognised: every message is recorded before its
  batch is processed and the records are deleted before the PUBACKs (``meters.services.dead_letters``); a
  redelivered message whose record is still there is attempted alone, and quarantined unprocessed once it has
  been attempted ``MQTT_POISON_MAX_DELIVERIES`` times.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError, close_old_connections, connection

from gridtoken.exceptions import ApplicationError
from meters.models import DeadLetter
from meters.services import dead_letters
from meters.services.batch import REJECTED
from protocols.mqtt import topics
from protocols.mqtt.delivery import Delivery

logger = logging.getLogger("protocols.mqtt")
TRANSIENT = (OperationalError, InterfaceError)
Door, Status = DeadLetter.Door, DeadLetter.Status


class PoisonIsolation:
    """The ingester's steps that isolate a failing message (a mixin of ``Ingester``: its ``cfg``, ``layouts``,
    ``_handle`` and ``_store``)."""

    def _begin(self, batch: list[Delivery]) -> None:
        if not connection.in_atomic_block:  # (a test drives the ingester inside its transaction)
            close_old_connections()  # a long-running process: drop a connection the server closed
        redelivered = dead_letters.message_attempts_begin([delivery.fingerprint for delivery in batch])
        for delivery in batch:
            delivery.suspect = delivery.fingerprint in redelivered

    def _attempt_again(self, delivery: Delivery) -> None:
        delivery.attempts = dead_letters.message_attempt_again(delivery.fingerprint)
        if delivery.attempts > 1:
            logger.warning(
                "mqtt message redelivered after its ingester died; attempting it alone",
                extra={"topic": delivery.topic, "attempts": delivery.attempts},
            )

    def _handle_alone(self, delivery: Delivery) -> None:
        """A suspect, on its own; its record goes as soon as it is handled, so that a killer later in the batch
        does not charge it another attempt (innocents of a crashed batch reach 2 attempts at most)."""
        self._handle([delivery])
        dead_letters.message_attempts_end([delivery.fingerprint])

    def _store_isolating(self, deliveries: list[Delivery]) -> None:
        """``_store``; when the batch call raises unexpectedly (outside the items it isolates itself), each half
        again, down to the one message that fails alone: a dead letter. Halves stored before are duplicates."""
        if not deliveries:
            return
        try:
            self._store(deliveries)
        except TRANSIENT:
            raise
        except Exception as error:
            if len(deliveries) == 1:
                self._dead_letter(deliveries[0], error)
                return
            middle = len(deliveries) // 2
            self._store_isolating(deliveries[:middle])
            self._store_isolating(deliveries[middle:])

    def _origin(self, delivery: Delivery) -> dead_letters.Origin:
        return dead_letters.Origin(
            Door.MQTT,
            delivery.topic,
            delivery.payload,
            delivery.serial or "",
            {"scope": "protocol"},
            delivery.request_id,
        )

    def _refusal(self, delivery: Delivery, error: BaseException) -> ApplicationError:
        return dead_letters.dead_letter_refusal(origin=self._origin(delivery), error=error)

    def _dead_letter(self, delivery: Delivery, error: BaseException) -> None:
        delivery.outcome, delivery.error = REJECTED, self._refusal(delivery, error).as_dict()

    def _quarantine(self, delivery: Delivery) -> None:
        """Record the message as quarantined without processing it, and refuse it."""
        matched = topics.match(self.layouts, delivery.topic)
        delivery.serial = matched[1] if matched else None
        error = dead_letters.PoisonMessage(delivery.attempts)
        letter = dead_letters.dead_letter_record(
            origin=self._origin(delivery), error=error, status=Status.QUARANTINED, deliveries=delivery.attempts
        )
        delivery.outcome, delivery.error = REJECTED, dead_letters.internal_error(letter, str(error)).as_dict()
