"""Everything a mainnet deployment runs, on at once (issue 26's "Done when"): real Celery worker and beat minting
with the mint authority in SoftHSM2, through three RPC providers (three front-ends of one local chain with 10 ms
slots), on the local chain's fee market with ceilings per transaction and per hour.

In turn: provider 1 down and provider 2 lagging throughout most of it; a congestion spell priced above the
per-transaction ceiling (minting waits, ``priority_fee_cap``), then over; provider 3 answering HTTP 429 for a
spell while provider 1 is back; the HSM unplugged (``signer_token_missing``) and plugged back; the hourly
ceiling reached (``priority_fee_hourly_cap``), then raised by a restart. It ends with the usual proof (every
reading minted once, balances and supply equal the readings, no attempt charged), the pause codes seen, and
``chain_costs`` reporting exactly what the chain charged (the getTransaction metas' fees).
"""

import dataclasses
import io

import pytest
from django.core.management import call_command
from solders.transaction import VersionedTransaction

from config.providers import RpcEndpoint
from gridtoken import observability
from meters.models import MeterReading
from minting.chain.fees import LAMPORTS_PER_SIGNATURE
from minting.models import MintBatch, MintingControl
from minting.services.batching import chain_client
from minting.services.costs import costs_unread, priority_spent_last_hour
from minting.tasks import reconcile_batches
from minting.triggers import mint_soon
from tests.conftest import rpc_call
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    celery_processes_fixture,  # noqa: F401 (the celery_processes fixture)
    make_meter,
    make_readings,
    set_tokenization,
    wait_until,
)
from tests.minting.test_pipeline_cluster import assert_platform_charged_nothing
from tests.minting.test_signer import token_plugged_back, token_unplugged

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
SLOT_MS = 10  # a 250-slot lag is 2.5 s; a spell's fees leave the 150-slot window 1.5 s after it ends
FLOOR = 20_000  # micro-lamports per compute unit: every transaction pays a priority fee
SPELL_PRICE = 1_000_000  # micro-lamports: 40,000 lamports for the smallest mint transaction (~40,000 units)
# Lamports: above the floor's fee for any batch here (4 wallets' new accounts and mints: ~130,000 units, 2,600
# lamports), below the spell's for any (40,000 lamports and more).
MAX_PER_TRANSACTION = 5_000
DOWN, LAGGING = {"http": {"status": 503}}, {"lag": {"slots": 250}}
CONGESTION = {"congestion": {"min_microlamports": SPELL_PRICE}}
EXPECTED_PAUSES = {"priority_fee_cap", "signer_token_missing", "priority_fee_hourly_cap"}


class Pipeline:
    """The stack's moving parts: the chain's front-ends, the worker's environment, the pause codes seen."""

    def __init__(self, localnet, celery_processes, env: dict[str, str]) -> None:
        self.localnet, self.celery_processes, self.env = localnet, celery_processes, env
        self.worker = celery_processes(env=env)
        celery_processes("beat", env=env)
        self.pauses: set[str] = set()

    def faults(self, *plans: dict) -> None:
        for front_end, plan in enumerate(plans, start=1):
            self.localnet.set_faults(plan, front_end=front_end)

    def restart_worker(self, **changes: str) -> None:
        """Settings are read once: a ceiling raised is a restart with the new environment."""
        self.worker.stop()
        self.env |= changes
        self.worker = self.celery_processes(env=self.env)

    def watch(self) -> str:
        code = MintingControl.objects.filter(id=1).values_list("chain_error_code", flat=True).first() or ""
        if code:
            self.pauses.add(code)
        return code

    def wait_paused(self, code: str) -> None:
        wait_until(lambda: self.watch() == code, interval=0.1, message=f"minting paused with {code}")

    def wait_minted(self, readings, message: str) -> None:
        ids = [r.id for r in readings]

        def minted() -> bool:
            self.watch()
            reconcile_batches.apply_async()
            return set(MeterReading.objects.filter(id__in=ids).values_list("status", flat=True)) == {"minted"}

        wait_until(minted, interval=0.5, message=message)

    def mint(self, readings, message: str) -> list:
        mint_soon()
        self.wait_minted(readings, message)
        return readings


def market_price(localnet, front_end: int) -> int:
    answer = rpc_call(localnet.urls[front_end - 1], "getRecentPrioritizationFees", [[]])["result"]
    return max(entry["prioritizationFee"] for entry in answer)


def pending_uncharged(readings) -> bool:
    rows = MeterReading.objects.filter(id__in=[r.id for r in readings])
    return {(r.status, r.attempts) for r in rows} == {("pending", 0)}


def chain_costs_total() -> dict[str, int]:
    out = io.StringIO()
    call_command("chain_costs", "--days", "2", stdout=out)
    (total,) = [line.split() for line in out.getvalue().splitlines() if line.startswith("total")]
    return dict(zip(("batches", "readings", "fee", "priority", "rent"), map(int, total[1:3] + total[4:7]), strict=True))


def charged_on_chain(client) -> tuple[int, int]:
    """(fees, priority fees) the chain charged the landed batches, from their getTransaction metas."""
    fees = priority = 0
    config = {"encoding": "json", "commitment": "confirmed", "maxSupportedTransactionVersion": 0}
    for batch in MintBatch.objects.filter(status__in=[MintBatch.Status.CONFIRMED, MintBatch.Status.FAILED]):
        answer = client.rpc.call("getTransaction", [batch.signature, config])
        fee, signatures = answer["meta"]["fee"], len(answer["transaction"]["signatures"])
        fees += fee
        priority += fee - LAMPORTS_PER_SIGNATURE * signatures
    return fees, priority


def test_the_hsm_signer_three_providers_and_the_fee_market_together_mint_every_reading_exactly_once(
    settings, make_localnet, tmp_path, softhsm, celery_processes
):
    set_tokenization(settings, batch_size=10, trigger_debounce_ms=100)
    localnet = make_localnet(slot_ms=SLOT_MS, front_ends=3)
    fees = dataclasses.replace(settings.CHAIN.fees, mode="market", floor_microlamports=FLOOR)
    settings.CHAIN = dataclasses.replace(
        settings.CHAIN, rpc_url=localnet.url, energy_token_mint=None, signer=softhsm, fees=fees
    )
    keygen = io.StringIO()
    call_command("signer_keygen", stdout=keygen)
    address = keygen.getvalue().strip()
    call_command("chain_init", "--new-mint", stdout=io.StringIO())  # the mint with the HSM key as its authority
    endpoints = tuple(RpcEndpoint(url=url) for url in localnet.urls)
    settings.CHAIN = dataclasses.replace(
        settings.CHAIN, rpc=dataclasses.replace(settings.CHAIN.rpc, endpoints=endpoints)
    )
    observability.redis_client().delete(observability.RPC_ERRORS_KEY, observability.RPC_STATES_KEY)
    pin_file = tmp_path / "hsm-pin"
    pin_file.write_text(softhsm.pin + "\n")
    pipeline = Pipeline(
        localnet,
        celery_processes,
        {
            "SIGNER_BACKEND": "pkcs11", "SIGNER_PKCS11_MODULE": str(softhsm.module),
            "SIGNER_PKCS11_TOKEN_LABEL": softhsm.token_label, "SIGNER_PKCS11_KEY_LABEL": softhsm.key_label,
            "SIGNER_PKCS11_PIN_FILE": str(pin_file),  # SOFTHSM2_CONF: the test's token, inherited
            "SOLANA_RPC_URL": "", "SOLANA_RPC_URLS": ",".join(localnet.urls),
            "SOLANA_RPC_PROBE_SECS": "1", "SOLANA_RPC_PROBE_MAX_SECS": "2",
            "SOLANA_PRIORITY_FEE_MODE": "market", "SOLANA_PRIORITY_FEE_MICROLAMPORTS": str(FLOOR),
            "SOLANA_PRIORITY_FEE_CACHE_MS": "200", "SOLANA_PRIORITY_FEE_MAX_LAMPORTS": str(MAX_PER_TRANSACTION),
            "TOKENIZATION_POLLING_INTERVAL_SECS": "1",
        },
    )  # fmt: skip
    meters = [make_meter() for _ in range(4)]
    readings = []

    # 1. Provider 1 down, provider 2 lagging: signed in the HSM, read and sent through provider 3.
    pipeline.faults(DOWN, LAGGING, {})
    readings += pipeline.mint(make_readings(meters, 10), "minted past a down and a lagging provider")

    # 2. A congestion spell (on every front-end: one cluster) priced above the per-transaction ceiling.
    pipeline.faults(DOWN | CONGESTION, LAGGING | CONGESTION, CONGESTION)
    wait_until(lambda: market_price(localnet, 3) >= SPELL_PRICE, interval=0.05, message="the market shows the spell")
    spell = make_readings(meters, 10)
    mint_soon()
    pipeline.wait_paused("priority_fee_cap")
    assert pending_uncharged(spell) and not MintBatch.objects.filter(compute_unit_price__gte=SPELL_PRICE).exists()
    pipeline.faults(DOWN, LAGGING, {})  # the spell ends; its fees leave the window
    readings += pipeline.mint(spell, "minted once the spell is over")

    # 3. Provider 1 is back and provider 3 answers 429 for a spell: provider 1 carries it.
    pipeline.faults({}, LAGGING, {"http": {"status": 429, "seconds": 3}})
    readings += pipeline.mint(make_readings(meters, 10), "minted past a rate-limited provider")

    # 4. The HSM unplugged: minting waits uncharged, and resumes once it is back, without a restart.
    aside = token_unplugged(softhsm)
    unplugged = make_readings(meters, 10)
    mint_soon()
    pipeline.wait_paused("signer_token_missing")
    assert pending_uncharged(unplugged)
    token_plugged_back(aside)
    pipeline.wait_minted(unplugged, "minted once the HSM is back")
    readings += unplugged

    # 5. The hourly ceiling: what the last hour spent plus less than any batch costs.
    wait_until(lambda: not MintBatch.objects.filter(status=MintBatch.Status.SIGNED).exists(), message="settled")
    spent = priority_spent_last_hour()
    pipeline.restart_worker(SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR=str(max(spent + 1, MAX_PER_TRANSACTION)))
    capped = []
    while pipeline.watch() != "priority_fee_hourly_cap":  # a batch pays ~700 lamports or more at the floor
        assert len(capped) < 100, f"the hourly ceiling was never reached: {priority_spent_last_hour()} spent"
        capped += make_readings(meters, 10)
        mint_soon()
        wait_until(
            lambda: pipeline.watch() == "priority_fee_hourly_cap" or not pending_uncharged(capped[-10:]),
            interval=0.1, message="a cycle ran",
        )  # fmt: skip
    waiting = [r for r in capped if MeterReading.objects.get(id=r.id).status == "pending"]
    assert waiting and pending_uncharged(waiting)
    assert priority_spent_last_hour() <= max(spent + 1, MAX_PER_TRANSACTION)  # never overspent
    pipeline.restart_worker(SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR="0")  # raised: no hourly ceiling
    readings += pipeline.mint(capped, "minted once the hourly ceiling is raised")

    # The proof.
    pipeline.faults({}, {}, {})
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(chain_client(), readings)
    control = MintingControl.objects.get(id=1)
    assert control.chain_failures == 0, pipeline.worker.output()
    assert EXPECTED_PAUSES <= pipeline.pauses <= EXPECTED_PAUSES | {"rpc_providers_out"}, pipeline.pauses
    errors = observability.rpc_provider_error_counts()
    assert errors.get((1, "rpc_unavailable")) and errors.get((2, "rpc_lagging")), errors
    assert errors.get((3, "rpc_rate_limited")), errors
    for batch in MintBatch.objects.filter(status=MintBatch.Status.CONFIRMED):
        assert batch.compute_unit_price >= FLOOR and batch.priority_fee_lamports <= MAX_PER_TRANSACTION
        signed = VersionedTransaction.from_bytes(bytes(batch.raw_transaction))
        assert signed.verify_with_results() == [True] and str(signed.message.account_keys[0]) == address

    def costs_read() -> bool:
        reconcile_batches.apply_async()
        return not costs_unread()

    wait_until(costs_read, message="every landed batch's cost read")
    fees_charged, priority_charged = charged_on_chain(chain_client())
    costs = chain_costs_total()
    landed = MintBatch.objects.filter(status__in=[MintBatch.Status.CONFIRMED, MintBatch.Status.FAILED]).count()
    assert (costs["batches"], costs["readings"]) == (landed, len(readings))
    assert (costs["fee"], costs["priority"]) == (fees_charged, priority_charged) and priority_charged > 0
