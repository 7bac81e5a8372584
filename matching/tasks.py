"""Celery tasks: thin wrappers; all state is in PostgreSQL, so any task may run twice harmlessly."""

from celery import shared_task

from matching.services.matcher import matching_run


@shared_task(ignore_result=True)
def match_hours() -> dict:
    """Beat: match every settled hour of every zone, then record adjustments of recently matched hours. The
    claims' burns are sent by the certificates' own tick (``send_certificate_operations``)."""
    return matching_run().as_dict()
