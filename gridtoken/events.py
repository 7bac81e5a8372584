"""The one place events leave the system.

Services build event dicts with the helpers below and hand them to ``emit``, which publishes them to the
channel layer only when the surrounding transaction commits (at once outside a transaction). Events for a
user go to that user's group and to the operators' group; operator-only events go to operators alone.
Each publish is one ``group_send`` per group carrying a list, so a batch of 1,000 readings costs a few
Redis round trips, not thousands; consumers unpack the list into one WebSocket frame per event. Outside an
event loop, groups nobody listens to (most users' most of the time) are skipped after one pipelined
membership count on the calling thread; a publish that no one would receive never reaches the loop below.

Delivery is best effort by design: PostgreSQL is the source of truth, so a Redis outage loses live
notifications, never data.

Where the caller has no event loop behind it (a WSGI request, a Celery task, a management command),
publishing runs on one event loop per process, on its own thread, which keeps the layer's Redis connections
open between publishes: ``async_to_sync`` there would start a fresh loop, and with it a fresh Redis
connection, for every publish (about 6 ms of CPU each). Sync code called from an event loop through
``sync_to_async`` (views under an ASGI server) publishes on that loop, whose connections stay open anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

import redis
from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import transaction

logger = logging.getLogger(__name__)

OPERATORS_GROUP = "operators"
OPERATOR_ONLY = {"batch_minting_completed", "certificate_held"}
LAYER_MESSAGE_TYPE = "events.deliver"
PUBLISH_TIMEOUT_SECS = 5


def user_group(user_id) -> str:
    return f"user.{user_id}"


def rfc3339(moment: datetime | None = None) -> str:
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _kwh(value: Decimal) -> str:
    return format(value, "f")


def reading_received(reading, *, timestamp: str | None = None) -> dict:
    """``timestamp``: the event time as ``rfc3339()`` text (a batch's events share one)."""
    return {
        "type": "meter_reading_received",
        "user_id": str(reading.user_id),
        "reading_id": str(reading.id),
        "meter_id": str(reading.meter_id),
        "meter_serial": reading.meter.serial,
        "wallet_address": reading.wallet_address,
        "kwh_amount": _kwh(reading.kwh_amount),
        "mintable_kwh": _kwh(reading.mintable_kwh),
        "source": reading.source,
        "flags": reading.flags,
        "reading_timestamp": rfc3339(reading.reading_timestamp),
        "status": reading.status,
        "timestamp": timestamp or rfc3339(),
    }


def reading_reviewed(reading, *, approved: bool) -> dict:
    """An operator approved or rejected a reading a VEE rule held."""
    return {
        "type": "meter_reading_reviewed",
        "user_id": str(reading.user_id),
        "reading_id": str(reading.id),
        "meter_id": str(reading.meter_id),
        "meter_serial": reading.meter.serial,
        "decision": "approved" if approved else "rejected",
        "status": reading.status,
        "flags": reading.flags,
        "timestamp": rfc3339(),
    }


def validation_failed(
    *, user_id, meter_serial: str, error_reason: str, kwh_amount=None, reading_timestamp=None
) -> dict:
    return {
        "type": "meter_reading_validation_failed",
        "user_id": str(user_id),
        "meter_serial": meter_serial,
        "error_reason": error_reason,
        "kwh_amount": None if kwh_amount is None else str(kwh_amount),
        "reading_timestamp": None if reading_timestamp is None else str(reading_timestamp),
        "timestamp": rfc3339(),
    }


def tokens_minted(reading, *, meter_serial: str) -> dict:
    return {
        "type": "tokens_minted",
        "user_id": str(reading.user_id),
        "reading_id": str(reading.id),
        "meter_id": str(reading.meter_id),
        "wallet_address": reading.wallet_address,
        "meter_serial": meter_serial,
        "kwh_amount": _kwh(reading.kwh_amount),
        "tokens_minted": int(reading.token_amount),
        "transaction_signature": reading.mint_tx_signature,
        "timestamp": rfc3339(),
    }


def mint_failed(reading, *, meter_serial: str, error: str, final: bool) -> dict:
    return {
        "type": "mint_failed",
        "user_id": str(reading.user_id),
        "reading_id": str(reading.id),
        "meter_id": str(reading.meter_id),
        "meter_serial": meter_serial,
        "kwh_amount": _kwh(reading.kwh_amount),
        "error": error,
        "final": final,
        "attempts": reading.attempts,
        "timestamp": rfc3339(),
    }


def batch_completed(*, batch_id, total_readings: int, successful_mints: int, failed_mints: int, signature=None) -> dict:
    return {
        "type": "batch_minting_completed",
        "batch_id": str(batch_id),
        "transaction_signature": signature,
        "total_readings": total_readings,
        "successful_mints": successful_mints,
        "failed_mints": failed_mints,
        "timestamp": rfc3339(),
    }


def certificate_issued(issuance) -> dict:
    """A certificate bundle was issued for a device's interval (its tokens are minted next)."""
    return {
        "type": "certificate_issued",
        "user_id": str(issuance.device.meter.owner_id),
        "issuance_id": str(issuance.id),
        "device_id": str(issuance.device_id),
        "interval_start": rfc3339(issuance.interval_start),
        "interval_end": rfc3339(issuance.interval_end),
        "quantity_wh": issuance.quantity_wh,
        "bundle_id_range_start": issuance.bundle_id_range_start,
        "bundle_id_range_end": issuance.bundle_id_range_end,
        "wallet_address": issuance.wallet_address,
        "timestamp": rfc3339(),
    }


def certificate_held(issuance) -> dict:
    """Operators only: an interval failed the capacity check and waits for a decision."""
    return {
        "type": "certificate_held",
        "issuance_id": str(issuance.id),
        "device_id": str(issuance.device_id),
        "interval_start": rfc3339(issuance.interval_start),
        "energy_kwh": _kwh(issuance.energy_kwh),
        "reason": issuance.hold_reason,
        "timestamp": rfc3339(),
    }


def certificate_changed(bundle, *, action: str, user_id, **details) -> dict:
    """A bundle's lifecycle step (``action``: minted, transferred, split, claimed, withdrawn, expired) for the
    user it concerns (the holder, or the recipient of a transfer)."""
    return {
        "type": "certificate_changed",
        "action": action,
        "user_id": str(user_id),
        "bundle_id": str(bundle.id),
        "issuance_id": str(bundle.issuance_id),
        "bundle_id_range_start": bundle.range_start,
        "bundle_id_range_end": bundle.range_end,
        "status": bundle.status,
        **details,
        "timestamp": rfc3339(),
    }


def hour_matched(consumer_hour) -> dict:
    """A consumer's hour was matched (docs/MATCHING.md): its demand, what certificates covered, the rest."""
    return {
        "type": "hour_matched",
        "user_id": str(consumer_hour.consumer.user_id),
        "consumer_id": str(consumer_hour.consumer_id),
        "hour": rfc3339(consumer_hour.hour),
        "demand_wh": format(consumer_hour.demand_wh, "f"),
        "matched_wh": consumer_hour.matched_wh,
        "bilateral_wh": consumer_hour.bilateral_wh,
        "pool_wh": consumer_hour.pool_wh,
        "unmatched_wh": format(consumer_hour.unmatched_wh, "f"),
        "timestamp": rfc3339(),
    }


def route(events: Iterable[dict]) -> dict[str, list[dict]]:
    """Group name -> the events that group receives, in order."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        if event["type"] not in OPERATOR_ONLY:
            by_group[user_group(event["user_id"])].append(event)
        by_group[OPERATORS_GROUP].append(event)
    return dict(by_group)


def publish(events: list[dict]) -> None:
    """Send now. Prefer ``emit``, which waits for the commit."""
    if not events:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    by_group = route(events)

    async def send_all(groups: list[str]) -> None:
        for group in groups:
            await layer.group_send(group, {"type": LAYER_MESSAGE_TYPE, "events": by_group[group]})

    try:
        if _called_from_event_loop():
            async_to_sync(send_all)(list(by_group))
        elif groups := _listened_to(layer, list(by_group)):
            _publisher().run(send_all(groups), PUBLISH_TIMEOUT_SECS)
    except Exception:  # a live notification must never fail the write that caused it
        logger.warning("event publish failed", exc_info=True, extra={"events": len(events)})


_member_counters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> {host index: sync client}


def _listened_to(layer, groups: list[str]) -> list[str]:
    """The groups with members, in order, from one pipelined ``ZCARD`` per Redis host on this thread: a
    ``group_send`` to a group nobody listens to would cost two round trips (and the hop to the publisher's
    loop) to find no one. Layers other than channels_redis given by address: every group."""
    if not isinstance(layer, RedisChannelLayer) or not all("address" in host for host in layer.hosts):
        return groups
    clients = _member_counters.setdefault(layer, {})
    by_host: dict[int, list[str]] = defaultdict(list)
    for group in groups:
        by_host[layer.consistent_hash(group)].append(group)
    listened = set()
    for index, host_groups in by_host.items():
        if index not in clients:
            # a request waits for Redis no longer than a publish through the loop would
            host = {
                **layer.hosts[index],
                "socket_timeout": PUBLISH_TIMEOUT_SECS,
                "socket_connect_timeout": PUBLISH_TIMEOUT_SECS,
            }
            clients[index] = redis.Redis.from_url(host.pop("address"), **host)
        pipe = clients[index].pipeline(transaction=False)
        for group in host_groups:
            pipe.zcard(layer._group_key(group))
        listened.update(group for group, members in zip(host_groups, pipe.execute(), strict=True) if members)
    return [group for group in groups if group in listened]


def _called_from_event_loop() -> bool:
    """Whether this thread runs sync code for an event loop of this process (asgiref's ``sync_to_async``
    records it), so that ``async_to_sync`` reuses that loop instead of starting one."""
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    return loop is not None and getattr(local, "main_event_loop_pid", None) == os.getpid() and loop.is_running()


class _Publisher:
    """An event loop on a daemon thread; the channel layer keeps one Redis connection pool per loop."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="event-publisher", daemon=True).start()

    def run(self, coroutine, timeout: float) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


_publisher_lock = threading.Lock()
_current: _Publisher | None = None


def _publisher() -> _Publisher:
    """This process's publisher (a forked child, e.g. a Celery pool process, starts its own)."""
    global _current
    with _publisher_lock:
        if _current is None or _current.pid != os.getpid():
            _current = _Publisher()
        return _current


def emit(events: list[dict]) -> None:
    """Publish ``events`` once the current transaction commits (dropped if it rolls back)."""
    if events:
        transaction.on_commit(lambda: publish(events))
