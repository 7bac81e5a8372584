"""Celery tasks: thin wrappers; all state is in PostgreSQL, so any task may run twice harmlessly."""

import logging

from celery import shared_task

from certificates.services.chain import operations_drain
from certificates.services.issuance import certificates_issue_due
from certificates.services.lifecycle import bundles_expire
from minting.chain import ChainError

logger = logging.getLogger("certificates.tasks")


@shared_task(ignore_result=True)
def issue_certificates() -> dict:
    """Beat: issue every due (device, interval), expire what is past its expiry, then send the chain
    operations both created."""
    result = certificates_issue_due().as_dict()
    result["expired"] = bundles_expire()
    send_certificate_operations.apply_async()
    return result


@shared_task(ignore_result=True)
def send_certificate_operations() -> dict:
    """Mint, move and burn certificate tokens for pending operations (the minting pipeline's batches)."""
    try:
        return operations_drain().as_dict()
    except ChainError as exc:  # the claim rolled back; the next tick retries
        logger.warning("certificate operations wait for the chain", extra={"error": str(exc), "code": exc.code})
        return {"error": str(exc), "code": exc.code}
