"""Races between the doors a mint starts from, with real Celery processes, real Redis and the local chain.

An operator's mint-now against a worker draining the same readings, and two beats ticking at once. Each
test ends with the pipeline's proof (every reading minted once, balances and supply equal to the readings'
amounts) and checks that the race did not cost extra transactions.
"""

import math

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from meters.models import MeterReading
from minting.models import MintBatch
from minting.triggers import mint_soon
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    celery_processes_fixture,  # noqa: F401 (the celery_processes fixture)
    make_meter,
    make_readings,
    make_user,
    set_tokenization,
    use_chain,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]
BATCH_SIZE = 10
# What the operator may be told about a reading the worker holds or has minted while the call ran.
WORKER_HAD_IT = {
    "already minted",
    "a mint of this reading is in progress",
    "submitted; confirmation pending (reconciliation will settle it)",
}


@pytest.fixture
def chain(settings, localnet, tmp_path):
    set_tokenization(settings, batch_size=BATCH_SIZE, trigger_debounce_ms=0)
    return use_chain(settings, localnet, tmp_path)


def all_minted(readings) -> bool:
    return set(MeterReading.objects.filter(id__in=[r.id for r in readings]).values_list("status", flat=True)) == {
        "minted"
    }


def operator_client() -> Client:
    token = Token.objects.create(user=make_user(staff=True))
    return Client(HTTP_AUTHORIZATION=f"Bearer {token.key}")


def test_an_operator_mint_now_racing_a_draining_worker_mints_every_reading_once(chain, celery_processes):
    celery_processes(chain=chain)
    operator = operator_client()
    # A cycle on the local chain takes ~60 ms: thirty batches keep the worker draining for a while.
    readings = make_readings([make_meter() for _ in range(4)], 30 * BATCH_SIZE)
    mint_soon(force=True)
    wait_until(MintBatch.objects.exists, interval=0.01, message="the worker draining")  # its first claim committed

    response = operator.post(
        "/api/admin/meters/mint-batch", {"reading_ids": [str(r.id) for r in readings]}, content_type="application/json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["total_readings"] == len(readings)
    assert {r["error"] for r in body["results"] if not r["success"]} <= WORKER_HAD_IT
    wait_until(lambda: all_minted(readings), message="every reading minted")
    assert_minted_exactly_once(chain.client(), readings)
    # The worker's claims hold at most a batch; the operator's one claim took what the worker had not locked.
    sizes = sorted(MintBatch.objects.values_list("reading_count", flat=True))
    assert sizes[0] <= BATCH_SIZE < sizes[-1], sizes
    assert sum(sizes) == len(readings)
    successes = {r["reading_id"]: r["transaction_signature"] for r in body["results"] if r["success"]}
    minted = {str(r.id): r.mint_tx_signature for r in MeterReading.objects.filter(id__in=list(successes))}
    assert minted == successes


def sweeps_sent(beat) -> int:
    return beat.log.read_text(errors="replace").count("Sending due task minting-sweep")


def sweeps_run(worker) -> int:
    log = worker.log.read_text(errors="replace")
    return sum("succeeded" in line for line in log.splitlines() if "minting.tasks.mint_due_readings[" in line)


def test_two_beats_at_once_mint_every_reading_once_in_the_batches_the_readings_need(chain, celery_processes):
    # Two pool processes, so the two beats' ticks really run at the same time.
    worker = celery_processes(
        chain=chain, args=["--pool=prefork", "-c", "2", "-n", "races@%h", "--without-gossip", "--without-mingle"]
    )
    beats = [celery_processes("beat", chain=chain, env={"TOKENIZATION_POLLING_INTERVAL_SECS": "1"}) for _ in "ab"]
    wait_until(lambda: all(sweeps_sent(beat) >= 1 for beat in beats), message="both beats ticking")
    readings = make_readings([make_meter(), make_meter()], 3 * BATCH_SIZE)  # no trigger: the sweeps find them

    wait_until(lambda: all_minted(readings), message="every reading minted by the sweeps")
    done = MintBatch.objects.count()
    sent, run = [sweeps_sent(beat) for beat in beats], sweeps_run(worker)
    wait_until(
        lambda: (
            all(sweeps_sent(b) >= n + 2 for b, n in zip(beats, sent, strict=True)) and sweeps_run(worker) >= run + 2
        ),
        message="more ticks of both beats, run by the worker",
    )

    assert all(n >= 1 for n in sent), [beat.output() for beat in beats]
    assert_minted_exactly_once(chain.client(), readings)
    # Claims take full batches (SKIP LOCKED splits them between concurrent ticks), two wallets fit one
    # transaction, and a tick finding nothing due signs nothing.
    assert done == MintBatch.objects.count() == math.ceil(len(readings) / BATCH_SIZE)
    assert set(MintBatch.objects.values_list("status", "reading_count")) == {("confirmed", BATCH_SIZE)}
