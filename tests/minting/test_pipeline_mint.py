"""The mint procedure in this process against the local chain: batching, reconciliation, on-chain failures."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.db import transaction
from django.utils import timezone
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    AuthorityType,
    BurnCheckedParams,
    CloseAccountParams,
    SetAuthorityParams,
    burn_checked,
    close_account,
    set_authority,
)

from meters.models import MeterReading
from minting.chain.keys import load_keypair
from minting.models import MintBatch, MintingControl
from minting.services import reconciliation
from minting.services.automatic import readings_mint_due
from minting.services.batching import (
    ZERO_AMOUNT_ERROR,
    Prepared,
    batches_dispatch,
    batches_prepare,
    batches_send,
    chain_client,
)
from minting.services.chain_view import as_signed
from minting.services.claiming import claim_due
from minting.services.control import chain_outage_record, control_get
from minting.services.reconciliation import batches_reconcile
from minting.services.settlement import Settlement, batches_settle
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    captured_events,
    make_meter,
    make_readings,
    set_tokenization,
    use_chain,
    wait_until,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(settings, localnet, tmp_path):
    return use_chain(settings, localnet, tmp_path)


def all_readings():
    return list(MeterReading.objects.all())


def prepare_without_sending(client, limit: int = 1000) -> list[MintBatch]:
    """Steps up to the batch commit, then stop, exactly as a worker killed right after that commit."""
    with transaction.atomic():
        prepared, _ = batches_prepare(client=client, claimed=claim_due(limit=limit))
    return [p.batch for p in prepared]


def test_due_readings_are_minted_exactly_once_with_one_instruction_per_wallet(chain, settings):
    set_tokenization(settings, batch_size=100)
    meters = [make_meter() for _ in range(5)]
    make_readings(meters, 20, kwh="2.01")
    make_readings(meters[:2], 2, kwh="0.000000001")
    make_readings(meters[2:3], 1, kwh="99.999999999")
    client = chain.client()

    result = readings_mint_due()

    assert (result.claimed, result.minted, result.in_flight, result.stopped) == (23, 23, 0, "")
    readings = all_readings()
    assert_minted_exactly_once(client, readings)
    assert {r.token_amount for r in readings if r.kwh_amount == Decimal("2.01")} == {2_010_000_000}
    # A transaction's readings are all the readings of the wallets it covers.
    wallets_per_batch = [set(b.readings.values_list("wallet_address", flat=True)) for b in MintBatch.objects.all()]
    assert sum(len(w) for w in wallets_per_batch) == len(set().union(*wallets_per_batch)) == 5


def test_a_burst_is_minted_in_full_batches_by_one_drain(chain, settings):
    set_tokenization(settings, batch_size=10)
    make_readings([make_meter() for _ in range(7)], 35)
    result = readings_mint_due()
    assert (result.cycles, result.claimed, result.minted) == (4, 35, 35)
    assert_minted_exactly_once(chain.client(), all_readings())


def test_a_drain_that_outlives_its_budget_hands_over_to_a_fresh_task(chain, settings):
    set_tokenization(settings, batch_size=2)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()
    make_readings([make_meter()], 5)
    result = readings_mint_due(budget_secs=-1)
    assert (result.cycles, result.minted) == (1, 2)
    assert [json.loads(m)["headers"]["task"] for m in broker.lrange("celery", 0, -1)] == [
        "minting.tasks.mint_due_readings"
    ]
    broker.flushdb()


def test_reconciliation_sends_the_committed_bytes_of_a_batch_that_never_left(chain):
    make_readings([make_meter() for _ in range(3)], 6)
    client = chain.client()
    (batch,) = prepare_without_sending(client)
    assert client.get_signature_statuses([batch.signature])[batch.signature] is None

    first = batches_reconcile(min_age_secs=0)
    assert (first.examined, first.resent) == (1, 1)
    second = batches_reconcile(min_age_secs=0)
    assert (second.confirmed, second.minted) == (1, 6)

    assert MintBatch.objects.get().signature == batch.signature  # the same transaction, never a second one
    assert_minted_exactly_once(client, all_readings())


def test_reconciliation_marks_a_batch_that_landed_but_was_never_marked(chain):
    make_readings([make_meter()], 3)
    client = chain.client()
    batches = prepare_without_sending(client)
    batches_send(client, [(b, as_signed(b)) for b in batches])

    result = batches_reconcile(min_age_secs=0)

    assert (result.confirmed, result.resent, result.minted) == (1, 0, 3)
    assert MintBatch.objects.get().send_attempts == 1
    assert_minted_exactly_once(client, all_readings())


def test_reconciliation_counts_only_the_settles_it_won(chain, monkeypatch):
    """A worker settles the batch between the reconciler's chain read and its settle (the race, provoked by
    settling from inside the read)."""
    make_readings([make_meter()], 3)
    client = chain.client()
    batches = prepare_without_sending(client)
    batches_send(client, [(b, as_signed(b)) for b in batches])
    wait_until(lambda: client.get_signature_statuses([batches[0].signature])[batches[0].signature])
    real = reconciliation.read_outcomes

    def read_then_lose_the_race(client, chunk):
        outcome = real(client, chunk)
        batches_settle(outcome[0])  # the worker wins
        return outcome

    monkeypatch.setattr(reconciliation, "read_outcomes", read_then_lose_the_race)
    result = batches_reconcile(min_age_secs=0)

    assert (result.examined, result.confirmed, result.minted) == (1, 0, 0)
    assert_minted_exactly_once(client, all_readings())


def test_young_batches_are_left_to_the_worker_that_is_confirming_them(chain):
    make_readings([make_meter()], 1)
    prepare_without_sending(chain.client())
    assert batches_reconcile().examined == 0


def test_an_orphaned_batch_expires_after_its_blockhash_and_its_readings_get_a_fresh_transaction(
    settings, make_localnet, tmp_path
):
    chain = use_chain(settings, make_localnet(slot_ms=10), tmp_path)
    make_readings([make_meter() for _ in range(2)], 4, attempts=1)
    client = chain.client()
    (orphan,) = prepare_without_sending(client)
    wait_until(lambda: client.get_block_height() > orphan.last_valid_block_height, message="blockhash expiry")

    result = batches_reconcile(min_age_secs=0)

    assert (result.expired, result.resent) == (1, 0)
    orphan.refresh_from_db()
    assert orphan.status == "expired"
    assert {(r.status, r.attempts) for r in all_readings()} == {("pending", 1)}  # no attempt consumed
    assert readings_mint_due().minted == 4
    assert client.get_signature_statuses([orphan.signature])[orphan.signature] is None
    assert MintBatch.objects.filter(status="confirmed").exclude(signature=orphan.signature).count() == 1
    assert_minted_exactly_once(client, all_readings())


def send_as(client, payer: Keypair, instructions) -> None:
    """A transaction of someone else's (a user's), paid and signed by them, waited for."""
    message = Message.new_with_blockhash(instructions, payer.pubkey(), client.latest_blockhash().blockhash)
    tx = VersionedTransaction(message, [payer])
    client.send_raw(bytes(tx), skip_preflight=False)
    wait_until(lambda: client.get_signature_statuses([str(tx.signatures[0])])[str(tx.signatures[0])] is not None)


def change_mint_authority(client, payer: Keypair, current: Keypair, new: Keypair) -> None:
    """A real SetAuthority transaction: with a stranger as mint authority, our mints fail on chain."""
    instruction = set_authority(
        SetAuthorityParams(
            program_id=client.token_program,
            account=client.mint,
            authority=AuthorityType.MINT_TOKENS,
            current_authority=current.pubkey(),
            new_authority=new.pubkey(),
        )
    )
    blockhash = client.latest_blockhash().blockhash
    signers = [payer] if current.pubkey() == payer.pubkey() else [payer, current]
    tx = VersionedTransaction(Message.new_with_blockhash([instruction], payer.pubkey(), blockhash), signers)
    client.send_raw(bytes(tx))
    wait_until(lambda: client.get_signature_statuses([str(tx.signatures[0])])[str(tx.signatures[0])] is not None)


def lift_pause() -> None:
    """What waiting out the outage back-off does."""
    MintingControl.objects.filter(id=1).update(chain_retry_at=timezone.now() - timedelta(seconds=1))


def test_a_mint_authority_changed_on_chain_pauses_minting_and_charges_no_reading(
    chain, settings, django_capture_on_commit_callbacks
):
    set_tokenization(settings, max_retry_attempts=3, initial_retry_delay_secs=300)
    client = chain.client()
    authority, stranger = load_keypair(chain.keypair_path), Keypair()
    meter = make_meter()
    make_readings([meter], 3)
    change_mint_authority(client, authority, authority, stranger)

    events = captured_events(f"user.{meter.owner_id}")
    with events as received, django_capture_on_commit_callbacks(execute=True):
        failed = readings_mint_due()
    assert (failed.claimed, failed.retried, failed.minted, failed.stopped) == (3, 3, 0, "chain_platform_fault")
    assert received(f"user.{meter.owner_id}") == []  # nothing for the producer to worry about
    (bad,) = MintBatch.objects.all()
    assert bad.status == "failed" and "authority" in bad.error
    assert {(r.status, r.attempts) for r in all_readings()} == {("pending", 0)}
    control = control_get()
    assert control.chain_error_code == "wrong_authority" and "not the mint authority" in control.chain_error

    change_mint_authority(client, authority, stranger, authority)
    lift_pause()
    assert readings_mint_due().minted == 3
    assert {r.attempts for r in all_readings()} == {0}
    assert control_get().chain_failures == 0
    assert_minted_exactly_once(client, all_readings())


def test_a_fee_payer_without_sol_pauses_minting_before_anything_is_signed(chain, settings):
    client = chain.client()
    authority = load_keypair(chain.keypair_path)
    readings = make_readings([make_meter()], 2)
    sink = Keypair().pubkey()
    drain = client.balance(authority.pubkey()) - 6_000  # leaves less than one fee and one account's rent
    client.execute([transfer(TransferParams(from_pubkey=authority.pubkey(), to_pubkey=sink, lamports=drain))])

    result = readings_mint_due()

    assert (result.claimed, result.stopped) == (0, "chain_unavailable")
    assert MintBatch.objects.count() == 0 and {(r.status, r.attempts) for r in all_readings()} == {("pending", 0)}
    control = control_get()
    assert control.chain_error_code == "insufficient_funds" and "send it SOL" in control.chain_error
    assert control.fee_payer_lamports < 10_000  # the balance that stopped it, for the dashboard and the alert
    client.rpc.call("requestAirdrop", [str(authority.pubkey()), 10**10])
    lift_pause()
    assert readings_mint_due().minted == 2
    assert control_get().fee_payer_lamports > 10**9
    assert_minted_exactly_once(client, readings)


def test_a_closed_token_account_is_created_again_without_using_an_attempt(chain, settings):
    client = chain.client()
    owner = Keypair()
    meter = make_meter(wallet=str(owner.pubkey()))
    client.rpc.call("requestAirdrop", [str(owner.pubkey()), 10**9])
    first = make_readings([meter], 1, kwh="1")
    assert readings_mint_due().minted == 1  # creates the account
    first += make_readings([meter], 1, kwh="1")
    assert readings_mint_due().minted == 1  # finds it: from now on the process knows it exists
    # The owner burns what they hold and closes the account; this process still believes it exists.
    account = client.token_account(owner.pubkey())
    close = [
        burn_checked(BurnCheckedParams(program_id=TOKEN_PROGRAM_ID, mint=client.mint, account=account,
                                        owner=owner.pubkey(), amount=2 * 10**9, decimals=9)),
        close_account(CloseAccountParams(program_id=TOKEN_PROGRAM_ID, account=account, dest=owner.pubkey(),
                                         owner=owner.pubkey())),
    ]  # fmt: skip
    send_as(client, owner, close)
    assert client.account_data(account) is None

    second = make_readings([meter, make_meter()], 4, kwh="1")
    readings_mint_due()
    failed = MintBatch.objects.filter(status="failed").get()
    assert "gone" in failed.error
    assert all(r.attempts == 0 for r in MeterReading.objects.filter(id__in=[r.id for r in second]))
    assert readings_mint_due().minted >= 2  # the retry creates the account again
    rows = MeterReading.objects.filter(id__in=[r.id for r in second])
    assert {(r.status, r.attempts) for r in rows} == {("minted", 0)}
    assert client.token_balance(str(owner.pubkey())) == 2 * 10**9
    assert client.token_supply() == 6 * 10**9 - 2 * 10**9  # six minted, two burnt by their owner
    assert {r.status for r in MeterReading.objects.filter(id__in=[r.id for r in first])} == {"minted"}


def test_a_wallet_the_chain_refuses_is_dead_lettered_without_holding_up_the_others(chain):
    good = make_readings([make_meter() for _ in range(2)], 4)
    bad_meter = make_meter(wallet="not-a-solana-wallet")
    (bad,) = make_readings([bad_meter], 1)

    result = readings_mint_due()

    assert (result.claimed, result.minted, result.dead) == (5, 4, 1)
    bad.refresh_from_db()
    assert (bad.status, bad.attempts, bad.minted) == ("failed", 1, False)
    assert "refused by the chain" in bad.last_error
    assert_minted_exactly_once(chain.client(), good)


def test_a_reading_worth_less_than_one_base_unit_is_dead_lettered_not_minted(chain, settings):
    set_tokenization(settings, kwh_to_token_ratio=Decimal("0.5"))
    (tiny,) = make_readings([make_meter()], 1, kwh="0.000000001")
    assert readings_mint_due().dead == 1
    tiny.refresh_from_db()
    assert (tiny.status, tiny.last_error) == ("failed", ZERO_AMOUNT_ERROR)
    assert chain.client().token_supply() == 0


def test_a_claim_of_only_a_refused_wallet_dead_letters_just_that_reading(chain):
    (bad,) = make_readings([make_meter(wallet="11111111111111111111111111111111")], 1)
    assert readings_mint_due().dead == 1
    bad.refresh_from_db()
    assert bad.status == "failed" and "refused by the chain" in bad.last_error
    assert MintBatch.objects.count() == 0


def test_bytes_the_node_refuses_are_resent_until_they_expire_and_then_minted_anew_without_an_attempt(
    settings, make_localnet, tmp_path
):
    chain = use_chain(settings, make_localnet(slot_ms=50), tmp_path)  # blockhashes live 7.5 s
    readings = make_readings([make_meter()], 2)
    client = chain.client()
    (batch,) = prepare_without_sending(client)
    tampered = bytearray(batch.raw_transaction)
    tampered[65] = 5  # the header now claims 5 signers: the node refuses the bytes as malformed, for good
    MintBatch.objects.filter(id=batch.id).update(raw_transaction=bytes(tampered))
    batch.refresh_from_db()

    settled, in_flight = batches_dispatch(
        client=client, prepared=[Prepared(batch=batch, signed=as_signed(batch))], confirm_timeout=2.5
    )

    assert (settled.minted, [b.id for b in in_flight]) == (0, [batch.id])
    batch.refresh_from_db()
    assert batch.send_attempts >= 2 and batch.error.startswith("refused by the node")
    wait_until(lambda: client.get_block_height() > batch.last_valid_block_height, message="blockhash expiry")
    assert control_get().chain_failures >= 1  # a refusal naming no instruction is the platform's
    assert batches_reconcile(min_age_secs=0).expired == 1
    assert {(r.status, r.attempts) for r in all_readings()} == {("pending", 0)}
    lift_pause()
    assert readings_mint_due().minted == 2
    assert_minted_exactly_once(client, readings)


def test_the_first_cycle_that_reaches_the_chain_again_lifts_the_outage_pause(chain):
    chain_outage_record(RuntimeError("was down"))
    MintingControl.objects.filter(id=1).update(chain_retry_at=timezone.now() - timedelta(seconds=1))
    readings = make_readings([make_meter()], 2)
    assert readings_mint_due().minted == 2
    assert control_get().chain_failures == 0
    assert_minted_exactly_once(chain.client(), readings)


def test_recurring_wallets_are_packed_through_a_lookup_table_and_minted_exactly(chain, settings):
    set_tokenization(settings, batch_size=100)
    meters = [make_meter() for _ in range(40)]
    first = make_readings(meters, 40)
    assert readings_mint_due().minted == 40  # creates the token accounts: legacy create+mint pairs
    second = make_readings(meters, 40, kwh="0.25")

    assert readings_mint_due().minted == 40

    batches = MintBatch.objects.filter(readings__in=second).distinct()
    messages = [VersionedTransaction.from_bytes(bytes(b.raw_transaction)).message for b in batches]
    assert len(messages) == 1 and isinstance(messages[0], MessageV0) and messages[0].address_table_lookups
    assert_minted_exactly_once(chain.client(), first + second)


def test_amounts_are_priced_once_and_a_ratio_change_applies_only_to_readings_not_yet_priced(chain, settings):
    client = chain.client()
    meter = make_meter()
    (early,) = make_readings([meter], 1, kwh="2")
    with transaction.atomic():
        (batch,) = [p.batch for p in batches_prepare(client=client, claimed=claim_due(limit=10))[0]]
    batches_settle(Settlement(expired=[batch.id]))  # released: it must be re-signed
    set_tokenization(settings, kwh_to_token_ratio=Decimal("3"))
    (late,) = make_readings([meter], 1, kwh="2")

    assert readings_mint_due().minted == 2

    early.refresh_from_db()
    late.refresh_from_db()
    assert (early.token_amount, early.token_ratio, early.token_decimals) == (2 * 10**9, Decimal(1), 9)
    assert (late.token_amount, late.token_ratio) == (6 * 10**9, Decimal(3))
    assert client.token_balance(meter.wallet_address) == 8 * 10**9 == client.token_supply()


def test_readings_worth_a_fraction_of_a_base_unit_each_are_minted_together(chain, settings):
    set_tokenization(settings, kwh_to_token_ratio=Decimal("0.5"))
    meter = make_meter()
    tiny = make_readings([meter], 3, kwh="0.000000001")  # half a base unit each

    assert readings_mint_due().minted == 3

    rows = MeterReading.objects.filter(id__in=[r.id for r in tiny])
    assert sorted(r.token_amount for r in rows) == [0, 0, 1]  # 1.5 base units floor to 1, none lost twice
    assert chain.client().token_balance(meter.wallet_address) == 1


def test_a_request_that_cannot_be_built_is_isolated_without_holding_up_the_claim(chain, monkeypatch):
    """A fake: no real input makes the builder raise a non-chain error, but a bug or an odd value might."""
    meters = [make_meter() for _ in range(6)]
    readings = make_readings(meters, 12)
    cursed = meters[4].wallet_address
    client = chain_client()
    real = client.build_mints

    def build(requests, **kwargs):
        if any(r.wallet == cursed for r in requests):
            raise ArithmeticError("odd value")
        return real(requests, **kwargs)

    monkeypatch.setattr(client, "build_mints", build)
    result = readings_mint_due()

    assert (result.minted, result.dead) == (10, 2)
    failed = MeterReading.objects.filter(status="failed")
    assert {r.wallet_address for r in failed} == {cursed}
    assert all("ArithmeticError: odd value" in r.last_error for r in failed)
    assert control_get().chain_failures == 0
    assert_minted_exactly_once(chain.client(), [r for r in readings if r.wallet_address != cursed])
