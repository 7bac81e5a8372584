"""A zone-hour costs the same number of statements whatever its number of consumers and claims."""

import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from certificates.models import CertificateBundle, ChainOperation
from matching.models import ConsumerHour, Match
from matching.services.matcher import zone_match_due
from tests.matching.helpers import after, consume, make_consumer, offer, producing_device

pytestmark = pytest.mark.django_db
FIFTY = "10YFR-RTE------C"


def zone_hour(zone: str, consumers: int) -> tuple[int, int]:
    """Match hour 0 of ``zone`` with ``consumers`` consumers of 1,000 Wh each: the first has a whole 400 Wh
    bundle (bilateral), the pool's 60 kWh bundle is split for each in turn. (statements, claims)"""
    people = [make_consumer(zone=zone) for _ in range(consumers)]
    for consumer in people:
        consume(consumer, 0, ["0.25", "0.25", "0.25", "0.25"])
    offer(producing_device({0: "0.4"}, zone=zone), consumer=people[0], share="1")
    offer(producing_device({0: "60"}, zone=zone), share="1")
    with CaptureQueriesContext(connection) as queries:
        result = zone_match_due(zone_code=zone, now=after(3), limit=1)
    assert (result.hours, result.consumer_hours, result.matched_wh) == (1, consumers, 1000 * consumers)
    claims = Match.objects.filter(consumer_hour__consumer__in=people).count()
    return len(queries), claims


def test_a_zone_hour_takes_as_many_statements_for_fifty_consumers_as_for_one():
    one, one_claims = zone_hour("10YDE-VE-------2", 1)
    fifty, fifty_claims = zone_hour(FIFTY, 50)
    assert (one_claims, fifty_claims) == (2, 51)
    assert fifty == one, f"{one} statements for one consumer, {fifty} for fifty"

    # Every claim is whole (its bundle's Wh, one burn each) and the pool's range is claimed exactly once.
    matches = Match.objects.select_related("bundle")
    assert all(m.bundle.status == "claimed" and m.bundle.quantity_wh == m.quantity_wh for m in matches)
    assert ChainOperation.objects.filter(kind="burn").count() == 53
    assert sum(h.matched_wh for h in ConsumerHour.objects.all()) == sum(m.quantity_wh for m in matches) == 51_000
    pool = CertificateBundle.objects.filter(issuance__quantity_wh=60_000, issuance__device__grid_zone=FIFTY)
    live = pool.exclude(status="split").order_by("range_start")
    assert [b.status for b in live] == ["claimed"] * 50 + ["active"]
    assert all(a.range_end + 1 == b.range_start for a, b in itertools.pairwise(live))
