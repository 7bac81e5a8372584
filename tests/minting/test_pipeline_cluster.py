"""The pipeline against a local chain that misbehaves like a real provider's pool (docs/LOCALNET.md, fault
modes), with real Celery workers: lagging replicas, provider error spells, dropped sends, minority forks,
nodes without history.

Every test ends with the same proof: every reading minted exactly once, each wallet's balance the sum of its
readings' token amounts, supply the total, and no reading charged an attempt for the platform's trouble.
"""

import signal

import pytest

from meters.models import MeterReading
from minting.models import MintBatch, MintingControl
from minting.tasks import reconcile_batches
from minting.triggers import mint_soon
from tests.conftest import Localnet
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
# 10 ms slots: a blockhash expires 1.5 s after it is read, so a 250-slot lag (2.5 s) outlasts it.
SLOT_MS = 10


@pytest.fixture(scope="module")
def cluster_localnet(tmp_path_factory):
    """One 10 ms-slot chain for the module: each test still gets its own authority and a fresh mint (use_chain),
    so its supply and balances are its own; the fault plan is cleared after every test. A chain per test cost a
    localnet start-up (~2 s of CPU) each."""
    localnet = Localnet(tmp_path_factory.mktemp("cluster"), slot_ms=SLOT_MS).start()
    yield localnet
    localnet.stop()


@pytest.fixture
def cluster(settings, cluster_localnet, tmp_path):
    set_tokenization(settings, batch_size=10, trigger_debounce_ms=100)
    chain = use_chain(settings, cluster_localnet, tmp_path)
    chain.localnet = cluster_localnet
    yield chain
    cluster_localnet.set_faults({})


def submit(count: int, meters: int = 4) -> list[MeterReading]:
    readings = make_readings([make_meter() for _ in range(meters)], count)
    mint_soon()
    return readings


def minted(readings, *, reconcile: bool = True) -> bool:
    if reconcile:
        reconcile_batches.apply_async()
    return set(MeterReading.objects.filter(id__in=[r.id for r in readings]).values_list("status", flat=True)) == {
        "minted"
    }


def assert_platform_charged_nothing(readings) -> None:
    rows = MeterReading.objects.filter(id__in=[r.id for r in readings])
    assert {row.attempts for row in rows} == {0}


@pytest.mark.parametrize(
    "lag",
    [
        {"slots": 250, "methods": ["getSignatureStatuses"]},  # status reads from a replica 250 slots behind
        {"slots": 250, "every": 2},  # a round-robin pool: every other read of any kind from that replica
    ],
    ids=["statuses-lag", "mixed-pool"],
)
def test_a_lagging_replica_never_makes_a_landed_mint_look_expired(cluster, celery_processes, lag):
    """The 3.6x bug: null statuses from a lagging replica plus a height past the last valid block height
    declared landed batches expired and their readings were signed again."""
    cluster.localnet.set_faults({"lag": lag})
    celery_processes(chain=cluster)
    readings = submit(30)

    wait_until(lambda: minted(readings), interval=1.0, message="every reading minted")

    landed = MintBatch.objects.filter(status="confirmed")
    client = cluster.client()
    cluster.localnet.set_faults({})
    found = client.get_signature_statuses([b.signature for b in MintBatch.objects.all()])
    # No batch that landed was given up on, and none given up on landed.
    for batch in MintBatch.objects.all():
        assert (found[batch.signature] is not None) == (batch.status == "confirmed"), batch.status
    assert landed.exists()
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(client, readings)


@pytest.mark.parametrize(
    ("http", "code"),
    [
        ({"status": 403}, "rpc_unauthorized"),
        ({"status": 429}, "rpc_rate_limited"),
        ({"status": 503}, "rpc_unavailable"),
        ({"status": 200, "body": "<html><body>Bad gateway</body></html>"}, "rpc_bad_response"),
    ],
    ids=["403", "429", "503", "html"],
)
def test_a_provider_error_spell_pauses_minting_and_charges_no_reading(cluster, celery_processes, http, code):
    """HTTP 403 for 30 s used to dead-letter every reading submitted meanwhile (20 of 20)."""
    cluster.localnet.set_faults({"http": http})
    celery_processes(chain=cluster)
    readings = submit(20)
    wait_until(lambda: MintingControl.objects.filter(chain_error_code=code).exists(), message="pause recorded")
    assert not MeterReading.objects.filter(status__in=["failed", "minted"]).exists()

    cluster.localnet.set_faults({})
    celery_processes("beat", chain=cluster, env={"TOKENIZATION_POLLING_INTERVAL_SECS": "1"})
    wait_until(lambda: minted(readings), interval=1.0, message="every reading minted after the spell")

    assert MintingControl.objects.get().chain_failures == 0
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(cluster.client(), readings)


def test_sends_a_node_drops_are_sent_again_and_land_once(cluster, celery_processes):
    cluster.localnet.set_faults({"drop_sends": {"count": 3}})
    celery_processes(chain=cluster)
    readings = submit(30)
    wait_until(lambda: minted(readings), interval=1.0, message="every reading minted")
    assert cluster.localnet.faults()["drop_sends"]["remaining"] == 0  # the drops really happened
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(cluster.client(), readings)


def test_a_mint_seen_on_a_dropped_fork_is_minted_once_on_the_cluster(cluster, celery_processes):
    """Statuses that sit at processed and then vanish: never decided at processed, never doubled."""
    cluster.localnet.set_faults(
        {"fork": {"count": 2, "vanish_after_slots": 20}, "finality": {"confirmed_after": 2, "finalized_after": 32}}
    )
    celery_processes(chain=cluster)
    readings = submit(30)
    wait_until(lambda: minted(readings), interval=1.0, message="every reading minted")
    assert cluster.localnet.faults()["fork"]["remaining"] == 0
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(cluster.client(), readings)


@pytest.mark.parametrize("history", [{"mode": "unavailable"}, {"mode": "gap", "slots": 5}], ids=["none", "pruned"])
def test_an_orphan_is_not_declared_expired_by_a_node_that_cannot_prove_it(cluster, celery_processes, history):
    """A node without (enough) history answers null for any old signature: that is 'not yet', never 'no'."""
    readings = submit(6)
    doomed = celery_processes(chain=cluster, env={"GRIDTOKEN_CRASH_AT": "after_batch_commit"})
    assert doomed.wait_killed() == -signal.SIGKILL, doomed.output()
    orphan = MintBatch.objects.get()
    client = cluster.client()
    wait_until(lambda: client.get_block_height() > orphan.last_valid_block_height, message="blockhash expiry")

    cluster.localnet.set_faults({"history": history})
    celery_processes(chain=cluster)

    def blocked() -> bool:
        reconcile_batches.apply_async()  # reconcile leaves batches younger than 5 s to their worker
        return MintingControl.objects.filter(decisions_blocked_at__isnull=False).exists()

    wait_until(blocked, interval=1.0, message="the blocked decision surfaced")
    orphan.refresh_from_db()
    assert orphan.status == "signed"
    assert set(MeterReading.objects.values_list("status", flat=True)) == {"minting"}
    assert "history_unavailable" in MintingControl.objects.get().decisions_blocked_reason

    cluster.localnet.set_faults({})
    wait_until(lambda: minted(readings), interval=1.0, message="every reading minted by a new transaction")
    orphan.refresh_from_db()
    assert orphan.status == "expired"
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(client, readings)


@pytest.mark.parametrize("point", ["after_batch_commit", "after_send", "while_settling"])
def test_a_worker_killed_while_the_pool_lags_is_finished_exactly_once(cluster, celery_processes, point):
    """The crash matrix again, with every other read served by a replica 250 slots behind."""
    cluster.localnet.set_faults({"lag": {"slots": 250, "every": 2}})
    readings = submit(12)
    doomed = celery_processes(chain=cluster, env={"GRIDTOKEN_CRASH_AT": point})
    assert doomed.wait_killed() == -signal.SIGKILL, doomed.output()
    celery_processes(chain=cluster)
    mint_soon(force=True)
    wait_until(lambda: minted(readings), interval=1.0, message="every reading minted")
    client = cluster.client()
    cluster.localnet.set_faults({})
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(client, readings)
