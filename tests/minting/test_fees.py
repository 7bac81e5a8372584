"""Fees (docs/CHAIN.md, "Fees"): the market price, the measured compute-unit limit, the ceilings, landed costs.

Against the session's local chain (its fee market is quiet unless a test sets a congestion spell on a private
one) and the test database; the arithmetic and the meta parser also get property tests.
"""

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from config import ConfigError, Env
from config.fees import FeeConfig
from minting.chain import MintRequest, RpcBadResponse
from minting.chain.errors import PriorityFeeCapped
from minting.chain.fees import (
    MAX_COMPUTE_UNITS,
    FeeMarket,
    compute_limit,
    landed_cost,
    percentile,
    priority_fee,
)
from minting.models import ChainCostDay, MintBatch
from minting.selectors import chain_costs_by_day
from minting.services.costs import priority_budget_check
from tests.conftest import wait_until
from tests.minting.test_chain_support import land, new_client, wallets

SPELL = 40_000


@given(st.lists(st.integers(0, 10**12), max_size=200), st.integers(1, 100))
def test_the_percentile_is_a_value_with_rank_percent_at_or_below_it(values, rank):
    result = percentile(values, rank)
    if not values:
        assert result == 0
        return
    assert result in values
    at_or_below = sum(1 for v in values if v <= result)
    below = sum(1 for v in values if v < result)
    assert at_or_below * 100 >= rank * len(values) > below * 100


@given(st.integers(0, 2_000_000), st.integers(0, 120), st.integers(0, 100), st.integers(0, 10**9))
def test_the_limit_covers_what_it_holds_plus_the_margin_and_the_fee_rounds_up(units, memo_bytes, margin, price):
    limit = compute_limit(units, memo_bytes, margin)
    assert limit == MAX_COMPUTE_UNITS or limit * 100 >= (units + 300 + 2_000 + 350 * memo_bytes) * (100 + margin)
    assert limit <= MAX_COMPUTE_UNITS
    fee = priority_fee(limit, price)
    assert fee * 1_000_000 >= limit * price > (fee - 1) * 1_000_000


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))  # fmt: skip
def test_the_meta_parser_refuses_anything_malformed_with_a_typed_error(answer):
    try:
        cost = landed_cost(answer, 1)
    except RpcBadResponse:
        return
    assert cost is None or cost.fee >= 0


def test_a_landed_meta_gives_fee_priority_and_the_rent_of_new_accounts():
    meta = {"fee": 6_250, "preBalances": [10**9, 0, 5, 0], "postBalances": [10**9 - 4_000_000, 2_039_280, 5, 1_960_720]}
    cost = landed_cost({"meta": {**meta, "computeUnitsConsumed": 41_000}}, 1)
    assert cost == (6_250, 1_250, 4_000_000, 41_000)


def test_fixed_mode_asks_nothing_and_market_mode_reads_once_per_cache_period(localnet):
    calls = []

    def call(method, params):
        calls.append(method)
        return client.rpc.call(method, params)

    client = new_client(localnet.url)
    now = [0.0]
    fixed = FeeMarket(FeeConfig(mode="fixed", floor_microlamports=7), call, clock=lambda: now[0])
    assert fixed.price(["a"]) == 7 and calls == []
    accounts = [str(client.mint), str(client.payer)]
    market = FeeMarket(FeeConfig(floor_microlamports=3, cache_ms=1_000), call, clock=lambda: now[0])
    assert [market.price(accounts) for _ in range(5)] == [3] * 5  # a quiet market: the floor
    now[0] = 0.999
    market.price(accounts)
    assert calls == ["getRecentPrioritizationFees"]
    now[0] = 1.0
    market.price(accounts)
    assert len(calls) == 2
    with pytest.raises(PriorityFeeCapped, match="SOLANA_PRIORITY_FEE_MAX_LAMPORTS=10") as refused:
        FeeMarket(FeeConfig(max_lamports_per_transaction=10), call).check(100_000, 100_001)
    assert refused.value.code == "priority_fee_cap" and not refused.value.permanent
    client.close()


def test_a_build_on_a_congested_market_pays_the_spell_and_asks_for_about_what_it_uses(make_localnet):
    net = make_localnet(slot_ms=5)
    client = new_client(net.url, fees=FeeConfig(percentile=50, cache_ms=0))
    first = wallets(12)
    assert all(s.compute_unit_price == 0 and s.compute_unit_limit == 0 for s in client.build_mints(
        [MintRequest(w, 1) for w in first], memo="quiet"))  # fmt: skip
    net.set_faults({"congestion": {"min_microlamports": SPELL, "seconds": 600}})
    try:
        assert_market_shows(client)
        new = wallets(6)  # new wallets (accounts created) and known ones in one build
        signed = client.build_mints([MintRequest(w, 5) for w in [*first, *new]], memo="busy")
        land(client, signed)
        for item in signed:
            assert item.compute_unit_price >= SPELL
            assert item.priority_fee == priority_fee(item.compute_unit_limit, item.compute_unit_price)
            answer = client.rpc.call(
                "getTransaction", [item.signature, {"encoding": "base64", "maxSupportedTransactionVersion": 0}]
            )
            cost = landed_cost(answer, 1)
            assert cost.fee == 5_000 + item.priority_fee and cost.priority_fee == item.priority_fee
            # The measured estimates: enough (it landed), and not a large fixed limit either.
            assert item.compute_unit_limit * 0.8 <= cost.compute_units <= item.compute_unit_limit
    finally:
        net.set_faults({})
        client.close()


def assert_market_shows(client) -> None:
    wait_until(lambda: client.fee_market.price([str(client.mint)]) >= SPELL, interval=0.05, message="market price")


def test_fee_settings_are_validated():
    assert FeeConfig.from_env(Env({})) == FeeConfig()
    with pytest.raises(ConfigError, match="SOLANA_PRIORITY_FEE_MODE"):
        FeeConfig.from_env(Env({"SOLANA_PRIORITY_FEE_MODE": "auction"}))
    with pytest.raises(ConfigError, match="SOLANA_PRIORITY_FEE_PERCENTILE"):
        FeeConfig.from_env(Env({"SOLANA_PRIORITY_FEE_PERCENTILE": "0"}))
    with pytest.raises(ConfigError, match="an hour must allow one transaction"):
        FeeConfig.from_env(
            Env({"SOLANA_PRIORITY_FEE_MAX_LAMPORTS": "5000", "SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR": "4999"})
        )


def _batch(n: int, *, fee: int, age: timedelta, status=MintBatch.Status.CONFIRMED) -> MintBatch:
    return MintBatch.objects.create(
        signature=f"sig-{n}-{fee}-{age.total_seconds()}", raw_transaction=b"", last_valid_block_height=0,
        mint_address="m", priority_fee_lamports=fee, status=status, created_at=timezone.now() - age,
    )  # fmt: skip


@pytest.mark.django_db
def test_the_hourly_ceiling_counts_the_last_hours_signed_batches_and_no_expired_one(settings):
    settings.CHAIN = dataclasses.replace(
        settings.CHAIN, fees=dataclasses.replace(settings.CHAIN.fees, max_lamports_per_hour=10_000)
    )
    _batch(1, fee=6_000, age=timedelta(minutes=59))
    _batch(2, fee=3_000, age=timedelta(minutes=1), status=MintBatch.Status.SIGNED)
    _batch(3, fee=50_000, age=timedelta(minutes=61))  # outside the window
    _batch(4, fee=50_000, age=timedelta(minutes=5), status=MintBatch.Status.EXPIRED)  # never paid

    class Signed:
        def __init__(self, fee):
            self.priority_fee = fee

    priority_budget_check([Signed(1_000)])  # 9,000 + 1,000: at the ceiling
    with pytest.raises(PriorityFeeCapped, match="SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR=10000") as refused:
        priority_budget_check([Signed(600), Signed(401)])
    assert refused.value.code == "priority_fee_hourly_cap"


@pytest.mark.django_db
def test_the_report_reads_the_days_asked_and_divides_exactly(capsys):
    today = timezone.now().date()
    ChainCostDay.objects.create(day=today, batches=2, readings=8, kwh=Decimal("2.5"), fee_lamports=12_000,
                                priority_fee_lamports=2_000, rent_lamports=3_000)  # fmt: skip
    ChainCostDay.objects.create(day=today - timedelta(days=3), batches=1, readings=1, kwh=Decimal("1"),
                                fee_lamports=5_000, priority_fee_lamports=0, rent_lamports=0)  # fmt: skip
    (day,) = chain_costs_by_day(days=3)
    assert day.lamports_per_kwh == Decimal("6000.00") and day.lamports_per_reading == Decimal("1875.00")
    assert len(chain_costs_by_day(days=4)) == 2
    call_command("chain_costs", "--days", "4")
    out = capsys.readouterr().out
    assert "6000.00" in out and "1875.00" in out and "20000 lamports = 0.000020000 SOL over 2 day(s)" in out
