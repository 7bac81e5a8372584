"""Prioritization fees as a validator charges them: the compute budget a message asks for and what it costs.

A transaction's fee is 5,000 lamports per signature plus ``ceil(compute-unit price x compute-unit limit /
1,000,000)``: the price (micro-lamports per unit, ``SetComputeUnitPrice``) times the limit it requested
(``SetComputeUnitLimit``), or the default limit of 200,000 units per other instruction, at most 1,400,000.
LiteSVM charges only the signatures, so the chain adds the priority part itself (``LocalChain``).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID

DEFAULT_UNITS_PER_INSTRUCTION = 200_000
MAX_COMPUTE_UNITS = 1_400_000
MICRO_LAMPORTS_PER_LAMPORT = 1_000_000
SET_COMPUTE_UNIT_LIMIT, SET_COMPUTE_UNIT_PRICE = 2, 3


class ComputeBudget(NamedTuple):
    limit: int  # compute units the transaction may use
    price: int  # micro-lamports per compute unit

    @property
    def priority_fee(self) -> int:
        """Lamports: the price times the requested limit, rounded up (what a validator charges)."""
        return -(-self.price * self.limit // MICRO_LAMPORTS_PER_LAMPORT)


def compute_budget_of(message: Any) -> ComputeBudget:
    """The limit and price a message's ComputeBudget instructions set (malformed ones are ignored here: the
    program itself refuses them when the transaction runs)."""
    keys = message.account_keys
    limit = price = None
    others = 0
    for instruction in message.instructions:
        index = instruction.program_id_index
        data = bytes(instruction.data)
        if index >= len(keys) or keys[index] != COMPUTE_BUDGET_PROGRAM_ID:
            others += 1
        elif data[:1] == bytes([SET_COMPUTE_UNIT_LIMIT]) and len(data) == 5:
            limit = struct.unpack_from("<I", data, 1)[0]
        elif data[:1] == bytes([SET_COMPUTE_UNIT_PRICE]) and len(data) == 9:
            price = struct.unpack_from("<Q", data, 1)[0]
    if limit is None:
        limit = DEFAULT_UNITS_PER_INSTRUCTION * others
    return ComputeBudget(min(limit, MAX_COMPUTE_UNITS), price or 0)
