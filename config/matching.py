"""The matching app's settings, read once from the environment and validated (``config.Env``)."""

from __future__ import annotations

from dataclasses import dataclass

from config.environment import Env


@dataclass(frozen=True)
class MatchingConfig:
    settle_secs: int  # an hour is matched no earlier than this long after its end (late readings' window)
    adjust_hours: int  # how far back a matched hour's demand is compared with its readings for adjustments
    polling_secs: int  # the beat tick that matches settled hours
    limit: int  # zone-hours one matching run decides at most

    @classmethod
    def from_env(cls, env: Env) -> MatchingConfig:
        return cls(
            settle_secs=env.int("MATCHING_SETTLE_SECS", 3600, min=0, max=30 * 86400),
            adjust_hours=env.int("MATCHING_ADJUST_HOURS", 72, min=0, max=24 * 400),
            polling_secs=env.int("MATCHING_POLLING_SECS", 60, min=1, max=86400),
            limit=env.int("MATCHING_LIMIT", 500, min=1, max=1_000_000),
        )


def load(source=None) -> MatchingConfig:
    return MatchingConfig.from_env(Env(source))
