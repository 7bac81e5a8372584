"""The state machine's database half: claiming with SKIP LOCKED and settling batches, no chain involved."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from spl.token.constants import TOKEN_PROGRAM_ID

from meters.models import MeterReading
from minting.chain import error_from_transaction_err
from minting.models import MintBatch, MintingControl
from minting.services.chain_view import failure_of
from minting.services.claiming import claim_by_ids, claim_due, readings_link
from minting.services.control import control_get
from minting.services.policy import rollout_bucket, rollout_bucket_sql
from minting.services.settlement import INSTRUCTION_REFUSAL, Failure, Settlement, batches_settle
from tests.conftest import queued_tasks
from tests.minting.pipeline_harness import captured_events, make_meter, make_readings, make_user, set_tokenization

pytestmark = pytest.mark.django_db


def claim(**kwargs):
    with transaction.atomic():
        return claim_due(**kwargs)


def test_claim_takes_due_pending_readings_oldest_due_first_and_nothing_else():
    meter = make_meter()
    now = timezone.now()
    due = make_readings([meter], 3)
    for offset, reading in zip((30, 10, 20), due, strict=True):
        MeterReading.objects.filter(id=reading.id).update(next_attempt_at=now - timedelta(seconds=offset))
    make_readings([meter], 1, next_attempt_at=now + timedelta(hours=1))
    for status in ("minting", "failed", "rejected"):
        make_readings([meter], 1, status=status)

    claimed = claim(limit=10)

    assert [r.id for r in claimed] == [due[0].id, due[2].id, due[1].id]
    assert [r.id for r in claim(limit=2)] == [due[0].id, due[2].id]


@pytest.mark.django_db(transaction=True)
def test_claiming_outside_a_transaction_is_refused_because_the_locks_would_vanish():
    with pytest.raises(RuntimeError):
        claim_due(limit=1)
    with pytest.raises(RuntimeError):
        claim_by_ids(reading_ids=[uuid.uuid4()])


def test_the_due_claim_is_served_by_the_partial_pending_index():
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM meters_meterreading WHERE status = 'pending' AND next_attempt_at <= now()"
            " ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "reading_pending_due_idx" in plan


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_claims_never_share_a_reading():
    meter = make_meter()
    make_readings([meter], 10)
    holding, release = threading.Event(), threading.Event()
    first: list = []

    def other_worker():
        try:
            with transaction.atomic():
                first.extend(claim_due(limit=6))
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    assert holding.wait(30)
    try:
        second = claim(limit=10)
    finally:
        release.set()
        thread.join()
    assert len(first) == 6
    assert len(second) == 4
    assert {r.id for r in first}.isdisjoint({r.id for r in second})


def test_the_rollout_bucket_in_sql_matches_the_python_one():
    ids = [uuid.uuid4() for _ in range(300)]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT u, {rollout_bucket_sql('u')} FROM unnest(%s::uuid[]) AS u", [ids])
        in_sql = dict(cursor.fetchall())
    assert in_sql == {i: rollout_bucket(i) for i in ids}
    assert len(set(in_sql.values())) > 50  # spread over the buckets, not stuck at a few


def test_a_partial_rollout_claims_only_users_inside_the_percentage():
    users = [make_user() for _ in range(40)]
    for user in users:
        make_readings([make_meter(owner=user)], 1)
    claimed = claim(limit=100, rollout_percentage=50)
    inside = {u.id for u in users if rollout_bucket(u.id) < 50}
    assert 0 < len(inside) < 40
    assert {r.user_id for r in claimed} == inside
    assert claim(limit=100, rollout_percentage=0) == []


def test_operators_can_claim_pending_and_failed_readings_but_not_minted_rejected_or_in_flight_ones():
    meter = make_meter()
    later = timezone.now() + timedelta(hours=1)
    pending, backing_off, failed = make_readings([meter], 3)
    MeterReading.objects.filter(id=backing_off.id).update(next_attempt_at=later)
    MeterReading.objects.filter(id=failed.id).update(status="failed")
    others = make_readings([meter], 1, status="rejected") + make_readings([meter], 1, status="minting")
    with transaction.atomic():
        claimed = claim_by_ids(reading_ids=[r.id for r in (pending, backing_off, failed, *others)])
    assert {r.id for r in claimed} == {pending.id, backing_off.id, failed.id}


# --- settling ------------------------------------------------------------------------------------------


def signed_batch(readings, *, amount: int = 1_500_000_000, instruction_wallets=()) -> MintBatch:
    batch = MintBatch.objects.create(
        signature=f"sig-{uuid.uuid4().hex}", raw_transaction=b"not a transaction", last_valid_block_height=100,
        mint_address="mint", reading_count=len(readings), total_token_amount=amount * len(readings),
        instruction_wallets=list(instruction_wallets),
    )  # fmt: skip
    readings_link(links=[(r.id, batch.id, amount, 1, 9) for r in readings])
    return batch


def failure(err, *, wallets=(), created=False) -> Failure:
    """What chain_view makes of an on-chain error: typed as the token program's when it names a mint."""
    programs = [str(TOKEN_PROGRAM_ID)] * 8
    wallet = None
    if isinstance(err, dict) and "InstructionError" in err and err["InstructionError"][0] < len(wallets):
        wallet = wallets[err["InstructionError"][0]]
    error = error_from_transaction_err(err, program_ids=programs)
    return Failure(message=str(error), error=error, wallet=wallet, created_account=created)


def test_confirming_a_batch_mints_its_readings_and_tells_owners_and_operators(django_capture_on_commit_callbacks):
    meter = make_meter()
    readings = make_readings([meter], 3)
    batch = signed_batch(readings)

    events = captured_events(f"user.{meter.owner_id}", "operators")
    with events as received, django_capture_on_commit_callbacks(execute=True):
        result = batches_settle(Settlement(confirmed=[batch.id]))

    assert (result.minted, result.batches) == (3, 1)
    batch.refresh_from_db()
    assert batch.status == "confirmed" and batch.settled_at is not None
    for row in MeterReading.objects.filter(id__in=[r.id for r in readings]):
        assert (row.status, row.minted, row.mint_tx_signature, row.token_amount) == (
            "minted", True, batch.signature, 1_500_000_000,
        )  # fmt: skip
    user_events = received(f"user.{meter.owner_id}")
    assert [e["type"] for e in user_events] == ["tokens_minted"] * 3
    assert {e["reading_id"] for e in user_events} == {str(r.id) for r in readings}
    assert user_events[0]["tokens_minted"] == 1_500_000_000
    assert user_events[0]["meter_serial"] == meter.serial
    operator_types = [e["type"] for e in received("operators")]
    assert operator_types.count("tokens_minted") == 3
    (completed,) = [e for e in received("operators") if e["type"] == "batch_minting_completed"]
    assert (completed["total_readings"], completed["successful_mints"], completed["failed_mints"]) == (3, 3, 0)


def test_settling_a_batch_twice_changes_nothing_the_second_time(django_capture_on_commit_callbacks):
    readings = make_readings([make_meter()], 2)
    batch = signed_batch(readings)
    batches_settle(Settlement(confirmed=[batch.id]))
    with django_capture_on_commit_callbacks() as callbacks:
        again = batches_settle(
            Settlement(confirmed=[batch.id], expired=[batch.id], failed={batch.id: Failure(message="late")})
        )
    assert (again.minted, again.retried, again.dead, again.batches) == (0, 0, 0, 0)
    assert callbacks == []
    assert MintBatch.objects.get(id=batch.id).status == "confirmed"
    assert set(MeterReading.objects.filter(id__in=[r.id for r in readings]).values_list("status", flat=True)) == {
        "minted"
    }


def test_a_batch_that_failed_on_chain_retries_its_readings_with_backoff_and_uses_an_attempt(settings):
    set_tokenization(settings, initial_retry_delay_secs=300, max_retry_attempts=3)
    readings = make_readings([make_meter()], 2)
    batch = signed_batch(readings)
    before = timezone.now()

    result = batches_settle(Settlement(failed={batch.id: Failure(message="the transaction failed: oops")}))

    assert (result.retried, result.dead, result.failed) == (2, 0, 1)
    assert MintBatch.objects.get(id=batch.id).status == "failed"
    for row in MeterReading.objects.filter(id__in=[r.id for r in readings]):
        # The amount stays as priced: a retry mints exactly what the first try would have.
        assert (row.status, row.attempts, row.token_amount, row.minted) == ("pending", 1, 1_500_000_000, False)
        assert row.next_attempt_at >= before + timedelta(seconds=300)
        assert "failed on chain" in row.last_error


def test_the_last_failed_attempt_dead_letters_the_reading_and_says_so(settings, django_capture_on_commit_callbacks):
    set_tokenization(settings, max_retry_attempts=3)
    meter = make_meter()
    (reading,) = make_readings([meter], 1, attempts=2)
    batch = signed_batch([reading])

    with captured_events(f"user.{meter.owner_id}") as received, django_capture_on_commit_callbacks(execute=True):
        result = batches_settle(Settlement(failed={batch.id: Failure(message="boom")}))

    assert result.dead == 1
    reading.refresh_from_db()
    assert (reading.status, reading.attempts) == ("failed", 3)
    (event,) = received(f"user.{meter.owner_id}")
    assert (event["type"], event["final"], event["attempts"]) == ("mint_failed", True, 3)


def test_an_expired_batch_releases_its_readings_at_once_without_using_an_attempt():
    readings = make_readings([make_meter()], 2, attempts=1)
    batch = signed_batch(readings)
    result = batches_settle(Settlement(expired=[batch.id]))
    assert (result.retried, result.dead) == (2, 0)
    assert MintBatch.objects.get(id=batch.id).status == "expired"
    for row in MeterReading.objects.filter(id__in=[r.id for r in readings]):
        assert (row.status, row.attempts, row.token_amount) == ("pending", 1, 1_500_000_000)
        assert row.next_attempt_at <= timezone.now()


def test_an_expired_batch_whose_instruction_the_node_refused_counts_as_a_failed_attempt():
    (reading,) = make_readings([make_meter()], 1)
    batch = signed_batch([reading])
    MintBatch.objects.filter(id=batch.id).update(error=f"{INSTRUCTION_REFUSAL}: instruction 1 failed: InvalidSeeds")
    batches_settle(Settlement(expired=[batch.id]))
    reading.refresh_from_db()
    assert (reading.status, reading.attempts) == ("pending", 1)
    assert "InvalidSeeds" in reading.last_error


def test_an_expired_batch_the_provider_refused_uses_no_attempt():
    (reading,) = make_readings([make_meter()], 1)
    batch = signed_batch([reading])
    MintBatch.objects.filter(id=batch.id).update(error="refused by the node: HTTP 403")
    batches_settle(Settlement(expired=[batch.id]))
    reading.refresh_from_db()
    assert (reading.status, reading.attempts) == ("pending", 0)


def test_an_instruction_that_fails_charges_only_its_wallets_readings(settings):
    set_tokenization(settings, initial_retry_delay_secs=300)
    good, bad = make_meter(), make_meter()
    readings = make_readings([good, bad], 4)
    wallets = [None, good.wallet_address, bad.wallet_address, None]  # budget, mint, mint, memo
    batch = signed_batch(readings, instruction_wallets=wallets)

    frozen = failure({"InstructionError": [2, {"Custom": 17}]}, wallets=wallets)
    result = batches_settle(Settlement(failed={batch.id: frozen}))

    assert (result.retried, result.dead, result.failed, result.platform_failures) == (4, 0, 1, 0)
    rows = MeterReading.objects.filter(id__in=[r.id for r in readings])
    charged = {(row.wallet_address, row.attempts, row.next_attempt_at <= timezone.now()) for row in rows}
    assert charged == {(bad.wallet_address, 1, False), (good.wallet_address, 0, True)}
    assert all("frozen" in row.last_error for row in rows)
    assert control_get().chain_failures == 0


@pytest.mark.parametrize(
    ("err", "code"),
    [
        ({"InstructionError": [1, {"Custom": 4}]}, "wrong_authority"),  # the mint authority was changed
        ({"InstructionError": [1, {"Custom": 14}]}, "supply_overflow"),
        ({"InsufficientFundsForRent": {"account_index": 0}}, "insufficient_funds"),
    ],
)
def test_a_platform_fault_on_chain_charges_no_one_and_pauses_minting(
    err, code, broker, django_capture_on_commit_callbacks
):
    meter = make_meter()
    readings = make_readings([meter], 2)
    batch = signed_batch(readings, instruction_wallets=[None, meter.wallet_address, None])

    with django_capture_on_commit_callbacks(execute=True):
        result = batches_settle(Settlement(failed={batch.id: failure(err, wallets=[None, meter.wallet_address])}))

    assert (result.platform_failures, result.retried) == (1, 2)
    assert {(r.status, r.attempts) for r in MeterReading.objects.filter(id__in=[r.id for r in readings])} == {
        ("pending", 0)
    }
    control = control_get()
    assert control.chain_failures == 1 and control.chain_error_code == code and control.chain_retry_at is not None
    assert queued_tasks(broker) == []  # no mint trigger while paused


def test_a_closed_token_account_is_recreated_for_free_once_then_charged():
    meter = make_meter()
    (reading,) = make_readings([meter], 1)
    wallets = [meter.wallet_address, None]
    gone = failure({"InstructionError": [0, "IncorrectProgramId"]}, wallets=wallets)
    epoch = control_get().accounts_epoch

    batches_settle(Settlement(failed={signed_batch([reading], instruction_wallets=wallets).id: gone}))
    reading.refresh_from_db()
    assert (reading.status, reading.attempts) == ("pending", 0)
    assert MintingControl.objects.get(id=1).accounts_epoch == epoch + 1  # every process forgets its cache

    MeterReading.objects.filter(id=reading.id).update(status="pending")
    batches_settle(Settlement(failed={signed_batch([reading], instruction_wallets=wallets).id: gone}))
    reading.refresh_from_db()
    assert reading.attempts == 1  # the same again: not a vanished account after all


def test_failure_of_names_the_wallet_and_whether_the_transaction_created_its_account():
    batch = MintBatch(
        signature="s", raw_transaction=b"x", last_valid_block_height=1, instruction_wallets=[None, "W", "W", None]
    )
    found = failure_of(batch, {"InstructionError": [2, "IncorrectProgramId"]})
    assert (found.wallet, found.created_account) == ("W", True)
    assert failure_of(batch, {"InstructionError": [9, "IncorrectProgramId"]}).wallet is None
    assert failure_of(batch, "AccountInUse").wallet is None
