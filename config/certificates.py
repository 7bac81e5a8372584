"""The certificates app's settings, read once from the environment and validated (``config.Env``); beside the
other typed settings because the project's settings load them before any app."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from config.environment import ConfigError, Env


@dataclass(frozen=True)
class CertificatesConfig:
    interval_secs: int  # the production interval of one certificate bundle (EnergyTag: at most an hour)
    grace_secs: int  # how long after an interval's end readings may still arrive for it
    capacity_margin: Decimal  # energy <= capacity x interval x margin, else the interval is held
    expiry_days: int  # a certificate expires this long after its interval ends
    issue_polling_secs: int  # the beat tick that issues due intervals and mints pending operations
    issue_limit: int  # intervals one issuance run handles at most

    @classmethod
    def from_env(cls, env: Env) -> CertificatesConfig:
        cfg = cls(
            interval_secs=env.int("CERTIFICATES_INTERVAL_SECS", 3600, min=60, max=3600),
            grace_secs=env.int("CERTIFICATES_GRACE_SECS", 300, min=0, max=86400),
            capacity_margin=env.decimal("CERTIFICATES_CAPACITY_MARGIN", "1.1", ge=Decimal(1), le=Decimal(10)),
            expiry_days=env.int("CERTIFICATES_EXPIRY_DAYS", 730, min=1, max=3650),
            issue_polling_secs=env.int("CERTIFICATES_ISSUE_POLLING_SECS", 30, min=1, max=3600),
            issue_limit=env.int("CERTIFICATES_ISSUE_LIMIT", 5000, min=1, max=1_000_000),
        )
        if 3600 % cfg.interval_secs:
            raise ConfigError("CERTIFICATES_INTERVAL_SECS", str(cfg.interval_secs), "a divisor of 3600 (3600: hourly)")
        return cfg


def load(source=None) -> CertificatesConfig:
    return CertificatesConfig.from_env(Env(source))
