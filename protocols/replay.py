"""Replaying the device protocols' dead letters through the same translation and batch service as their door."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from gridtoken.exceptions import ValidationFailed
from meters import formats
from meters.models import DeadLetter
from meters.parsers import loads_exact
from meters.selectors import Caller
from meters.services.batch import readings_submit_batch
from meters.services.dead_letters import Door, Origin, caller_restore, dead_letter_refusal
from protocols import bridge
from protocols.apis import bridge_hook
from protocols.mqtt import topics


def bridge_replay(letter: DeadLetter) -> dict:
    """A bridge batch item, as its caller: the item's batch result now."""
    caller = caller_restore(letter.caller)
    items = [loads_exact(bytes(letter.payload))]
    translated = bridge.reading_from_item(items[0])
    outcome = readings_submit_batch(
        caller=caller,
        readings=[translated.body],
        now=timezone.now(),
        signed_messages=[translated.signed_messages],
        dead_letter=bridge_hook(caller=caller, items=items, path=letter.topic),
    )
    return outcome["results"][0]


def mqtt_replay(letter: DeadLetter) -> dict:
    """An MQTT message under the topic layouts configured now, received when it first was (a format without a
    time of its own is stamped with its receipt, as the ingester stamped it)."""
    cfg = settings.MQTT
    matched = topics.match(topics.layouts(cfg.topics), letter.topic)
    if matched is None:
        raise ValidationFailed("topic_not_ingested", "No configured MQTT_TOPICS layout matches this topic.")
    layout, serial = matched
    payload = bytes(letter.payload)
    try:
        body = formats.reading_body(
            layout.format, payload, serial=serial, received_at=letter.first_seen, timezone=cfg.tasmota_timezone
        )
    except formats.Ignored:
        return {"index": 0, "status": "ignored"}
    origin = Origin(Door.MQTT, letter.topic, payload, serial, {"scope": "protocol"})
    answer = readings_submit_batch(
        caller=Caller.protocol(),
        readings=[body],
        now=timezone.now(),
        dead_letter=lambda index, error: dead_letter_refusal(origin=origin, error=error),
    )
    return answer["results"][0]
