"""Matching end to end: readings through the ingestion door, production minted and certified on the local
chain, two days of consumption matched hour by hour, with a held and a late reading.

The proofs: every hour matched once, no Wh claimed twice, the 24/7 score equal to a recomputation from the raw
readings and the claimed bundles, the certificate mint's supply and every holder's balance equal to the
registry's active Wh.
"""

import itertools
from collections import defaultdict
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from certificates.models import CertificateBundle, ChainOperation, Issuance
from certificates.services.chain import operations_drain
from certificates.services.issuance import certificates_issue_due
from gridtoken.events import user_group
from matching.models import Adjustment, ConsumerHour, GridZone, Match, MatchHour
from matching.selectors import consumer_period, hour_bundles
from matching.services.matcher import matching_run
from meters.models import MeterReading
from meters.selectors import Caller
from meters.services.batch import reading_submit
from meters.services.holds import readings_approve
from meters.validation import parse_reading
from minting.services.automatic import readings_mint_due
from tests.certificates.helpers import make_device
from tests.certificates.test_chain import assert_chain_matches_registry
from tests.matching.helpers import ZONE, make_consumer, offer
from tests.minting.pipeline_harness import captured_events, set_tokenization, use_chain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
HOURS = 50  # two days and the hours that close them
SUN = range(6, 18)


def submit(meter, moment, **fields) -> MeterReading:
    now = timezone.now()
    body = {"meter_serial": meter.serial, "reading_timestamp": moment.isoformat(), **fields}
    item = parse_reading(body, kwh_key="kwh_amount", timestamp_key="reading_timestamp", timestamp_required=True,
                         now=now)  # fmt: skip
    assert item.error is None, item.error
    return reading_submit(caller=Caller(user_id=meter.owner_id, scope="user"), item=item, now=now).reading


def consumption(hour: int, meter: int) -> Decimal:
    return Decimal("0.123456789") * (hour % 5 + 1) + Decimal("0.05") * meter


def recomputed_score(consumer, start, end) -> Decimal:
    """The 24/7 score from the raw readings and the claimed bundles alone (not matching's records)."""
    meters = list(consumer.demand_meters.values_list("meter_id", flat=True))
    demand: dict = defaultdict(Decimal)
    readings = MeterReading.objects.filter(meter_id__in=meters, reading_timestamp__gte=start, reading_timestamp__lt=end)
    for reading in readings.exclude(status="rejected").exclude(source="window"):
        consumed = reading.consumed_kwh if reading.consumed_kwh is not None else max(-reading.kwh_amount, Decimal(0))
        demand[reading.reading_timestamp.replace(minute=0, second=0, microsecond=0)] += consumed * 1000
    matched: dict = defaultdict(int)
    for bundle in CertificateBundle.objects.filter(status="claimed", beneficiary=consumer.name):
        assert bundle.consumption_end - bundle.consumption_start == timedelta(hours=1)
        matched[bundle.consumption_start] += bundle.quantity_wh
    assert set(matched) <= set(demand)
    return sum(min(Decimal(matched[h]), d) for h, d in demand.items()) / sum(demand.values())


def drain_chain() -> None:
    for _ in range(30):
        operations_drain()
        if not ChainOperation.objects.exclude(status="confirmed").exists():
            return
    pytest.fail("certificate operations still pending")


def test_two_days_of_consumption_match_exactly_once_with_the_score_and_the_chain_equal_to_the_readings(
    settings, localnet, tmp_path
):
    use_chain(settings, localnet, tmp_path)
    call_command("certificates_chain_init", "--new-mint", stdout=open("/dev/null", "w"))  # noqa: SIM115
    set_tokenization(settings, duplicate_window_secs=0)
    base = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS + 1)

    ppa_plant, shared_plant = make_device(capacity_kw="10"), make_device(capacity_kw="10")
    first = make_consumer(meters=2, match_from=base)
    second = make_consumer(meters=2, match_from=base)
    offer(ppa_plant, consumer=first, share="0.5")
    offer(ppa_plant, share="0.5")
    offer(shared_plant, share="1")
    for hour in range(HOURS):
        start = base + timedelta(hours=hour)
        for index, plant in enumerate((ppa_plant, shared_plant)):
            kwh = Decimal("0.3") * (index + 1) if hour % 24 in SUN else Decimal(0)
            for minute in (15, 45):
                submit(plant.meter, start + timedelta(minutes=minute), kwh_amount=kwh, energy_generated=kwh,
                       energy_consumed=Decimal(0))  # fmt: skip
        for consumer in (first, second):
            for index, link in enumerate(consumer.demand_meters.order_by("id")):
                for minute in (10, 40):
                    kwh = consumption(hour, index)
                    extra = {"quality": "bad"} if (consumer, hour, index, minute) == (first, 30, 0, 10) else {}
                    submit(link.meter, start + timedelta(minutes=minute), kwh_amount=-kwh, energy_generated=Decimal(0),
                           energy_consumed=kwh, **extra)  # fmt: skip
    held = MeterReading.objects.get(status="held")
    readings_mint_due()
    assert not MeterReading.objects.filter(status__in=["pending", "minting"]).exists()
    certificates_issue_due()
    zone = GridZone.objects.get(code=ZONE)

    # The held consumption reading in hour 30 holds that hour and the later ones.
    matching_run()
    zone.refresh_from_db()
    assert zone.matched_through == base + timedelta(hours=30)
    readings_approve(reading_ids=[held.id])
    with captured_events(user_group(first.user_id)) as received:
        matching_run()
        live = [e for e in received(user_group(first.user_id)) if e["type"] == "hour_matched"]
    assert len(live) == HOURS - 1 - 30 and {e["consumer_id"] for e in live} == {str(first.id)}
    zone.refresh_from_db()
    assert zone.matched_through == base + timedelta(hours=HOURS - 1)  # the last hour is not complete yet
    assert MatchHour.objects.count() == HOURS - 1
    assert ConsumerHour.objects.count() == 2 * (HOURS - 1)

    # A late reading for a matched hour: an adjustment, the match unchanged.
    late_hour = base + timedelta(hours=10)
    before = ConsumerHour.objects.get(consumer=second, hour=late_hour)
    submit(second.demand_meters.first().meter, late_hour + timedelta(minutes=55), kwh_amount=Decimal("-0.25"),
           energy_generated=Decimal(0), energy_consumed=Decimal("0.25"))  # fmt: skip
    assert matching_run().adjustments == 1
    after = ConsumerHour.objects.get(id=before.id)
    assert after.current_demand_wh == before.demand_wh + 250 and after.matched_wh == before.matched_wh
    assert Adjustment.objects.get().consumer_hour_id == before.id

    drain_chain()
    assert_chain_matches_registry()

    # No Wh claimed twice: per issuance the claimed ranges are disjoint, and each backs one match.
    claimed = list(CertificateBundle.objects.filter(status="claimed").order_by("issuance_id", "range_start"))
    for issuance_id in {b.issuance_id for b in claimed}:
        ranges = [(b.range_start, b.range_end) for b in claimed if b.issuance_id == issuance_id]
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))
        assert ranges[-1][1] <= Issuance.objects.get(id=issuance_id).bundle_id_range_end
    assert Match.objects.count() == len(claimed)
    assert sum(m.quantity_wh for m in Match.objects.all()) == sum(b.quantity_wh for b in claimed)
    assert sum(h.matched_wh for h in ConsumerHour.objects.all()) == sum(b.quantity_wh for b in claimed)

    # Night hours match nothing; the first consumer's PPA covers it before the pool; the score is the readings'.
    end = zone.matched_through
    for consumer in (first, second):
        report = consumer_period(consumer=consumer, start=base, end=end)
        assert report.score == recomputed_score(consumer, base, end)
        assert 0 < report.score < 1 and report.unmatched_hours
        behind = hour_bundles(consumer=consumer, start=base, end=end)
        assert sum(m.quantity_wh for matches in behind.values() for m in matches) == report.matched_wh
    night = [h for h in ConsumerHour.objects.all() if (h.hour - base) // timedelta(hours=1) % 24 not in SUN]
    assert night and all(h.matched_wh == 0 for h in night)
    assert ConsumerHour.objects.filter(consumer=first, bilateral_wh__gt=0).exists()
    assert not ConsumerHour.objects.filter(consumer=second, bilateral_wh__gt=0).exists()
