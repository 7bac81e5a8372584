"""Sooner than the beat tick: enqueue the certificate operations task after a commit that created some.

Only an accelerator, like ``minting.triggers``: the beat tick sends pending operations anyway.
"""

from __future__ import annotations

import logging

from minting.triggers import _redis

logger = logging.getLogger("certificates.triggers")
DEBOUNCE_KEY = "gridtoken:certificates:soon"
DEBOUNCE_MS = 200


def operations_soon(*, force: bool = False) -> bool:
    from certificates.tasks import send_certificate_operations

    try:
        if not force and not _redis().set(DEBOUNCE_KEY, b"1", nx=True, px=DEBOUNCE_MS):
            return False
        send_certificate_operations.apply_async(countdown=0 if force else DEBOUNCE_MS / 1000)
        return True
    except Exception:
        logger.warning("certificate trigger lost; the beat tick will send the operations", exc_info=True)
        return False
