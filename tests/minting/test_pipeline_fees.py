"""The pipeline on the local chain's fee market (docs/LOCALNET.md, "congestion"; docs/CHAIN.md, "Fees").

Runs the real mint cycle (``readings_mint_due``, ``batches_reconcile``) in this process against a private
chain with 10 ms slots: a congestion spell drops every send priced below it, getRecentPrioritizationFees shows
its price, and the chain charges the priority fee. The proof is the usual one (every reading once, balances
and supply) plus: no reading charged an attempt, each batch's recorded fee is what the chain charged, and
the day's cost rollup adds up.
"""

import dataclasses

import pytest
from django.core.management import call_command
from django.db.models import F
from prometheus_client import generate_latest

from meters.models import MeterReading
from minting.chain.fees import LAMPORTS_PER_SIGNATURE, priority_fee
from minting.models import ChainCostDay, MintBatch, MintingControl
from minting.services.automatic import readings_mint_due
from minting.services.batching import chain_client
from minting.services.reconciliation import batches_reconcile
from ops.metrics import REGISTRY
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    make_meter,
    make_readings,
    set_tokenization,
    use_chain,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]
SLOT_MS = 10
SPELL_PRICE = 50_000  # micro-lamports per compute unit


@pytest.fixture
def market(settings, make_localnet, tmp_path):
    set_tokenization(settings, batch_size=10)
    localnet = make_localnet(slot_ms=SLOT_MS)
    chain = use_chain(settings, localnet, tmp_path)
    chain.localnet = localnet
    fees = dataclasses.replace(settings.CHAIN.fees, mode="market", percentile=50, cache_ms=100)
    settings.CHAIN = dataclasses.replace(settings.CHAIN, fees=fees)
    yield chain
    localnet.set_faults({})


def set_fees(settings, **changes) -> None:
    settings.CHAIN = dataclasses.replace(settings.CHAIN, fees=dataclasses.replace(settings.CHAIN.fees, **changes))


def mint_until_done(readings, *, seen_paused: list | None = None) -> None:
    def done() -> bool:
        MintingControl.objects.filter(id=1).update(chain_retry_at=None)  # the breaker's wait, without sleeping
        readings_mint_due(budget_secs=2.0)
        control = MintingControl.objects.get(id=1)
        if seen_paused is not None and control.chain_error_code:
            seen_paused.append(control.chain_error_code)
        batches_reconcile(min_age_secs=0)
        statuses = set(MeterReading.objects.filter(id__in=[r.id for r in readings]).values_list("status", flat=True))
        return statuses == {"minted"}

    wait_until(done, timeout=120, interval=0.2, message="every reading minted")


def assert_costs_recorded(readings) -> None:
    confirmed = list(MintBatch.objects.filter(status=MintBatch.Status.CONFIRMED))
    for batch in confirmed:
        assert batch.compute_unit_price >= SPELL_PRICE
        assert batch.priority_fee_lamports == priority_fee(batch.compute_unit_limit, batch.compute_unit_price)
        assert batch.fee_lamports == LAMPORTS_PER_SIGNATURE + batch.priority_fee_lamports
        assert 0 < batch.compute_units_consumed <= batch.compute_unit_limit
    (day,) = ChainCostDay.objects.all()
    assert day.readings == len(readings) and day.batches == len(confirmed)
    assert day.kwh == sum(r.mintable_kwh for r in MeterReading.objects.filter(id__in=[r.id for r in readings]))
    assert day.fee_lamports == sum(b.fee_lamports for b in confirmed)
    assert day.rent_lamports == sum(b.rent_lamports for b in confirmed) > 0  # the wallets' new token accounts


def test_the_pipeline_raises_its_price_through_a_congestion_spell_and_mints_once(market, settings):
    set_fees(settings, cache_ms=8_000)  # (longer than the first build's lookup table set-up on a loaded machine)
    client = chain_client()
    client.fee_market.price([str(client.mint), str(client.payer)])  # a quiet market, kept 8 s: the first
    market.localnet.set_faults({"congestion": {"min_microlamports": SPELL_PRICE, "seconds": 600}})  # builds underpay
    readings = make_readings([make_meter() for _ in range(4)], 20)

    mint_until_done(readings)

    assert_minted_exactly_once(market.client(), readings)
    assert set(MeterReading.objects.filter(id__in=[r.id for r in readings]).values_list("attempts", flat=True)) == {0}
    assert_costs_recorded(readings)
    # The first transactions, priced from the quiet market, never landed: expired, re-signed at the spell's price.
    expired = MintBatch.objects.filter(status=MintBatch.Status.EXPIRED)
    assert expired.exists() and all(b.compute_unit_price < SPELL_PRICE for b in expired)

    # A batch whose costs the worker could not read (the node did not have it yet): reconciliation reads them.
    batch = MintBatch.objects.filter(status=MintBatch.Status.CONFIRMED).first()
    MintBatch.objects.filter(id=batch.id).update(fee_lamports=None, rent_lamports=None, compute_units_consumed=None)
    ChainCostDay.objects.update(
        batches=F("batches") - 1, readings=F("readings") - batch.reading_count, kwh=F("kwh") - batch.kwh,
        fee_lamports=F("fee_lamports") - batch.fee_lamports, rent_lamports=F("rent_lamports") - batch.rent_lamports,
        priority_fee_lamports=F("priority_fee_lamports") - batch.priority_fee_lamports,
    )  # fmt: skip
    batches_reconcile(min_age_secs=0)
    assert_costs_recorded(readings)


def test_a_ceiling_below_the_spell_waits_as_a_platform_fault_then_mints_when_the_spell_ends(market, settings, capsys):
    set_fees(settings, max_lamports_per_transaction=100)  # the spell's price costs thousands per transaction
    market.localnet.set_faults({"congestion": {"min_microlamports": SPELL_PRICE, "seconds": 600}})
    readings = make_readings([make_meter() for _ in range(3)], 9)
    wait_until(
        lambda: market.localnet.faults()["congestion"]["active"] and _market_price(market) >= SPELL_PRICE,
        interval=0.1, message="the market showing the spell",
    )  # fmt: skip

    result = readings_mint_due(budget_secs=2.0)

    assert result.as_dict()["stopped"] == "chain_unavailable"
    control = MintingControl.objects.get(id=1)
    assert (
        control.chain_error_code == "priority_fee_cap" and "SOLANA_PRIORITY_FEE_MAX_LAMPORTS=100" in control.chain_error
    )
    assert 'gridtoken_minting_paused{reason="priority_fee_cap"} 1' in generate_latest(REGISTRY).decode()
    rows = MeterReading.objects.filter(id__in=[r.id for r in readings])
    assert {(r.status, r.attempts) for r in rows} == {("pending", 0)} and not MintBatch.objects.exists()

    market.localnet.set_faults({})  # the spell ends; the recent fees fall as its slots age out of the window
    mint_until_done(readings)

    assert_minted_exactly_once(market.client(), readings)
    assert {r.attempts for r in MeterReading.objects.filter(id__in=[r.id for r in readings])} == {0}
    assert MintingControl.objects.get(id=1).chain_error_code == ""
    call_command("chain_costs", "--days", "1")
    report = capsys.readouterr().out
    assert "lamports/kWh" in report and str(len(readings)) in report


def _market_price(chain) -> int:
    answer = chain.client().rpc.call("getRecentPrioritizationFees", [[]])
    fees = sorted(entry["prioritizationFee"] for entry in answer)
    return fees[len(fees) // 2]
