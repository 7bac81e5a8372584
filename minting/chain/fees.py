"""What a mint transaction asks of the chain: its compute-unit limit and price, and the priority fee they make.

**Limit.** Each instruction kind's compute units, measured with simulateTransaction on the local chain's real
programs (``bench/compute_units.py``, docs/CHAIN.md "Fees"): the larger of SPL Token and Token-2022,
rounded up. A transaction asks for the sum of what it holds plus ``margin_percent``, never the 1.4 M maximum:
the priority fee is the price times the *requested* limit, so asking for what it needs is what it pays for.

**Price.** ``market`` mode: the ``percentile`` of the recent prioritization fees (getRecentPrioritizationFees,
the last 150 slots) for the accounts every mint transaction write-locks: the mint and the fee payer. A
wallet's token account is written only by our own mints, so it adds no contention worth asking about. The
answer is kept ``cache_ms``: one call per build at most, whatever the build holds. Never below the floor
(``SOLANA_PRIORITY_FEE_MICROLAMPORTS``); ``fixed`` mode pays the floor and asks nothing.

**Ceilings.** A transaction whose priority fee would pass ``max_lamports_per_transaction`` is not signed:
``PriorityFeeCapped`` (a platform fault; the readings keep their attempts and minting waits for the market).
The hourly ceiling needs the hour's spending, which only the database knows (minting/services/costs.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from config.fees import FeeConfig
from minting.chain.errors import PriorityFeeCapped, RpcBadResponse

LAMPORTS_PER_SIGNATURE = 5000
MICRO_LAMPORTS_PER_LAMPORT = 1_000_000
# Measured (bench/compute_units.py; docs/BENCHMARKS.md "Fees and compute units"), SPL Token / Token-2022:
# create-ATA-idempotent of a new account 20,498 / 21,798 units at bump 255 (of an existing one 4,437 / 4,456),
# and 1,500 more for every bump the program's address search misses first; MintToChecked 4,499 / 5,064; a memo
# 1,957 + 348 per byte (15,865 at 40 bytes, 29,772 at 80); the two budget instructions 300. Rounded up; the
# margin is added per transaction.
COMPUTE_CREATE_ACCOUNT = 22_000
COMPUTE_PER_BUMP_MISS = 1_500
COMPUTE_MINT = 5_100
COMPUTE_ANCHOR_MINT = 40_000
# Not measured (no program binary here): mint_tokens_direct's figure plus the record's PDA search and create.
COMPUTE_ANCHOR_GENERATION = 60_000
COMPUTE_MEMO_BASE, COMPUTE_MEMO_PER_BYTE = 2_000, 350
COMPUTE_BUDGET_INSTRUCTIONS = 300
MAX_COMPUTE_UNITS = 1_400_000


def create_account_units(bump: int) -> int:
    """A create-ATA-idempotent's units for an account whose address has ``bump`` (the search starts at 255)."""
    return COMPUTE_CREATE_ACCOUNT + COMPUTE_PER_BUMP_MISS * (255 - bump)


def memo_units(memo_bytes: int) -> int:
    return COMPUTE_MEMO_BASE + COMPUTE_MEMO_PER_BYTE * memo_bytes


def compute_limit(units: int, memo_bytes: int, margin_percent: int) -> int:
    """The limit a transaction asks for: what its instructions need, the budget and memo, plus the margin."""
    needed = units + COMPUTE_BUDGET_INSTRUCTIONS + memo_units(memo_bytes)
    return min(-(-needed * (100 + margin_percent) // 100), MAX_COMPUTE_UNITS)


def priority_fee(limit: int, microlamports: int) -> int:
    """Lamports a validator charges on top of the signatures: price x requested limit, rounded up."""
    return -(-limit * microlamports // MICRO_LAMPORTS_PER_LAMPORT)


def percentile(values: Sequence[int], rank: int) -> int:
    """The nearest-rank ``rank``-th percentile (1..100) of ``values``; 0 for none."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(-(-rank * len(ordered) // 100) - 1, 0)]


class FeeMarket:
    """The compute-unit price to sign at now, per ``config`` (see the module docstring); ``call`` is the client's
    JSON-RPC call."""

    def __init__(self, config: FeeConfig, call: Callable, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.call = call
        self.clock = clock
        self._cached: tuple[float, tuple[str, ...], int] | None = None  # (read at, accounts, market price)

    def price(self, accounts: Sequence[str]) -> int:
        """The price for a transaction write-locking ``accounts`` (at most 128)."""
        config = self.config
        if config.mode == "fixed":
            return config.floor_microlamports
        now, key = self.clock(), tuple(accounts)
        cached = self._cached
        if cached is None or cached[1] != key or now - cached[0] >= config.cache_ms / 1000:
            cached = self._cached = (now, key, self._read(list(key)))
        return max(config.floor_microlamports, cached[2])

    def _read(self, accounts: list[str]) -> int:
        answer = self.call("getRecentPrioritizationFees", [accounts])
        try:
            fees = [int(entry["prioritizationFee"]) for entry in answer]
        except (TypeError, KeyError, ValueError) as exc:
            raise RpcBadResponse(f"getRecentPrioritizationFees returned {answer!r}"[:300]) from exc
        return percentile(fees, self.config.percentile)

    def check(self, limit: int, microlamports: int) -> int:
        """The priority fee of a transaction asking ``limit`` units at ``microlamports``; PriorityFeeCapped when
        it passes the per-transaction ceiling."""
        fee = priority_fee(limit, microlamports)
        cap = self.config.max_lamports_per_transaction
        if fee > cap:
            raise PriorityFeeCapped(
                f"the market asks {microlamports} micro-lamports per compute unit: {fee} lamports for a transaction "
                f"of {limit} units, above SOLANA_PRIORITY_FEE_MAX_LAMPORTS={cap}. Minting waits until the market "
                "falls (no reading is charged); raise the ceiling to pay it",
                code="priority_fee_cap",
            )
        return fee


class LandedCost(NamedTuple):
    """What a landed transaction paid, from its ``getTransaction`` meta."""

    fee: int  # lamports: signatures + priority
    priority_fee: int
    rent: int  # lamports moved into accounts that did not exist before it (the accounts it created)
    compute_units: int | None


def landed_cost(answer: object, signatures: int) -> LandedCost | None:
    """The cost in a ``getTransaction`` answer, None when the node has no such transaction (yet). ``signatures``:
    how many the transaction carries (its base fee); RpcBadResponse for a meta without the numbers."""
    if answer is None:
        return None
    try:
        meta = answer["meta"]  # type: ignore[index]
        fee, pre, post = int(meta["fee"]), meta["preBalances"], meta["postBalances"]
        rent = sum(int(after) for before, after in zip(pre[1:], post[1:], strict=True) if int(before) == 0)
        units = meta.get("computeUnitsConsumed")
    except (TypeError, KeyError, ValueError) as exc:
        raise RpcBadResponse(f"getTransaction returned a meta without fees or balances: {answer!r}"[:300]) from exc
    return LandedCost(
        fee, max(fee - LAMPORTS_PER_SIGNATURE * signatures, 0), rent, None if units is None else int(units)
    )
