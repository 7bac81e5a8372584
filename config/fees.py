"""What the platform pays the chain per transaction: how the compute-unit price is chosen and its ceilings.

``SOLANA_PRIORITY_FEE_MODE=market`` (default) prices each build at a percentile of the recent prioritization
fees for the accounts every mint transaction writes (getRecentPrioritizationFees), never below
``SOLANA_PRIORITY_FEE_MICROLAMPORTS`` (the floor); ``fixed`` always pays the floor and asks nothing. A
transaction whose priority fee would pass ``SOLANA_PRIORITY_FEE_MAX_LAMPORTS`` (per transaction) or the
hour's ``SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR`` waits (docs/CHAIN.md, "Fees").
"""

from __future__ import annotations

from dataclasses import dataclass

from config.environment import ConfigError, Env

FEE_MODES = ("market", "fixed")
MAX_MICROLAMPORTS = 10**9  # 1,000 lamports per compute unit: far above any market seen, a typo guard
MAX_LAMPORTS = 10**12  # 1,000 SOL


@dataclass(frozen=True)
class FeeConfig:
    mode: str = "market"
    floor_microlamports: int = 0
    percentile: int = 75
    max_lamports_per_transaction: int = 1_000_000  # 0.001 SOL
    max_lamports_per_hour: int = 0  # 0: no hourly ceiling
    cache_ms: int = 2_000
    compute_margin_percent: int = 10

    @classmethod
    def from_env(cls, env: Env) -> FeeConfig:
        config = cls(
            mode=env.str("SOLANA_PRIORITY_FEE_MODE", "market", choices=FEE_MODES),
            floor_microlamports=env.int("SOLANA_PRIORITY_FEE_MICROLAMPORTS", 0, min=0, max=MAX_MICROLAMPORTS),
            percentile=env.int("SOLANA_PRIORITY_FEE_PERCENTILE", 75, min=1, max=100),
            max_lamports_per_transaction=env.int(
                "SOLANA_PRIORITY_FEE_MAX_LAMPORTS", 1_000_000, min=1, max=MAX_LAMPORTS
            ),
            max_lamports_per_hour=env.int("SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR", 0, min=0, max=MAX_LAMPORTS),
            cache_ms=env.int("SOLANA_PRIORITY_FEE_CACHE_MS", 2_000, min=0, max=60_000),
            compute_margin_percent=env.int("SOLANA_COMPUTE_UNIT_MARGIN_PERCENT", 10, min=0, max=100),
        )
        if config.max_lamports_per_hour and config.max_lamports_per_hour < config.max_lamports_per_transaction:
            raise ConfigError(
                "SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR", config.max_lamports_per_hour,
                f"0 (no hourly ceiling) or at least SOLANA_PRIORITY_FEE_MAX_LAMPORTS "
                f"({config.max_lamports_per_transaction}): an hour must allow one transaction",
            )  # fmt: skip
        return config
