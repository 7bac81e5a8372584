"""Transfer, split, claim, withdraw and expire: ranges stay disjoint and complete, a claim is final, and the
certificate tokens on the real local chain follow the registry's active Wh per holder."""

import itertools
import os
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection

from certificates.models import CertificateBundle, ChainOperation, Issuance
from certificates.services.chain import operations_drain
from certificates.services.issuance import certificates_issue_due
from certificates.services.lifecycle import bundle_claim, bundle_transfer, bundle_withdraw, bundles_expire
from gridtoken.exceptions import ApplicationError
from tests.certificates.helpers import HOUR0, add_readings, close_hour, make_device
from tests.certificates.test_chain import active_wh_per_wallet, assert_chain_matches_registry
from tests.factories import UserFactory
from tests.minting.pipeline_harness import use_chain

pytestmark = pytest.mark.django_db

CONSUMED = {"consumption_start": HOUR0, "consumption_end": HOUR0 + timedelta(hours=1)}


def issued_bundle(kwh: str = "1") -> CertificateBundle:
    device = make_device()
    add_readings(device, 0, [kwh])
    close_hour(device, 0)
    certificates_issue_due()
    return CertificateBundle.objects.select_related("holder").get(issuance__device=device)


def live_ranges(issuance: Issuance) -> list[tuple[int, int]]:
    return sorted(issuance.bundles.exclude(status="split").values_list("range_start", "range_end"))


def assert_disjoint_and_complete(issuance: Issuance) -> None:
    ranges = live_ranges(issuance)
    assert ranges[0][0] == issuance.bundle_id_range_start and ranges[-1][1] == issuance.bundle_id_range_end
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges)), ranges


def test_a_split_and_claim_sequence_leaves_the_ranges_disjoint_and_complete_and_a_claim_final():
    bundle = issued_bundle("1")  # ids 1..1000
    buyer, other = UserFactory(), UserFactory()
    sold, kept = bundle_transfer(bundle_id=bundle.id, holder=bundle.holder, recipient=buyer, quantity_wh=300)
    assert (sold.range_start, sold.range_end, sold.holder_id, sold.parent_id) == (1, 300, buyer.id, bundle.id)
    assert kept == CertificateBundle.objects.get(parent=bundle, holder=bundle.holder)
    assert (kept.range_start, kept.range_end, kept.status) == (301, 1000, "active")
    bundle.refresh_from_db()
    assert bundle.status == "split"

    claimed, _ = bundle_claim(bundle_id=sold.id, holder=buyer, beneficiary="Acme GmbH", quantity_wh=100, **CONSUMED)
    assert (claimed.range_start, claimed.range_end, claimed.status, claimed.beneficiary) == (
        1,
        100,
        "claimed",
        "Acme GmbH",
    )
    again, nothing = bundle_transfer(bundle_id=kept.id, holder=bundle.holder, recipient=other)  # whole: 301..1000
    assert nothing is None
    assert (again.range_start, again.range_end, again.parent_id) == (301, 1000, kept.id)
    assert_disjoint_and_complete(bundle.issuance)
    assert live_ranges(bundle.issuance) == [(1, 100), (101, 300), (301, 1000)]

    for action in (
        lambda: bundle_claim(bundle_id=claimed.id, holder=buyer, beneficiary="Someone else", **CONSUMED),
        lambda: bundle_transfer(bundle_id=claimed.id, holder=buyer, recipient=other),
    ):
        with pytest.raises(ApplicationError) as refused:
            action()
        assert (refused.value.code, refused.value.status) == ("bundle_claimed", 409)
    with pytest.raises(ApplicationError) as retired:
        bundle_claim(bundle_id=sold.id, holder=buyer, beneficiary="Acme GmbH", **CONSUMED)  # split: its parts live on
    assert retired.value.code == "bundle_retired"
    with pytest.raises(ApplicationError) as not_yours:
        bundle_claim(bundle_id=again.id, holder=buyer, beneficiary="x", **CONSUMED)
    assert not_yours.value.status == 404
    assert CertificateBundle.objects.filter(status="claimed").count() == 1


def test_withdrawal_needs_a_reason_and_expiry_retires_what_is_past_its_date():
    bundle = issued_bundle("2")
    with pytest.raises(ApplicationError):
        bundle_withdraw(bundle_id=bundle.id, actor="op", reason=" ")
    withdrawn = bundle_withdraw(bundle_id=bundle.id, actor="op", reason="meter found faulty")
    assert (withdrawn.status, withdrawn.reason) == ("withdrawn", "meter found faulty")
    with pytest.raises(ApplicationError) as refused:
        bundle_claim(bundle_id=bundle.id, holder=bundle.holder, beneficiary="x", **CONSUMED)
    assert refused.value.code == "bundle_withdrawn"

    other = issued_bundle("3")
    assert bundles_expire(now=other.issuance.expires_at - timedelta(seconds=1)) == 0
    assert bundles_expire(now=other.issuance.expires_at) == 1
    other.refresh_from_db()
    assert other.status == "expired"
    burns = ChainOperation.objects.filter(kind="burn").values_list("bundle_id", "amount_wh", "burn_from")
    assert set(burns) == {(bundle.id, 2000, bundle.holder_wallet), (other.id, 3000, other.holder_wallet)}


@pytest.mark.django_db(transaction=True)
def test_two_racing_claims_of_one_bundle_let_exactly_one_through():
    bundle = issued_bundle("1")
    barrier = threading.Barrier(4)
    outcomes = []

    def claim(name):
        try:
            barrier.wait()
            bundle_claim(bundle_id=bundle.id, holder=bundle.holder, beneficiary=name, **CONSUMED)
            outcomes.append("ok")
        except ApplicationError as error:
            outcomes.append(error.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(f"buyer {i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["bundle_claimed"] * 3 + ["ok"]
    assert ChainOperation.objects.filter(kind="burn").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_on_chain_certificate_balances_follow_every_step_of_the_lifecycle(settings, localnet, tmp_path):
    use_chain(settings, localnet, tmp_path)
    call_command("certificates_chain_init", "--new-mint", stdout=open(os.devnull, "w"))  # noqa: SIM115
    first, second = issued_bundle("1.5"), issued_bundle("0.75")
    operations_drain()
    assert_chain_matches_registry()

    buyer = UserFactory()
    sold, _ = bundle_transfer(bundle_id=first.id, holder=first.holder, recipient=buyer, quantity_wh=600)
    bundle_claim(bundle_id=sold.id, holder=buyer, beneficiary="Acme GmbH", quantity_wh=250, **CONSUMED)
    bundle_withdraw(bundle_id=second.id, actor="op", reason="registry correction")
    # Queued behind the transfer (same issuance): the claim's burn cannot land before the buyer's mint.
    assert operations_drain().claimed == 2
    assert operations_drain().claimed == 1
    assert_chain_matches_registry()
    assert active_wh_per_wallet() == {first.holder_wallet: 900, buyer.wallet_address: 350}
    assert ChainOperation.objects.filter(status="confirmed").count() == 5
