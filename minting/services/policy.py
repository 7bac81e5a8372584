"""Pure rules of the pipeline: retry back-off, outage back-off, gradual-rollout buckets, settled statuses."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from django.conf import settings

# Probing a dead RPC costs one refused connection, so the outage back-off starts small and never waits
# longer than the beat sweep would anyway: recovery is noticed within one polling interval.
OUTAGE_INITIAL_DELAY_SECS = 1


def retry_delay(attempts: int) -> timedelta:
    """Back-off after the ``attempts``-th failure of a reading's own transaction (attempts >= 1).

    initial * multiplier^(attempts-1), capped at max; Decimal arithmetic, rounded up to whole seconds.
    """
    cfg = settings.TOKENIZATION
    exponent = max(attempts, 1) - 1
    cap = Decimal(cfg.max_retry_delay_secs)
    delay = Decimal(cfg.initial_retry_delay_secs)
    for _ in range(exponent):  # a loop, not **, so a large attempt count cannot overflow before the cap
        delay *= cfg.retry_backoff_multiplier
        if delay >= cap:
            break
    return timedelta(seconds=int(min(delay, cap).to_integral_value(rounding=ROUND_CEILING)))


def is_final_attempt(attempts: int) -> bool:
    return attempts >= settings.TOKENIZATION.max_retry_attempts


def after_failed_attempt(attempts: int, now: datetime) -> tuple[str, datetime]:
    """(status, next_attempt_at) of a reading whose ``attempts``-th attempt failed: ``failed`` after the last
    one (an operator retries it), else ``pending`` again after the back-off."""
    if is_final_attempt(attempts):
        return "failed", now
    return "pending", now + retry_delay(attempts)


def outage_delay(failures: int) -> timedelta:
    """Pause of automatic minting after ``failures`` consecutive unreachable-chain probes (no attempts used)."""
    cfg = settings.TOKENIZATION
    cap = min(cfg.polling_interval_secs, cfg.max_retry_delay_secs)
    exponent = min(max(failures, 1) - 1, 30)
    return timedelta(seconds=min(OUTAGE_INITIAL_DELAY_SECS * 2**exponent, cap))


def rollout_bucket(user_id) -> int:
    """Stable bucket 0..99 of a user; SQL twin: ``rollout_bucket_sql``. Both read the first 32 bits of md5."""
    return int(hashlib.md5(str(user_id).encode(), usedforsecurity=False).hexdigest()[:8], 16) % 100


def rollout_bucket_sql(column: str) -> str:
    return f"((('x' || substr(md5({column}::text), 1, 8))::bit(32)::bigint) %% 100)"
