"""The on-submit trigger: cheap enough to call for every committed reading.

``mint_soon()`` sets a Redis marker with ``SET NX PX=TOKENIZATION_TRIGGER_DEBOUNCE_MS``; only the call
that sets it enqueues the mint task, delayed by the same window. A burst of readings therefore becomes one
task that finds them all due and mints them in full batches of ``TOKENIZATION_BATCH_SIZE``. The marker
and the message are only an accelerator: if Redis loses them, the beat sweep mints the readings anyway.

Call it after the reading's transaction commits: ``transaction.on_commit(mint_soon)`` (or
``mint_soon_on_commit()``), so the task never looks for a reading that is not there yet. The task is sent by
name: the services that call this module are what the task runs, so the trigger never imports the task.

Each process also remembers until when a task it sent, or saw the marker of, still lies ahead: a trigger before
then needs no Redis round trip. The deadline never outlasts the marker (the window from before our ``SET``, or
the marker's remaining ``PTTL``), and the task runs no earlier than the marker expires, so a reading committed
before the deadline is still found by that task; at most one message per window stays true across processes.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import current_app
from django.conf import settings
from django.db import transaction

logger = logging.getLogger("minting.triggers")

DEBOUNCE_KEY = "gridtoken:minting:soon"
TASK = "minting.tasks.mint_due_readings"
_clients: dict[str, redis.Redis] = {}
_covered_until: dict[str, float] = {}  # broker URL -> monotonic time before which a scheduled task covers new readings


def _redis() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _clients[url]


def mint_soon(*, force: bool = False) -> bool:
    """Enqueue a mint of due readings unless one is already scheduled within the debounce window.

    ``force`` enqueues at once, without the window (operator actions, hand-over). Returns whether a task
    was enqueued. Never raises: a lost trigger only delays minting until the next sweep.
    """
    debounce_ms = settings.TOKENIZATION.trigger_debounce_ms
    try:
        if force or debounce_ms == 0:
            current_app.send_task(TASK)
            return True
        url, now = settings.CELERY_BROKER_URL, time.monotonic()
        if now < _covered_until.get(url, 0.0):
            return False
        placed, remaining_ms = (
            _redis()
            .pipeline(transaction=False)
            .set(DEBOUNCE_KEY, b"1", nx=True, px=debounce_ms)
            .pttl(DEBOUNCE_KEY)
            .execute()
        )
        if not placed:
            _covered_until[url] = now + max(remaining_ms, 0) / 1000
            return False
        current_app.send_task(TASK, countdown=debounce_ms / 1000)
        _covered_until[url] = now + debounce_ms / 1000
        return True
    except Exception:
        logger.warning("mint trigger lost; the sweep will pick the readings up", exc_info=True)
        return False


def forget() -> None:
    """Drop this process's memory of scheduled tasks, for a broker just emptied (as the tests do)."""
    _covered_until.clear()


def mint_soon_on_commit() -> None:
    transaction.on_commit(mint_soon)
