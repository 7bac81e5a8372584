"""Work that meters' writes start in the apps above it, registered by those apps at start-up.

meters sits below minting and imports none of it (README, "Layout"). A reading that is stored, or released
from a hold, must still start a mint soon: ``MintingConfig.ready()`` registers ``minting.triggers.mint_soon``
with ``on_readings_stored``, and the services that store or release readings call ``readings_stored()``,
which runs every registered hook once the transaction commits. This is the one way meters causes work above it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

_readings_stored: list[Callable[[], object]] = []


def on_readings_stored(hook: Callable[[], object]) -> None:
    """Run ``hook()`` after each commit that stored or released readings (registering twice keeps one)."""
    if hook not in _readings_stored:
        _readings_stored.append(hook)


def readings_stored() -> None:
    """Readings were stored or released in the current transaction: run the hooks once it commits."""
    for hook in _readings_stored:
        transaction.on_commit(hook)
