"""Sooner than the beat tick: enqueue the certificate operations task after a commit that created some.

Only an accelerator, like ``minting.triggers``: the beat tick sends pending operations anyway. The task is sent
by name, so the services that call this module never import the tasks that import them.
"""

from __future__ import annotations

import logging

from celery import current_app

from minting.triggers import _redis

logger = logging.getLogger("certificates.triggers")
DEBOUNCE_KEY = "gridtoken:certificates:soon"
DEBOUNCE_MS = 200
TASK = "certificates.tasks.send_certificate_operations"


def operations_soon(*, force: bool = False) -> bool:
    try:
        if not force and not _redis().set(DEBOUNCE_KEY, b"1", nx=True, px=DEBOUNCE_MS):
            return False
        current_app.send_task(TASK, countdown=0 if force else DEBOUNCE_MS / 1000)
        return True
    except Exception:
        logger.warning("certificate trigger lost; the beat tick will send the operations", exc_info=True)
        return False
