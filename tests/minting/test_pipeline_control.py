"""Retry policy, the run-time switch, the outage breaker and the debounced trigger (real Redis, no chain)."""

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from meters.models import MeterReading
from minting.chain.keys import create_keypair
from minting.models import MintBatch, MintingControl, TokenMint
from minting.services.automatic import readings_mint_due
from minting.services.control import auto_mint_set, chain_outage_clear, chain_outage_record, chain_paused, control_get
from minting.services.policy import outage_delay, retry_delay
from minting.services.reconciliation import batches_reconcile
from minting.tasks import mint_due_readings, reconcile_batches
from minting.triggers import DEBOUNCE_KEY, mint_soon, mint_soon_on_commit
from tests.conftest import free_port, queued_tasks
from tests.minting.pipeline_harness import make_meter, make_readings, set_tokenization

pytestmark = pytest.mark.django_db


def test_retry_delay_doubles_from_the_initial_delay_and_stops_at_the_cap(settings):
    set_tokenization(settings, initial_retry_delay_secs=300, max_retry_delay_secs=3600)
    assert [retry_delay(n).total_seconds() for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]
    assert retry_delay(10_000) == timedelta(seconds=3600)


def test_retry_delay_uses_exact_decimal_multipliers_rounded_up_to_whole_seconds(settings):
    set_tokenization(settings, initial_retry_delay_secs=10, retry_backoff_multiplier=Decimal("1.5"))
    assert [retry_delay(n).total_seconds() for n in range(1, 5)] == [10, 15, 23, 34]


def test_an_outage_backs_off_exponentially_but_never_longer_than_a_sweep_interval(settings):
    set_tokenization(settings, polling_interval_secs=60, max_retry_delay_secs=3600)
    assert [outage_delay(n).total_seconds() for n in (1, 2, 3, 6, 7, 50)] == [1, 2, 4, 32, 60, 60]
    set_tokenization(settings, polling_interval_secs=600, initial_retry_delay_secs=1, max_retry_delay_secs=5)
    assert outage_delay(20).total_seconds() == 5


def test_the_environment_seeds_the_switch_once_and_the_row_wins_afterwards(settings):
    set_tokenization(settings, auto_mint_enabled=False)
    assert control_get().auto_mint_enabled is False
    auto_mint_set(enabled=True, actor="ops")
    set_tokenization(settings, auto_mint_enabled=False)
    control = control_get()
    assert control.auto_mint_enabled is True
    assert control.updated_by == "ops"
    assert MintingControl.objects.count() == 1


def test_with_auto_mint_off_the_drain_touches_nothing():
    readings = make_readings([make_meter()], 3)
    auto_mint_set(enabled=False, actor="ops")
    result = readings_mint_due()
    assert result.stopped == "auto_mint_disabled"
    assert result.claimed == 0
    assert set(MeterReading.objects.filter(id__in=[r.id for r in readings]).values_list("status", flat=True)) == {
        "pending"
    }


def test_with_a_zero_percent_rollout_the_drain_touches_nothing(settings):
    set_tokenization(settings, auto_mint_percentage=0)
    make_readings([make_meter()], 1)
    assert readings_mint_due().stopped == "rollout_zero"


def unreachable_chain(settings, tmp_path):
    """A configured chain whose RPC refuses connections (a closed port): a real outage, not a fake."""
    keypair = tmp_path / "authority.json"
    authority = create_keypair(keypair)
    closed = f"http://127.0.0.1:{free_port()}"
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=closed, keypair_path=keypair)
    TokenMint.objects.create(
        address=str(authority.pubkey()), decimals=settings.TOKENIZATION.decimals,
        token_program="TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", authority=str(authority.pubkey()),
        rpc_url=settings.CHAIN.rpc_url,
    )  # fmt: skip


def test_an_unreachable_rpc_pauses_automatic_minting_without_using_any_attempt(settings, tmp_path):
    unreachable_chain(settings, tmp_path)
    readings = make_readings([make_meter()], 4)

    first = readings_mint_due()

    assert first.stopped == "chain_unavailable"
    rows = MeterReading.objects.filter(id__in=[r.id for r in readings])
    assert {(r.status, r.attempts, r.batch_id) for r in rows} == {("pending", 0, None)}
    control = control_get()
    assert control.chain_failures == 1
    assert control.chain_retry_at > timezone.now()
    assert "cannot reach" in control.chain_error
    assert readings_mint_due().stopped == "chain_paused"

    MintingControl.objects.filter(id=1).update(chain_retry_at=timezone.now() - timedelta(seconds=1))
    assert readings_mint_due().stopped == "chain_unavailable"
    assert control_get().chain_failures == 2


def test_a_missing_chain_setup_pauses_minting_like_an_outage(settings, tmp_path):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, keypair_path=tmp_path / "missing.json")
    make_readings([make_meter()], 1)
    assert readings_mint_due().stopped == "chain_unavailable"
    assert "chain_init" in control_get().chain_error


def test_clearing_the_breaker_resumes_minting_for_every_worker():
    chain_outage_record(RuntimeError("down"))
    assert chain_paused(control_get())
    chain_outage_clear()
    control = control_get()
    assert (control.chain_failures, control.chain_retry_at, control.chain_error) == (0, None, "")
    assert not chain_paused(control)


# --- the on-submit trigger -----------------------------------------------------------------------------


def test_a_burst_of_a_thousand_triggers_enqueues_one_task(broker, settings):
    set_tokenization(settings, trigger_debounce_ms=2000)
    enqueued = [mint_soon() for _ in range(1000)]
    assert enqueued.count(True) == 1
    assert queued_tasks(broker) == ["minting.tasks.mint_due_readings"]
    assert 0 < broker.pttl(DEBOUNCE_KEY) <= 2000


def test_the_trigger_sends_the_registered_mint_task_by_name(broker):
    assert mint_soon(force=True)
    assert queued_tasks(broker) == [mint_due_readings.name]


def test_a_forced_trigger_enqueues_at_once_whatever_the_window(broker, settings):
    set_tokenization(settings, trigger_debounce_ms=2000)
    assert mint_soon() and mint_soon(force=True) and not mint_soon()
    assert len(queued_tasks(broker)) == 2


def test_without_a_debounce_window_every_trigger_enqueues(broker, settings):
    set_tokenization(settings, trigger_debounce_ms=0)
    assert all(mint_soon() for _ in range(3))
    assert len(queued_tasks(broker)) == 3


def test_a_trigger_that_cannot_reach_redis_is_lost_quietly_for_the_sweep_to_cover(settings):
    set_tokenization(settings, trigger_debounce_ms=200)
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    assert mint_soon() is False


def test_switching_auto_mint_on_triggers_a_mint_after_commit(broker, django_capture_on_commit_callbacks):
    auto_mint_set(enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        auto_mint_set(enabled=True, actor="ops")
    assert queued_tasks(broker) == ["minting.tasks.mint_due_readings"]


def test_the_tasks_are_thin_wrappers_that_report_what_they_did():
    auto_mint_set(enabled=False)
    assert mint_due_readings()["stopped"] == "auto_mint_disabled"
    assert reconcile_batches() == {
        "examined": 0, "confirmed": 0, "failed": 0, "expired": 0, "resent": 0, "minted": 0, "error": "",
    }  # fmt: skip


def test_a_trigger_registered_inside_a_transaction_fires_only_after_commit(broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        mint_soon_on_commit()
    assert queued_tasks(broker) == []
    callbacks[0]()
    assert queued_tasks(broker) == ["minting.tasks.mint_due_readings"]


def test_reconciliation_with_the_chain_unreachable_leaves_batches_for_the_next_run(settings, tmp_path):
    unreachable_chain(settings, tmp_path)
    batch = MintBatch.objects.create(
        signature="never-sent", raw_transaction=b"x", last_valid_block_height=10, mint_address="m",
        created_at=timezone.now() - timedelta(minutes=1),
    )  # fmt: skip
    result = batches_reconcile()
    assert result.examined == 1 and "cannot reach" in result.error
    assert MintBatch.objects.get(id=batch.id).status == "signed"
