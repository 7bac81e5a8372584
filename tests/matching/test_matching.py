"""Matching: each settled (zone, hour) once, bilateral first then pool, whole Wh claimed for the consumer."""

import os
import signal
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from certificates.models import CertificateBundle, ChainOperation
from certificates.services.issuance import certificates_issue_due
from gridtoken.exceptions import ApplicationError
from matching.models import Adjustment, Allocation, ConsumerHour, GridZone, Match, MatchHour, SupplyHour
from matching.services.consumers import consumer_set_cross_zone
from matching.services.demand import match_hour_id
from matching.services.matcher import matching_run
from meters.models import MeterReading
from tests.certificates.helpers import HOUR0, add_readings
from tests.conftest import concurrently, database_url
from tests.factories import UserFactory
from tests.matching.helpers import after, consume, make_consumer, offer, producing_device

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_bilateral_supply_is_claimed_first_then_the_pool_for_the_consumer_and_the_hour():
    consumer = make_consumer()
    consume(consumer, 0, ["0.5", "0.5", "0.5", "0.5004"])  # 2000.4 Wh: 2000 matchable
    ppa, pooled = producing_device({0: "1.2"}), producing_device({0: "3"})
    offer(ppa, consumer=consumer, share="0.5")  # 600 Wh of 1200
    offer(pooled, share="1")
    result = matching_run(now=after(3))
    assert (result.hours, result.consumer_hours, result.matched_wh) == (1, 1, 2000)

    hour = ConsumerHour.objects.get()
    assert (hour.demand_wh, hour.matched_wh, hour.bilateral_wh, hour.pool_wh) == (Decimal("2000.4"), 2000, 600, 1400)
    assert hour.unmatched_wh == Decimal("0.4")
    claimed = CertificateBundle.objects.filter(status="claimed").order_by("created_at")
    assert [(b.issuance.device_id, b.quantity_wh) for b in claimed] == [(ppa.id, 600), (pooled.id, 1400)]
    assert all(b.beneficiary == consumer.name and b.consumption_start == HOUR0 and b.consumption_end == after(1)
               for b in claimed)  # fmt: skip
    assert {m.bundle_id for m in Match.objects.all()} == {b.id for b in claimed}
    assert ChainOperation.objects.filter(kind="burn").count() == 2
    supply = {s.device_id: (s.issued_wh, s.matched_wh, s.unallocated_wh) for s in SupplyHour.objects.all()}
    assert supply == {ppa.id: (1200, 600, 600), pooled.id: (3000, 1400, 1600)}
    assert MatchHour.objects.get(hour=HOUR0).supply_wh == 4200

    assert matching_run(now=after(30)).matched_wh == 0  # the hour is never matched again
    assert ConsumerHour.objects.count() == 1 and Match.objects.count() == 2


def test_an_hour_is_matched_only_once_settled_and_a_held_reading_holds_it_and_the_later_hours():
    consumer = make_consumer()
    consume(consumer, 0, ["1"])
    held = consume(consumer, 1, ["1"], status="held")
    consume(consumer, 2, ["1"])
    device = producing_device({0: "5", 1: "5", 2: "5"})
    offer(device, share="1")
    assert matching_run(now=after(1.5)).hours == 0  # hour 0 ended, but not MATCHING_SETTLE_SECS ago
    assert matching_run(now=after(4)).hours == 1  # hour 1 has a held reading: it and hour 2 wait
    MeterReading.objects.filter(id=held[0].id).update(status="recorded")
    assert matching_run(now=after(4)).hours == 2
    assert list(ConsumerHour.objects.values_list("matched_wh", flat=True)) == [1000, 1000, 1000]


def test_an_hour_waits_for_the_issuance_of_a_device_it_draws_from():
    consumer = make_consumer()
    for hour in range(3):
        consume(consumer, hour, ["1"])
    device = producing_device({0: "5"})  # issued through hour 1
    offer(device, consumer=consumer, share="1")
    offer(producing_device({5: "1"}), share="1")  # nothing in hours 0-2: never waited for
    add_readings(device, 2, ["2"])  # hour 2's readings are not issued yet
    assert matching_run(now=after(6)).hours == 2
    assert not MatchHour.objects.filter(hour=after(2)).exists()
    certificates_issue_due(now=timezone.now() + timedelta(hours=2))
    assert matching_run(now=after(6)).hours == 1  # hours 3 and 4 are quiet: passed without a record
    assert ConsumerHour.objects.get(hour=after(2)).bilateral_wh == 1000


def test_a_pool_is_shared_in_consumer_order_and_other_zones_only_with_the_operators_flag():
    first, second = make_consumer(), make_consumer()
    elsewhere = make_consumer(zone="10YFR-RTE------C")
    for consumer in (first, second, elsewhere):
        consume(consumer, 0, ["1"])
    device = producing_device({0: "1.5"})
    offer(device, quantity_wh=1200)
    matching_run(now=after(2))  # hour 0 only
    matched = {h.consumer_id: h.matched_wh for h in ConsumerHour.objects.all()}
    assert matched == {first.id: 1000, second.id: 200, elsewhere.id: 0}

    consume(elsewhere, 1, ["1"])
    consume(first, 1, ["0.1"])
    device2 = producing_device({1: "1"})
    offer(device2, share="1")
    consumer_set_cross_zone(consumer_id=elsewhere.id, allowed=True, actor="op")
    matching_run(now=after(4))
    hour1 = {h.consumer_id: h.matched_wh for h in ConsumerHour.objects.filter(hour=after(1))}
    assert hour1[first.id] + hour1[elsewhere.id] == 1000 and hour1[first.id] == 100  # what the zone left
    assert SupplyHour.objects.get(device=device2).matched_wh == 1000


def test_a_late_reading_adds_an_adjustment_and_never_changes_the_match():
    consumer = make_consumer(meters=2)
    consume(consumer, 0, ["0.3"])
    device = producing_device({0: "1"})
    offer(device, share="1")
    matching_run(now=after(3))  # hour 0 matched, hour 1 passed as quiet
    consume(consumer, 0, ["0.2"], meter=1, minute=5)  # the other meter reports the hour late
    consume(consumer, 1, ["0.7"], meter=1)  # and an hour that had nothing at all
    assert matching_run(now=after(3.5)).adjustments == 2
    hour = ConsumerHour.objects.get(hour=HOUR0)
    assert (hour.demand_wh, hour.current_demand_wh, hour.matched_wh) == (Decimal(300), Decimal(500), 300)
    assert [(a.demand_before_wh, a.demand_after_wh) for a in Adjustment.objects.order_by("consumer_hour__hour")] == [
        (Decimal(300), Decimal(500)),
        (Decimal(0), Decimal(700)),
    ]
    quiet = ConsumerHour.objects.get(hour=after(1))
    assert (quiet.demand_wh, quiet.current_demand_wh, quiet.matched_wh, quiet.match_hour.consumers) == (0, 700, 0, 0)
    assert matching_run(now=after(3.5)).adjustments == 0  # recorded once


def test_the_database_refuses_a_second_match_of_a_zone_hour_or_of_a_claimed_bundle():
    consumer = make_consumer()
    consume(consumer, 0, ["1"])
    offer(producing_device({0: "1"}), share="1")
    matching_run(now=after(3))
    original = MatchHour.objects.get(hour=HOUR0)
    original.pk = match_hour_id("other", HOUR0)
    with pytest.raises(IntegrityError), transaction.atomic():
        original.save(force_insert=True)
    match = Match.objects.get()
    match.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        Match.objects.create(**{f.attname: getattr(match, f.attname) for f in Match._meta.fields if f.name != "id"})


@pytest.mark.django_db(transaction=True)
def test_a_matcher_killed_before_its_commit_leaves_nothing_and_the_next_run_matches_once():
    consumer = make_consumer()
    for hour in range(2):
        consume(consumer, hour, ["1"])
    offer(producing_device({0: "2", 1: "2"}), share="1")
    env = {**os.environ, "DATABASE_URL": database_url(), "GRIDTOKEN_CRASH_AT": "matching_before_commit"}
    killed = subprocess.run([sys.executable, "manage.py", "match_hours"], env=env, capture_output=True, timeout=120,
                            cwd=ROOT)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not CertificateBundle.objects.filter(status="claimed").exists()
    assert not ChainOperation.objects.filter(kind="burn").exists() and not MatchHour.objects.exists()
    assert GridZone.objects.get().matched_through is None

    assert matching_run().matched_wh == 2000
    assert matching_run().matched_wh == 0
    assert CertificateBundle.objects.filter(status="claimed").count() == 2 == Match.objects.count()
    assert ChainOperation.objects.filter(kind="burn").count() == 2


def test_the_management_command_matches_and_passes_quiet_hours_at_once(capsys):
    consumer = make_consumer()
    consume(consumer, 0, ["1"])
    offer(producing_device({0: "1"}), share="1")
    call_command("match_hours")  # the wall clock is months past the hour: thousands of quiet hours
    out = capsys.readouterr().out
    assert "10YDE-VE-------2: 1 hour(s), 1 consumer-hour(s) with demand, 1000 Wh matched" in out
    assert MatchHour.objects.count() == 1
    assert consumer.zone.__class__.objects.get().matched_through > timezone.now() - timedelta(hours=3)


@pytest.mark.django_db(transaction=True)
def test_racing_matchers_match_every_zone_hour_once_and_claim_no_wh_twice():
    zones = ["10YDE-VE-------2", "10YFR-RTE------C", "10YNL----------L"]
    consumers = [make_consumer(zone=zone) for zone in zones for _ in range(2)]
    for consumer in consumers:
        for hour in range(4):
            consume(consumer, hour, ["0.4", "0.35"])
    consumer_set_cross_zone(consumer_id=consumers[2].id, allowed=True, actor="op")  # draws on every zone's pool
    for index, zone in enumerate(zones):
        shared = producing_device(dict.fromkeys(range(4), "1"), zone=zone)
        offer(shared, share="1")
        offer(producing_device(dict.fromkeys(range(4), "0.3"), zone=zone), consumer=consumers[2 * index], share="1")

    concurrently(lambda: [matching_run(now=after(6)) for _ in range(2)], 4)

    assert MatchHour.objects.count() == len(zones) * 4
    assert ConsumerHour.objects.count() == len(consumers) * 4
    claimed = CertificateBundle.objects.filter(status="claimed")
    assert sum(b.quantity_wh for b in claimed) == sum(h.matched_wh for h in ConsumerHour.objects.all())
    assert sum(m.quantity_wh for m in Match.objects.all()) == sum(b.quantity_wh for b in claimed)
    assert Match.objects.count() == claimed.count()
    for supply in SupplyHour.objects.all():
        same = [b for b in claimed if b.issuance.device_id == supply.device_id and b.consumption_start == supply.hour]
        assert supply.matched_wh == sum(b.quantity_wh for b in same)
    # The rule, whatever the interleaving: the first consumer of each zone 300 Wh bilateral + 450 from the pool,
    # the second the pool's other 550 Wh; the cross-zone one is served by its own zone first, so needs no more.
    expected = {c.id: (750, 300) if index % 2 == 0 else (550, 0) for index, c in enumerate(consumers)}
    for hour in ConsumerHour.objects.all():
        assert (hour.matched_wh, hour.bilateral_wh) == expected[hour.consumer_id]
        assert hour.unmatched_wh == hour.demand_wh - hour.matched_wh


def test_the_admin_shows_the_records_read_only_and_acts_through_the_services(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    consumer = make_consumer()
    consume(consumer, 0, ["1"])
    allocation = offer(producing_device({0: "1"}), consumer=consumer, share="1")
    matching_run(now=after(3))
    for model in ("gridzone", "consumer", "allocation", "matchhour", "consumerhour", "match", "supplyhour",
                  "adjustment"):  # fmt: skip
        assert client.get(reverse(f"admin:matching_{model}_changelist")).status_code == 200, model
    hour = ConsumerHour.objects.get()
    assert client.get(reverse("admin:matching_consumerhour_change", args=[hour.id])).status_code == 200
    assert client.get(reverse("admin:matching_consumerhour_delete", args=[hour.id])).status_code == 403

    def act(model: str, action: str, row) -> None:
        url = reverse(f"admin:matching_{model}_changelist")
        assert client.post(url, {"action": action, "_selected_action": [str(row.pk)]}, follow=True).status_code == 200

    act("consumer", "allow_cross_zone", consumer)
    act("consumer", "suspend", consumer)
    consumer.refresh_from_db()
    assert consumer.cross_zone and consumer.status == "suspended"
    act("allocation", "end", allocation)
    allocation.refresh_from_db()
    assert allocation.status == "ended" and allocation.valid_until is not None


def test_the_matcher_the_report_selectors_and_the_admin_lists_read_every_growing_table_by_index(client):
    from django.contrib import admin
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from certificates.models import Issuance
    from matching import selectors
    from meters.models import MeterHourRollup
    from tests.meters.test_plans import explained, full_reads
    from tests.ops.test_history_plans import table_indexes

    watched = [m._meta.db_table for m in (ConsumerHour, Match, MatchHour, SupplyHour, Adjustment, Issuance,
                                          CertificateBundle, MeterHourRollup)]  # fmt: skip
    consumers = [make_consumer() for _ in range(3)]
    for consumer in consumers:
        for hour in range(4):
            consume(consumer, hour, ["0.5"])
    offer(producing_device(dict.fromkeys(range(4), "1")), share="1")
    offer(producing_device(dict.fromkeys(range(4), "0.2")), consumer=consumers[0], share="1")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for model in (ConsumerHour, Match, MatchHour, SupplyHour, Adjustment):
        admin.site._registry[model].list_per_page = 2  # more than a page, as in production

    month = HOUR0.date()
    start, end = selectors.month_range(month)
    surfaces = {
        "matcher": lambda: matching_run(now=after(6)),
        "adjustments": lambda: [consume(c, 0, ["0.1"], minute=5) for c in consumers] and matching_run(now=after(6)),
        "month": lambda: selectors.consumer_month(consumer=consumers[0], month=month),
        "bundles": lambda: selectors.hour_bundles(consumer=consumers[0], start=start, end=end),
        "supply": lambda: selectors.zone_supply(grid_zone=consumers[0].zone_id, start=start, end=end),
        **{model: lambda model=model: client.get(reverse(f"admin:matching_{model}_changelist"))
           for model in ("consumerhour", "match", "matchhour", "supplyhour", "adjustment")},
    }  # fmt: skip
    found = {}
    for name, surface in surfaces.items():
        with CaptureQueriesContext(connection) as captured:
            surface()
        for query in captured.captured_queries:
            sql = query["sql"]
            if not sql.lstrip().upper().startswith(("SELECT", "WITH")) or "FOR UPDATE" in sql:
                continue
            plan = explained(sql)
            for table in watched:
                if table in sql and (
                    reads := full_reads(plan, table=table, indexes=table_indexes(table), backlog=set())
                ):
                    found.setdefault(name, []).append((reads, sql))
    assert found == {}
    assert MatchHour.objects.count() == 4 and Adjustment.objects.count() == 3


def test_consumers_and_allocations_refuse_bad_input_with_stable_codes():
    from matching.services.consumers import allocation_create, consumer_add_meter, consumer_register

    consumer = make_consumer()
    device = producing_device({0: "1"})
    stranger = UserFactory()

    def code(call) -> str:
        with pytest.raises(ApplicationError) as refused:
            call()
        return refused.value.code

    meter = consumer.demand_meters.get().meter
    assert code(lambda: consumer_register(user=consumer.user, name=" ", grid_zone="Z", meters=[meter], actor="op")) == (
        "validation_error"
    )
    assert code(lambda: consumer_add_meter(consumer=consumer, meter=meter, actor="op")) == "meter_in_demand"
    assert code(lambda: consumer_add_meter(consumer=consumer, meter=device.meter, actor="op")) == "meter_not_owned"
    half_past = HOUR0 + timedelta(minutes=30)
    assert code(lambda: consumer_register(user=consumer.user, name="A", grid_zone="Z", meters=[meter],
                                          match_from=half_past, actor="op")) == "not_whole_hour"  # fmt: skip
    offer_args = {"device": device, "holder": device.meter.owner, "actor": "op", "valid_from": HOUR0}
    assert code(lambda: allocation_create(kind="pool", share=Decimal("1.5"), **offer_args)) == "validation_error"
    assert code(lambda: allocation_create(kind="pool", share=Decimal(1), quantity_wh=5, **offer_args)) == (
        "validation_error"
    )
    assert code(lambda: allocation_create(kind="bilateral", share=Decimal(1), **offer_args)) == "validation_error"
    assert code(lambda: allocation_create(kind="pool", quantity_wh=5, **{**offer_args, "holder": stranger})) == (
        "not_device_owner"
    )
    assert not Allocation.objects.exists()
