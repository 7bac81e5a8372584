"""Many claims at once (``bundles_claim``): the lineage one claim at a time would leave, all or nothing."""

from datetime import timedelta

import pytest

from certificates.models import CertificateBundle, ChainOperation
from certificates.services.lifecycle import Claim, bundles_claim
from gridtoken.exceptions import ApplicationError
from tests.certificates.helpers import HOUR0
from tests.certificates.test_lifecycle import assert_disjoint_and_complete, issued_bundle

pytestmark = pytest.mark.django_db
END = HOUR0 + timedelta(hours=1)


def test_claims_on_one_bundle_take_its_range_in_turn_and_a_refusal_undoes_them_all():
    bundle, whole = issued_bundle("1"), issued_bundle("0.5")  # ids 1..1000 and 1..500
    holder = bundle.holder
    with pytest.raises(ApplicationError) as refused:  # the third claims a range the second claimed
        bundles_claim([Claim(bundle.id, holder, "A", HOUR0, END, 300), Claim(bundle.id, holder, "B", HOUR0, END, 700),
                       Claim(bundle.id, holder, "C", HOUR0, END, 1)])  # fmt: skip
    assert refused.value.code == "bundle_claimed"
    assert CertificateBundle.objects.filter(issuance=bundle.issuance).get().status == "active"
    assert not ChainOperation.objects.filter(kind="burn").exists()
    with pytest.raises(ApplicationError) as refused:  # not the holder's: nothing else is claimed either
        bundles_claim([Claim(whole.id, whole.holder, "A", HOUR0, END), Claim(bundle.id, whole.holder, "A", HOUR0, END)])
    assert refused.value.code == "bundle_not_found" and not ChainOperation.objects.filter(kind="burn").exists()

    outcomes = bundles_claim([Claim(bundle.id, holder, "A", HOUR0, END, 300),
                              Claim(whole.id, whole.holder, "W", HOUR0, END),
                              Claim(bundle.id, holder, "B", HOUR0, END, 600)])  # fmt: skip
    (a, rest), (w, nothing), (b, left) = outcomes
    assert (a.range_start, a.range_end, a.beneficiary, a.parent_id) == (1, 300, "A", bundle.id)
    assert (b.range_start, b.range_end, b.beneficiary, b.parent_id) == (301, 900, "B", rest.id)
    assert (w.id, w.status, w.beneficiary, nothing) == (whole.id, "claimed", "W", None)
    assert (left.range_start, left.range_end, left.status) == (901, 1000, "active")
    assert CertificateBundle.objects.get(id=rest.id).status == "split"  # the first claim's rest, split by the second
    assert_disjoint_and_complete(bundle.issuance)
    burns = ChainOperation.objects.filter(kind="burn")
    assert sorted((o.bundle_id, o.amount_wh) for o in burns) == sorted([(a.id, 300), (w.id, 500), (b.id, 600)])
    assert a.retired_at < w.retired_at < b.retired_at  # each claim its own moment, in order
