"""Hypothesis strategies of extreme numbers, as JSON text and as the values a JSON body's fields hold.

Exponents of +-10^9, a million digits, NaN and Infinity in every spelling, -0, subnormals, huge integers,
numbers as strings and strings as numbers, and values nested deeply: what any door may receive.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as st

MILLION_DIGITS = "1" * 10**6 + ".5"
SPECIAL_TEXT = (
    "nan", "NaN", "-NaN", "+nan", "sNaN", "-sNaN", "snan", "inf", "-inf", "Inf", "Infinity", "-Infinity",
    "+Infinity", "infinity", "-0", "0.0", "-0.0", "-0e-400", "1e-400", "4.9e-324", "2.2250738585072014e-308",
    "1.7976931348623157e308", "1e309", "1e999999999", "-1e999999999", "1e-999999999", "0x10", "1_000", " 1.5 ",
    "", " ", "\u0661\u0662", "1e", "--1", "+1.5", "1.5e+3", ".5", "5.", "1e1000000", "0." + "0" * 500 + "1",
)  # fmt: skip


def _number_text(sign: str, whole: str, fraction: str, exponent: int | None) -> str:
    text = f"{sign}{whole}" + (f".{fraction}" if fraction else "")
    return text if exponent is None else f"{text}e{exponent}"


exponents = st.one_of(
    st.integers(-10, 10), st.integers(-500, 500), st.integers(-(10**9), 10**9), st.sampled_from([-(10**9), 10**9])
)
# JSON number text (what a meter writes), from ordinary to extreme.
number_text = st.builds(
    _number_text,
    st.sampled_from(["", "-"]),
    st.from_regex(r"\A(0|[1-9][0-9]{0,60})\Z"),
    st.from_regex(r"\A[0-9]{0,50}\Z"),
    st.none() | exponents,
)
# What a JSON body's numeric field holds after ``loads_exact``: an int (at most 4,300 digits) or a Decimal.
json_numbers = st.one_of(
    st.integers(-(10**20), 10**20),
    st.integers(-(10**4000), 10**4000),
    st.sampled_from([10**4299, -(10**4299), 2**63, 2**64, 2**35]),
    number_text.map(lambda text: int(text) if text.lstrip("-").isdigit() else Decimal(text)),
    st.sampled_from(
        [Decimal(MILLION_DIGITS), Decimal("1e999999999"), Decimal("-1e-999999999"), Decimal("-0"), Decimal("-0.0")]
    ),
)
# Anything that is not a JSON number but may be sent where one is expected.
not_numbers = st.one_of(
    st.booleans(),
    st.none(),
    st.sampled_from(SPECIAL_TEXT),
    number_text,  # numbers as strings
    st.text(max_size=20),
    st.sampled_from([Decimal("NaN"), Decimal("-Infinity"), Decimal("sNaN"), 1.5, float("nan")]),
)
scalars = json_numbers | not_numbers
# Deep nesting: lists and objects of the above, sometimes hundreds of levels down.
nested = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
deep = st.integers(1, 400).map(lambda depth: _deep(depth))
values = scalars | nested | deep


def _deep(depth: int) -> object:
    value: object = Decimal("1e999999999")
    for level in range(depth):
        value = [value] if level % 2 else {"v": value}
    return value
