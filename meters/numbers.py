"""The one bounded reader for numbers: every numeric field of every door goes through ``read_number`` (or
``read_integer``) before any ``abs()``, comparison, quantize or arithmetic touches it.

A JSON number reaches a field as an ``int`` (at most 4,300 digits: Python's own limit, past which the body is
``malformed_json``) or as a ``Decimal`` built from its text by ``meters.parsers.loads_exact``, which can be of
any size: ``1e999999999`` is a valid Decimal whose ``abs()`` raises ``decimal.Overflow``, a million digits
make every operation slow, and ``sNaN`` makes a comparison raise. The reader looks only at the Decimal's tuple
(sign, digits, exponent) until the number is known to be bounded:

- at most ``MAX_DIGITS`` digits in the coefficient and an exponent within +-``MAX_EXPONENT`` (every f64 a
  meter can print fits, so no float a device sends is refused for its form alone);
- finite (NaN, sNaN and Infinity in every spelling are refused), not a bool, and ``-0`` read as ``0``;
- then the field's own magnitude limit and sign, compared exactly.

After it, the default context's exponent range (+-999,999) cannot be reached by any comparison, quantize to a
field's places (once its limit is checked) or sum of a few values, and ``EXACT`` (prec 1,000, inexact results
trapped) does arithmetic that must not round.

A refusal is a ``ValidationFailed`` naming the field, with the field's stable code: ``code`` when the value is
not a number at all, ``range_code`` when it is one outside the bounds (kWh keeps ``kwh_out_of_range``, registers
``invalid_register``, everything else ``validation_error``).
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow

from gridtoken.exceptions import ValidationFailed

MAX_DIGITS = 40
MAX_EXPONENT = 400
MAX_TEXT_LENGTH = 100  # a numeric string; longer is not a number a device meant
_INT_LIMIT = 10**MAX_DIGITS
# Wide enough for the exact sum of a few bounded numbers (digits from 10^(MAX_EXPONENT + MAX_DIGITS) down to
# 10^-MAX_EXPONENT); any result that would still round raises instead.
EXACT = Context(prec=2 * MAX_EXPONENT + MAX_DIGITS + 10, traps=[Inexact, InvalidOperation, Overflow])


def _refuse(code: str, message: str, name: str) -> ValidationFailed:
    return ValidationFailed(code, message, field=name)


def _not_a_number(name: str, *, strings: bool, code: str) -> ValidationFailed:
    wanted = "A number (or a numeric string) is required." if strings else "Must be a number."
    return _refuse(code, wanted, name)


def _unbounded(name: str, code: str) -> ValidationFailed:
    return _refuse(
        code, f"Must be a finite number of at most {MAX_DIGITS} digits, exponent within +-{MAX_EXPONENT}.", name
    )


def _out_of_range(name: str, *, limit: Decimal | None, below: bool, signed: bool, code: str) -> ValidationFailed:
    bound = "" if limit is None else f" {'below' if below else 'at most'} {limit}"
    if signed:
        return _refuse(code, f"Must be a number{bound} in magnitude.", name)
    return _refuse(code, f"Must be a number, zero or more{',' if bound else ''}{bound}.", name)


def read_number(
    value: object,
    name: str,
    *,
    limit: Decimal | None = None,
    below: bool = False,
    signed: bool = True,
    strings: bool = False,
    places: int | None = None,
    code: str = "validation_error",
    range_code: str | None = None,
    precision_code: str | None = None,
) -> Decimal:
    """``value`` as an exact, finite, bounded Decimal.

    ``limit`` bounds the magnitude (``below``: the limit itself is refused too); ``signed=False`` refuses
    negatives; ``strings`` also reads numeric text (ASCII, at most ``MAX_TEXT_LENGTH`` characters, no ``_``
    digit separators, surrounding whitespace allowed as ``Decimal`` allows it); ``places`` bounds the
    significant decimal places (trailing zeros do not count). ``range_code`` (default ``code``) is the code of
    a number outside the bounds, ``precision_code`` (default ``range_code``) of one with too many places.
    """
    range_code = range_code or code
    if type(value) is int:  # the fast path: exponent 0, so only its size needs a bound
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise _unbounded(name, range_code)
        amount = Decimal(value)
    else:
        if type(value) is Decimal:
            amount = value
        elif strings and type(value) is str:
            amount = _from_text(value, name, code=code)
        else:
            raise _not_a_number(name, strings=strings, code=code)
        sign, digits, exponent = amount.as_tuple()
        if type(exponent) is not int or len(digits) > MAX_DIGITS or not -MAX_EXPONENT <= exponent <= MAX_EXPONENT:
            raise _unbounded(name, range_code)  # also NaN, sNaN and Infinity, whose exponent is "n", "N" or "F"
        if sign and not any(digits):
            amount = amount.copy_abs()  # -0 is 0 (it would print as "-0.000000000" in a signed message)
        if places is not None and exponent < -places and _places(digits, exponent) > places:
            raise _refuse(precision_code or range_code, f"Must have at most {places} decimal places.", name)
    if (not signed and amount < 0) or (
        limit is not None and (amount.copy_abs() >= limit if below else amount.copy_abs() > limit)
    ):
        raise _out_of_range(name, limit=limit, below=below, signed=signed, code=range_code)
    return amount


def _from_text(text: str, name: str, *, code: str) -> Decimal:
    if len(text) > MAX_TEXT_LENGTH or not text.isascii() or "_" in text:
        raise _not_a_number(name, strings=True, code=code)
    try:
        return Decimal(text)  # NaN, sNaN and Infinity are read here and refused as not finite by the caller
    except InvalidOperation:  # not numeric text, or an exponent beyond libmpdec's own range
        raise _not_a_number(name, strings=True, code=code) from None


def read_integer(value: object, name: str, *, minimum: int, maximum: int, code: str = "validation_error") -> int:
    """A JSON integer (never a bool, a float or a string) from ``minimum`` to ``maximum``."""
    if type(value) is not int:
        raise _refuse(code, "Must be an integer.", name)
    if not minimum <= value <= maximum:
        raise _refuse(code, f"Must be an integer from {minimum} to {maximum}.", name)
    return value


def decimal_places(amount: Decimal) -> int:
    """Significant decimal places of a finite Decimal, ignoring trailing zeros, read from its tuple (no context
    rounding, no arithmetic)."""
    _, digits, exponent = amount.as_tuple()
    return _places(digits, exponent)


def _places(digits: tuple[int, ...], exponent: int) -> int:
    if exponent >= 0:
        return 0
    trailing = 0
    for digit in reversed(digits):
        if digit != 0:
            break
        trailing += 1
    return 0 if trailing == len(digits) else max(0, -(exponent + trailing))  # zero has no places


def shift(amount: Decimal, places: int) -> Decimal:
    """``amount`` times 10^``places``, exactly (its tuple with the exponent moved; no context, no rounding)."""
    sign, digits, exponent = amount.as_tuple()
    return Decimal((sign, digits, exponent + places))
