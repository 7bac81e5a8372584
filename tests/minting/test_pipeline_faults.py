"""Fault injection with real Celery worker processes, real Redis and the local chain.

Each test breaks the pipeline at one point (SIGKILL at a crash point, the RPC gone, a duplicated message,
two workers racing, the broker flushed) and ends with the same proof: every reading minted exactly once,
each wallet's balance the sum of its readings' token amounts, the mint's supply the total.
"""

import signal

import pytest
import redis
from django.conf import settings as django_settings

from meters.models import MeterReading
from minting.models import MintBatch, MintingControl
from minting.tasks import mint_due_readings, reconcile_batches
from minting.triggers import mint_soon
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    celery_processes_fixture,  # noqa: F401 (the celery_processes fixture)
    make_meter,
    make_readings,
    set_tokenization,
    use_chain,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
KILLED = -signal.SIGKILL


@pytest.fixture
def chain(settings, localnet, tmp_path):
    set_tokenization(settings, batch_size=10, trigger_debounce_ms=100)
    return use_chain(settings, localnet, tmp_path)


def submit(count: int, meters: int = 4) -> list[MeterReading]:
    """Readings committed, then the on-submit trigger, as the ingestion service does."""
    readings = make_readings([make_meter() for _ in range(meters)], count)
    mint_soon()
    return readings


def statuses(readings) -> set[str]:
    return set(MeterReading.objects.filter(id__in=[r.id for r in readings]).values_list("status", flat=True))


def all_minted(readings, *, poke=None) -> bool:
    if poke is not None:
        poke()
    return statuses(readings) == {"minted"}


def reconcile_now() -> None:
    reconcile_batches.apply_async()


@pytest.mark.parametrize("point", ["after_build", "after_batch_commit", "after_send", "while_settling"])
def test_a_worker_killed_at_any_step_is_finished_by_a_fresh_worker_exactly_once(chain, celery_processes, point):
    readings = submit(12)
    doomed = celery_processes(chain=chain, env={"GRIDTOKEN_CRASH_AT": point})
    assert doomed.wait_killed() == KILLED, doomed.output()

    batches = list(MintBatch.objects.all())
    if point == "after_build":
        assert batches == [] and statuses(readings) == {"pending"}  # rolled back: nothing was committed
    else:
        assert [b.status for b in batches] == ["signed"] and statuses(readings) <= {"minting", "pending"}
        landed = chain.client().get_signature_statuses([batches[0].signature])[batches[0].signature]
        assert (landed is not None) == (point in ("after_send", "while_settling"))

    celery_processes(chain=chain)
    mint_soon(force=True)  # what the next submission or sweep would do
    wait_until(lambda: all_minted(readings, poke=reconcile_now), interval=2.0, message="every reading minted")

    if point != "after_build":
        # The orphaned transaction was settled, never replaced by a second one for the same readings.
        assert MintBatch.objects.get(id=batches[0].id).status == "confirmed"
    assert_minted_exactly_once(chain.client(), readings)


def test_an_orphan_never_sent_expires_and_its_readings_are_minted_by_a_new_transaction(
    settings, make_localnet, tmp_path, celery_processes
):
    set_tokenization(settings, batch_size=50, trigger_debounce_ms=100)
    chain = use_chain(settings, make_localnet(slot_ms=10), tmp_path)
    readings = submit(6)
    doomed = celery_processes(chain=chain, env={"GRIDTOKEN_CRASH_AT": "after_batch_commit"})
    assert doomed.wait_killed() == KILLED, doomed.output()
    orphan = MintBatch.objects.get()
    client = chain.client()
    wait_until(lambda: client.get_block_height() > orphan.last_valid_block_height, message="blockhash expiry")

    celery_processes(chain=chain)
    wait_until(lambda: all_minted(readings, poke=reconcile_now), interval=2.0, message="every reading minted")

    orphan.refresh_from_db()
    assert orphan.status == "expired"
    assert client.get_signature_statuses([orphan.signature])[orphan.signature] is None
    assert {r.attempts for r in MeterReading.objects.all()} == {0}
    assert_minted_exactly_once(client, readings)


def test_readings_submitted_while_the_rpc_is_down_are_minted_once_it_is_back_without_using_attempts(
    settings, make_localnet, tmp_path, celery_processes
):
    set_tokenization(settings, batch_size=10, trigger_debounce_ms=100)
    localnet = make_localnet()
    chain = use_chain(settings, localnet, tmp_path)
    celery_processes(chain=chain)
    localnet.stop()

    readings = submit(15)
    wait_until(lambda: MintingControl.objects.filter(chain_failures__gte=1).exists(), message="outage noticed")
    assert statuses(readings) == {"pending"}

    localnet.start()  # same port, same ledger: the mint is still there
    celery_processes("beat", chain=chain, env={"TOKENIZATION_POLLING_INTERVAL_SECS": "1"})
    wait_until(lambda: all_minted(readings), message="every reading minted after the outage")

    assert {r.attempts for r in MeterReading.objects.all()} == {0}
    assert MintingControl.objects.get().chain_failures == 0
    assert_minted_exactly_once(chain.client(), readings)


def test_the_same_task_delivered_twice_mints_once(chain, celery_processes):
    readings = make_readings([make_meter() for _ in range(5)], 40)
    for _ in range(2):  # one message id, delivered twice (as after a broker redelivery)
        mint_due_readings.apply_async(task_id="the-same-delivery")
        reconcile_batches.apply_async(task_id="the-same-reconcile")
    celery_processes(chain=chain, args=["--pool=prefork", "-c", "2", "-n", "prefork@%h", "--without-gossip"])
    wait_until(lambda: all_minted(readings), message="every reading minted")
    mint_due_readings.apply_async(task_id="the-same-delivery")
    assert_minted_exactly_once(chain.client(), readings)


def test_two_workers_racing_over_the_same_readings_mint_each_once(chain, settings, celery_processes):
    set_tokenization(settings, trigger_debounce_ms=0)
    first, second = celery_processes(chain=chain), celery_processes(chain=chain)
    readings = make_readings([make_meter() for _ in range(12)], 150)
    for _ in range(40):
        mint_soon()
    wait_until(lambda: all_minted(readings), message="every reading minted")
    assert MintBatch.objects.count() >= 15
    assert not first.exited() and not second.exited()
    assert_minted_exactly_once(chain.client(), readings)


def test_a_flushed_broker_loses_only_messages_and_the_sweep_mints_everything(chain, celery_processes):
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    readings = submit(30)
    assert broker.llen("celery") == 1
    broker.flushdb()  # the trigger's message and its debounce marker are gone
    assert broker.dbsize() == 0

    celery_processes(chain=chain)
    celery_processes("beat", chain=chain, env={"TOKENIZATION_POLLING_INTERVAL_SECS": "1"})
    more = submit(30)
    broker.flushdb()  # again, while the worker and beat are running
    wait_until(lambda: all_minted(readings + more), message="every reading minted by the sweep")
    assert_minted_exactly_once(chain.client(), readings + more)
