"""A reading whose mint raises an exception nobody expected costs that reading an attempt, never the others'
mints, and is never retried forever. Against the local chain, in this process.

The error is injected by wrapping the real pricing step for one reading: no real input triggers an unknown
bug, and pricing runs after the claim and before the commit, outside the builder's own isolation.
"""

import logging

import pytest
from django.utils import timezone

from gridtoken import observability
from meters.models import MeterReading
from minting.services import batching
from minting.services.automatic import readings_mint_due
from minting.services.control import control_get
from tests.factories import UserFactory
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    captured_events,
    make_meter,
    make_readings,
    set_tokenization,
    use_chain,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(settings, localnet, tmp_path):
    return use_chain(settings, localnet, tmp_path)


@pytest.fixture
def poisoned(monkeypatch):
    """Pricing raises for the readings put in the returned set, as a bug would; it prices the rest for real."""
    ids: set = set()
    real = batching.readings_price

    def price(claimed):
        if any(reading.id in ids for reading in claimed):
            raise ArithmeticError("a bug nobody saw coming")
        return real(claimed)

    monkeypatch.setattr(batching, "readings_price", price)
    return ids


def test_an_unexpected_error_for_one_reading_costs_it_an_attempt_and_every_other_reading_is_minted(
    chain, poisoned, mint_internal_errors_counter, caplog
):
    readings = make_readings([make_meter() for _ in range(6)], 12)
    bad = readings[7]
    poisoned.add(bad.id)

    with caplog.at_level(logging.ERROR, logger="minting.batching"):
        result = readings_mint_due()

    assert (result.minted, result.retried, result.dead) == (11, 1, 0)
    bad.refresh_from_db()
    assert (bad.status, bad.attempts, bad.minted, bad.batch_id) == ("pending", 1, False, None)
    assert bad.last_error == "internal_error: ArithmeticError: a bug nobody saw coming"
    assert bad.next_attempt_at > timezone.now()
    assert_minted_exactly_once(chain.client(), [r for r in readings if r.id != bad.id])
    assert control_get().chain_failures == 0  # the platform is fine: no outage pause
    [logged] = [r for r in caplog.records if r.getMessage() == "a reading's mint raised an unexpected error"]
    assert logged.exc_info is not None and logged.reading_id == str(bad.id)
    assert observability.mint_internal_error_count() == 1


def test_a_reading_that_keeps_failing_unexpectedly_is_failed_after_its_last_attempt_and_surfaced(
    chain, poisoned, mint_internal_errors_counter, settings, client, django_capture_on_commit_callbacks
):
    set_tokenization(settings, max_retry_attempts=3)
    meter = make_meter()
    (bad,) = make_readings([meter], 1, attempts=2)
    poisoned.add(bad.id)
    others = make_readings([make_meter()], 3)

    group = f"user.{meter.owner_id}"
    with captured_events(group) as received, django_capture_on_commit_callbacks(execute=True):
        result = readings_mint_due()

    assert (result.minted, result.dead) == (3, 1)
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("failed", 3)
    assert bad.last_error.startswith("internal_error: ")
    assert [(e["reading_id"], e["final"], e["attempts"]) for e in received(group) if e["type"] == "mint_failed"] == [
        (str(bad.id), True, 3)
    ]
    assert_minted_exactly_once(chain.client(), others)
    assert readings_mint_due().claimed == 0  # never claimed again by itself

    client.force_login(UserFactory(is_staff=True))
    unminted = client.get("/api/admin/meters/unminted").json()
    assert [(r["id"], r["status"]) for r in unminted if r["id"] == str(bad.id)] == [(str(bad.id), "failed")]
    poisoned.clear()  # the bug is fixed: the operator retries and it mints
    assert client.post("/api/admin/meters/retry-failed", {}, content_type="application/json").json()["retried"] == 1
    assert readings_mint_due().minted == 1
    bad.refresh_from_db()
    assert bad.status == "minted"


def test_a_reading_charged_for_an_internal_error_waits_its_back_off_and_does_not_block_later_readings(
    chain, poisoned, mint_internal_errors_counter
):
    (bad,) = make_readings([make_meter()], 1)
    poisoned.add(bad.id)
    readings_mint_due()
    later = make_readings([make_meter()], 4)

    result = readings_mint_due()

    assert (result.claimed, result.minted) == (4, 4)
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("pending", 1)
    assert MeterReading.objects.filter(status="minted").count() == 4
    assert_minted_exactly_once(chain.client(), later)
