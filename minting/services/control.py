"""The run-time switches every worker reads: auto-mint on/off and the chain outage breaker."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from minting.models import MintingControl
from minting.services.policy import outage_delay
from minting.triggers import mint_soon

logger = logging.getLogger("minting.control")


def control_get() -> MintingControl:
    """The control row; the environment seeds it on first use, and the row wins from then on."""
    control, _ = MintingControl.objects.get_or_create(
        id=1, defaults={"auto_mint_enabled": settings.TOKENIZATION.auto_mint_enabled}
    )
    return control


def auto_mint_set(*, enabled: bool, actor: str = "") -> MintingControl:
    """Switch automatic minting for every worker at once (each mint cycle re-reads the row)."""
    control_get()
    MintingControl.objects.filter(id=1).update(
        auto_mint_enabled=enabled, updated_by=actor[:150], updated_at=timezone.now()
    )
    logger.info("auto-mint switched", extra={"auto_mint_enabled": enabled, "actor": actor})
    if enabled:
        transaction.on_commit(lambda: mint_soon(force=True))
    return control_get()


def chain_outage_record(error: Exception) -> MintingControl:
    """One more failed probe of the chain: pause automatic minting with exponential back-off."""
    control_get()
    with transaction.atomic():
        control = MintingControl.objects.select_for_update().get(id=1)
        failures = control.chain_failures + 1
        retry_at = timezone.now() + outage_delay(failures)
        code = str(getattr(error, "code", "") or type(error).__name__)[:64]
        MintingControl.objects.filter(id=1).update(
            chain_failures=F("chain_failures") + 1,
            chain_retry_at=retry_at,
            chain_error=str(error)[:2000],
            chain_error_code=code,
        )
    logger.warning(
        "chain platform fault; automatic minting paused",
        extra={"chain_failures": failures, "retry_at": retry_at.isoformat(), "code": code, "error": str(error)},
    )
    return control_get()


def chain_outage_clear() -> None:
    cleared = MintingControl.objects.filter(id=1, chain_failures__gt=0).update(
        chain_failures=0, chain_retry_at=None, chain_error="", chain_error_code=""
    )
    if cleared:
        logger.info("chain reachable again; automatic minting resumed")


def decisions_blocked_record(error: Exception) -> None:
    """A settlement had to wait: the node lagged behind what the batch had seen, or lacked its history."""
    control_get()
    MintingControl.objects.filter(id=1).update(
        decisions_blocked_at=timezone.now(), decisions_blocked_reason=f"{getattr(error, 'code', '')}: {error}"[:2000]
    )
    logger.warning(
        "the RPC cannot prove what became of in-flight batches yet; they wait",
        extra={"code": getattr(error, "code", ""), "error": str(error)},
    )


def fee_payer_record(lamports: int | None) -> None:
    if lamports is not None:
        MintingControl.objects.filter(id=1).update(fee_payer_lamports=lamports, fee_payer_checked_at=timezone.now())


def accounts_epoch_get() -> int:
    return MintingControl.objects.filter(id=1).values_list("accounts_epoch", flat=True).first() or 0


def accounts_epoch_bump() -> None:
    """Some token account is gone: every process forgets which accounts exist before its next build."""
    control_get()
    MintingControl.objects.filter(id=1).update(accounts_epoch=F("accounts_epoch") + 1)


def chain_paused(control: MintingControl) -> bool:
    return control.chain_retry_at is not None and control.chain_retry_at > timezone.now()
