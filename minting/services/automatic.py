"""Automatic minting: what the on-submit trigger and the beat sweep run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from meters.services.windows import windows_settle
from minting.services.batching import CycleResult, chain_client, is_systemic, readings_mint
from minting.services.claiming import claim_due
from minting.services.control import (
    chain_outage_clear,
    chain_outage_record,
    chain_paused,
    control_get,
    fee_payer_record,
)
from minting.triggers import mint_soon

logger = logging.getLogger("minting.automatic")

# A drain hands over to a fresh task well inside CELERY_TASK_SOFT_TIME_LIMIT.
DRAIN_BUDGET_SECS = 45.0


@dataclass
class DrainResult(CycleResult):
    cycles: int = 0
    # why it stopped early: auto_mint_disabled, rollout_zero, chain_paused, chain_unavailable, chain_platform_fault
    stopped: str = ""

    def as_dict(self) -> dict:
        return {
            "cycles": self.cycles,
            "claimed": self.claimed,
            "batches": self.batches,
            "minted": self.minted,
            "retried": self.retried,
            "dead": self.dead,
            "in_flight": self.in_flight,
            "stopped": self.stopped,
        }


def _blocked(control) -> str:
    if not control.auto_mint_enabled:
        return "auto_mint_disabled"
    if settings.TOKENIZATION.auto_mint_percentage == 0:
        return "rollout_zero"
    if chain_paused(control):
        return "chain_paused"
    return ""


def _publish_fee_payer(client) -> None:
    """The fee payer's balance the last build saw, for the dashboard, /metrics and the alerts."""
    if client is not None and client.payer_lamports is not None:
        fee_payer_record(client.payer_lamports)
        client.payer_lamports = None


def readings_mint_due(*, budget_secs: float = DRAIN_BUDGET_SECS) -> DrainResult:
    """Mint due readings in full batches until a claim comes back short (nothing more is due).

    The control row is read before every cycle, so switching auto-mint off stops every worker at its next
    cycle. An unreachable chain pauses automatic minting (exponential back-off in the control row) and
    consumes no reading attempts; the first cycle that reaches the chain again clears the pause. Complete
    settlement windows are settled first, so their derived readings are minted in the same drain.
    """
    cfg = settings.TOKENIZATION
    result, client = DrainResult(), None
    started = time.monotonic()
    windows_settle()  # complete settlement windows become readings to mint (window basis)
    while True:
        control = control_get()
        result.stopped = _blocked(control)
        if result.stopped:
            break
        try:
            client = client or chain_client()
            cycle = readings_mint(
                client=client,
                claim=lambda: claim_due(limit=cfg.batch_size, rollout_percentage=cfg.auto_mint_percentage),
            )
        except Exception as exc:
            if not is_systemic(exc):
                raise
            _publish_fee_payer(client)  # a dry fee payer is why, most of all then
            chain_outage_record(exc)
            result.stopped = "chain_unavailable"
            break
        _publish_fee_payer(client)
        if cycle.platform_failures:
            result.add(cycle)
            result.stopped = "chain_platform_fault"
            break
        if cycle.claimed and control.chain_failures:
            chain_outage_clear()
        result.add(cycle)
        result.cycles += 1
        if cycle.claimed < cfg.batch_size:
            break
        if time.monotonic() - started > budget_secs:
            mint_soon(force=True)  # hand over: a task must not outlive its time limit
            break
    if result.claimed:
        logger.info("mint drain finished", extra=result.as_dict())
    return result
