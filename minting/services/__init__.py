"""Batch minting services: claim, build, commit, send, settle, reconcile (see docs/PIPELINE.md)."""

from minting.services.automatic import DrainResult, readings_mint_due
from minting.services.batching import CycleResult, batches_dispatch, batches_prepare, chain_client, readings_mint
from minting.services.claiming import ClaimedReading, claim_by_ids, claim_due
from minting.services.control import (
    auto_mint_set,
    chain_outage_clear,
    chain_outage_record,
    chain_paused,
    control_get,
)
from minting.services.operator import (
    ReadingMintResult,
    batch_trigger,
    reading_mint_now,
    readings_mint_now,
    readings_retry,
)
from minting.services.policy import outage_delay, retry_delay, rollout_bucket
from minting.services.reconciliation import ReconcileResult, batches_reconcile
from minting.services.settlement import Settlement, SettleResult, batches_settle

__all__ = [
    "ClaimedReading",
    "CycleResult",
    "DrainResult",
    "ReadingMintResult",
    "ReconcileResult",
    "SettleResult",
    "Settlement",
    "auto_mint_set",
    "batch_trigger",
    "batches_dispatch",
    "batches_prepare",
    "batches_reconcile",
    "batches_settle",
    "chain_client",
    "chain_outage_clear",
    "chain_outage_record",
    "chain_paused",
    "claim_by_ids",
    "claim_due",
    "control_get",
    "outage_delay",
    "reading_mint_now",
    "readings_mint",
    "readings_mint_due",
    "readings_mint_now",
    "readings_retry",
    "retry_delay",
    "rollout_bucket",
]
