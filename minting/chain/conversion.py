"""kWh <-> token base units, in exact Decimal arithmetic (never a float on the money path)."""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

U64_MAX = 2**64 - 1

# Multiplication is exact under this context: the Inexact trap turns any rounding into an error instead of a
# silently different amount, and MAX_PREC only bounds the digits (nothing is allocated up front).
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    rounding=decimal.ROUND_FLOOR,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.DivisionByZero, decimal.Overflow],
)
# Division for display may not terminate (ratio 3); 50 significant digits, rounded down, is plenty for a screen.
_DISPLAY = decimal.Context(prec=50, rounding=decimal.ROUND_FLOOR, traps=[decimal.InvalidOperation])


@dataclass(frozen=True)
class Conversion:
    """``units`` minted for a kWh value and ``remainder``, the fraction of one base unit that flooring dropped."""

    units: int
    remainder: Decimal


def _exact_decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be a Decimal (or int), not {type(value).__name__}: floats are not exact")
    value = Decimal(value)
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _parameters(ratio: Decimal | None, decimals: int | None) -> tuple[Decimal, int]:
    tokenization = settings.TOKENIZATION
    ratio = _exact_decimal(tokenization.kwh_to_token_ratio if ratio is None else ratio, "ratio")
    decimals = tokenization.decimals if decimals is None else decimals
    if ratio <= 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 18:
        raise ValueError(f"decimals must be an int in 0..18, got {decimals!r}")
    return ratio, decimals


def convert_kwh(kwh: Decimal, *, ratio: Decimal | None = None, decimals: int | None = None) -> Conversion:
    """floor(kWh x ratio x 10^decimals) and the exact fractional base unit left over."""
    kwh = _exact_decimal(kwh, "kwh")
    if kwh < 0:
        raise ValueError(f"kwh must be >= 0, got {kwh}")
    ratio, decimals = _parameters(ratio, decimals)
    with decimal.localcontext(_EXACT):
        scaled = (kwh * ratio).scaleb(decimals)
        units = scaled.to_integral_value(rounding=decimal.ROUND_FLOOR)
        remainder = scaled - units
    return Conversion(units=int(units), remainder=remainder)


def kwh_to_base_units(kwh: Decimal, *, ratio: Decimal | None = None, decimals: int | None = None) -> int:
    """Token base units for ``kwh``: floor(kWh x ratio x 10^decimals); 2.01 kWh -> 2_010_000_000 at 9 decimals."""
    return convert_kwh(kwh, ratio=ratio, decimals=decimals).units


def base_units_to_kwh(units: int, *, ratio: Decimal | None = None, decimals: int | None = None) -> Decimal:
    """kWh represented by ``units`` (for display): exact when the ratio divides, else rounded down at 50 digits."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"units must be an int, not {type(units).__name__}")
    if units < 0:
        raise ValueError(f"units must be >= 0, got {units}")
    ratio, decimals = _parameters(ratio, decimals)
    with decimal.localcontext(_DISPLAY):
        return Decimal(units).scaleb(-decimals) / ratio
