import dataclasses
from decimal import Decimal

import pytest

from minting.chain import base_units_to_kwh, convert_kwh, kwh_to_base_units


def test_one_billionth_of_a_kwh_is_one_base_unit():
    assert kwh_to_base_units(Decimal("0.000000001"), ratio=Decimal(1), decimals=9) == 1


def test_100_kwh_is_100_tokens_in_base_units():
    assert kwh_to_base_units(Decimal(100), ratio=Decimal(1), decimals=9) == 100_000_000_000


def test_2_01_kwh_is_exactly_2_010_000_000_units_where_a_float_loses_one():
    assert int(2.01 * 10**9) == 2_009_999_999  # what the float path would have minted
    assert kwh_to_base_units(Decimal("2.01"), ratio=Decimal(1), decimals=9) == 2_010_000_000


def test_a_sum_floats_get_wrong_converts_exactly():
    assert 0.1 + 0.2 != 0.3
    kwh = Decimal("0.1") + Decimal("0.2")
    assert kwh_to_base_units(kwh, ratio=Decimal(1), decimals=9) == 300_000_000
    assert kwh_to_base_units(Decimal("1.1") * 3, ratio=Decimal(1), decimals=9) == 3_300_000_000


def test_ratio_2_5_multiplies_exactly():
    assert kwh_to_base_units(Decimal("1.5"), ratio=Decimal("2.5"), decimals=9) == 3_750_000_000
    assert kwh_to_base_units(Decimal("0.000000001"), ratio=Decimal("2.5"), decimals=9) == 2


def test_decimals_6_scales_by_a_million():
    assert kwh_to_base_units(Decimal("2.01"), ratio=Decimal(1), decimals=6) == 2_010_000
    assert kwh_to_base_units(Decimal("0.0000009"), ratio=Decimal(1), decimals=6) == 0


def test_conversion_floors_and_reports_the_dropped_fraction_exactly():
    conversion = convert_kwh(Decimal("0.0000000015"), ratio=Decimal(1), decimals=9)
    assert (conversion.units, conversion.remainder) == (1, Decimal("0.5"))
    below_one = convert_kwh(Decimal("0.0000000009999"), ratio=Decimal(1), decimals=9)
    assert (below_one.units, below_one.remainder) == (0, Decimal("0.9999"))
    thirds = convert_kwh(Decimal("1"), ratio=Decimal("0.333333333333"), decimals=9)
    assert (thirds.units, thirds.remainder) == (333_333_333, Decimal("0.333"))


def test_zero_kwh_is_zero_units():
    assert convert_kwh(Decimal(0), ratio=Decimal(1), decimals=9).units == 0


def test_very_large_values_stay_exact():
    assert kwh_to_base_units(Decimal("123456789012345678.123456789"), ratio=Decimal(1), decimals=18) == (
        123456789012345678123456789000000000
    )


def test_defaults_come_from_the_tokenization_settings(settings):
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, kwh_to_token_ratio=Decimal("2.5"), decimals=6)
    assert kwh_to_base_units(Decimal("2.01")) == 5_025_000
    assert base_units_to_kwh(5_025_000) == Decimal("2.01")


@pytest.mark.parametrize("value", [2.01, "2.01", True, None])
def test_a_non_decimal_kwh_is_rejected_with_type_error(value):
    with pytest.raises(TypeError):
        kwh_to_base_units(value, ratio=Decimal(1), decimals=9)


def test_a_float_ratio_is_rejected_with_type_error():
    with pytest.raises(TypeError):
        kwh_to_base_units(Decimal(1), ratio=2.5, decimals=9)


@pytest.mark.parametrize(
    ("kwh", "ratio", "decimals"),
    [
        (Decimal("-0.1"), Decimal(1), 9),
        (Decimal("NaN"), Decimal(1), 9),
        (Decimal("Infinity"), Decimal(1), 9),
        (Decimal(1), Decimal(0), 9),
        (Decimal(1), Decimal(1), 19),
        (Decimal(1), Decimal(1), True),
    ],
)
def test_out_of_range_inputs_are_rejected_with_value_error(kwh, ratio, decimals):
    with pytest.raises(ValueError):
        kwh_to_base_units(kwh, ratio=ratio, decimals=decimals)


def test_base_units_to_kwh_inverts_an_exact_conversion():
    for kwh in (Decimal("0.000000002"), Decimal("2.01"), Decimal("100"), Decimal("0.3")):
        units = kwh_to_base_units(kwh, ratio=Decimal("2.5"), decimals=9)
        assert base_units_to_kwh(units, ratio=Decimal("2.5"), decimals=9) == kwh


def test_base_units_to_kwh_rounds_down_when_the_ratio_does_not_divide():
    assert base_units_to_kwh(1, ratio=Decimal(3), decimals=0) == Decimal("0." + "3" * 50)


@pytest.mark.parametrize(("units", "error"), [(1.0, TypeError), (True, TypeError), (-1, ValueError)])
def test_base_units_to_kwh_rejects_non_integer_or_negative_units(units, error):
    with pytest.raises(error):
        base_units_to_kwh(units, ratio=Decimal(1), decimals=9)
