"""Token amounts of claimed readings: priced once, with the conversion recorded, and kept for good.

A reading's ``token_amount`` and the ratio and decimals it came from are fixed the first time it is claimed;
releases and re-signs keep them, so a ratio change applies only to readings not yet priced. Unpriced readings
of one wallet are priced together: each gets floor(running exact total) - floor(running total before it), so
readings worth a fraction of a base unit each still add up to what their sum is worth.
"""

from __future__ import annotations

import decimal
import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from minting.chain import convert_kwh
from minting.services.claiming import ClaimedReading


@dataclass(frozen=True)
class Price:
    amount: int
    ratio: Decimal
    decimals: int


def readings_price(claimed: list[ClaimedReading]) -> dict[uuid.UUID, Price]:
    cfg = settings.TOKENIZATION
    prices: dict[uuid.UUID, Price] = {}
    unpriced: dict[tuple[str, Decimal], list[ClaimedReading]] = defaultdict(list)
    for reading in claimed:
        if reading.token_amount is not None and reading.token_decimals == cfg.decimals:
            prices[reading.id] = Price(
                reading.token_amount, reading.token_ratio or cfg.kwh_to_token_ratio, cfg.decimals
            )
        else:  # never priced, or priced for a mint with other decimals: the recorded ratio still holds
            unpriced[(reading.wallet_address, reading.token_ratio or cfg.kwh_to_token_ratio)].append(reading)
    for (_, ratio), readings in unpriced.items():
        running, floor_before = Decimal(0), 0
        for reading in readings:
            exact = convert_kwh(reading.kwh_amount, ratio=ratio, decimals=cfg.decimals)
            with decimal.localcontext() as context:
                context.prec = decimal.MAX_PREC
                running += exact.units + exact.remainder
            floor_now = int(running.to_integral_value(rounding=decimal.ROUND_FLOOR))
            prices[reading.id] = Price(floor_now - floor_before, ratio, cfg.decimals)
            floor_before = floor_now
    return prices
