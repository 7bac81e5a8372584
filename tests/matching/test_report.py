"""The 24/7 report of a consumer's month (JSON, CSV, the printable page) and the match on a certificate's public
verification: figures recomputed here from the raw readings and issuances, and every read index-bounded."""

import csv
import io
from decimal import ROUND_FLOOR, Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from certificates.models import Issuance
from matching.models import Allocation, ConsumerHour, Match
from matching.services.matcher import matching_run
from meters.models import MeterReading
from tests.factories import UserFactory
from tests.matching.helpers import after, consume, make_consumer, offer, producing_device
from tests.meters.test_plans import bearer, explained, full_reads, logged_in

pytestmark = pytest.mark.django_db
MONTH = "2026-03"


@pytest.fixture
def matched():
    """Hour 0: demand 2000.4 Wh, 600 bilateral + 1400 pool. Hour 1: 1000 Wh unmatched, then a late 250 Wh
    (an adjustment). Hour 2: the PPA device produces with no demand (it counts for the annual figure only)."""
    consumer = make_consumer()
    consume(consumer, 0, ["0.5", "0.5", "0.5", "0.5004"])
    consume(consumer, 1, ["1"])
    ppa, pooled = producing_device({0: "1.2", 2: "0.8"}), producing_device({0: "3"})
    offer(ppa, consumer=consumer, share="0.5")
    offer(pooled, share="1")
    matching_run(now=after(6))  # hours 0 to 4
    consume(consumer, 1, ["0.25"], minute=20)
    assert matching_run(now=after(6)).adjustments == 1
    return consumer


def recomputed(consumer) -> dict:
    """Demand from the raw readings, and the annual supply from the raw issuances and the allocations' terms."""
    meters = consumer.demand_meters.values_list("meter_id", flat=True)
    demand = sum(r.consumed_kwh * 1000 for r in MeterReading.objects.filter(meter_id__in=meters))
    covered = sum(
        min(Decimal(h.matched_wh), h.current_demand_wh) for h in ConsumerHour.objects.filter(consumer=consumer)
    )
    offered = 0
    for allocation in Allocation.objects.filter(consumer=consumer):
        for issuance in Issuance.objects.filter(device=allocation.device, status="issued"):
            offered += int((allocation.share * issuance.quantity_wh).to_integral_value(rounding=ROUND_FLOOR))
    pool = sum(m.quantity_wh for m in Match.objects.filter(consumer_hour__consumer=consumer, kind="pool"))
    return {"demand": demand, "covered": covered, "annual_supply": offered + pool}


def test_the_report_shows_each_hour_the_score_the_annual_figure_and_the_certificates(matched):
    body = bearer(matched.user).get(f"/api/matching/consumers/{matched.id}/report?month={MONTH}").json()

    truth = recomputed(matched)
    assert truth == {"demand": Decimal("3250.4"), "covered": Decimal(2000), "annual_supply": 600 + 400 + 1400}
    assert (body["demand_wh"], body["matched_wh"], body["covered_wh"]) == ("3250.4", 2000, "2000")
    assert body["score"] == format((truth["covered"] / truth["demand"]).quantize(Decimal("0.000001")), "f")
    assert body["annual"] == {"supply_wh": 2400, "score": "0.738371"}  # 2400 / 3250.4
    assert body["decided_through"] == "2026-03-01T05:00:00.000000Z"
    assert [h["hour"][11:13] for h in body["hours"]] == ["00", "01", "02", "03", "04"]
    first, second = body["hours"][:2]
    assert (first["demand_wh"], first["bilateral_wh"], first["pool_wh"], first["unmatched_wh"]) == (
        "2000.4", 600, 1400, "0.4")  # fmt: skip
    assert (second["demand_wh"], second["matched_wh"], second["unmatched_wh"], second["adjusted"]) == (
        "1250", 0, "1250", True)  # fmt: skip
    assert body["unmatched_hours"] == 2
    assert [(c["kind"], c["quantity_wh"]) for c in first["certificates"]] == [("bilateral", 600), ("pool", 1400)]
    claimed = set(Match.objects.values_list("bundle_id", flat=True))
    assert {c["bundle_id"] for c in first["certificates"]} == {str(b) for b in claimed}

    verified = Client().get(first["certificates"][0]["verify"]).json()  # public: no credentials
    assert verified["bundle"]["beneficiary"] == matched.name
    assert verified["match"]["beneficiary"] == matched.name and verified["match"]["kind"] == "bilateral"
    assert (verified["match"]["hour_start"], verified["match"]["quantity_wh"]) == ("2026-03-01T00:00:00.000000Z", 600)


def test_the_csv_has_one_row_per_hour_with_exact_wh(matched):
    response = bearer(matched.user).get(f"/api/matching/consumers/{matched.id}/report.csv?month={MONTH}")

    assert response["Content-Type"].startswith("text/csv")
    assert f"{matched.id}-{MONTH}.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["hour_start"][11:16] for r in rows] == ["00:00", "01:00", "02:00", "03:00", "04:00"]
    assert [(r["demand_wh"], r["matched_wh"], r["unmatched_wh"], r["adjusted"]) for r in rows[:3]] == [
        ("2000.4", "2000", "0.4", "false"), ("1250", "0", "1250", "true"), ("0", "0", "0", "false"),
    ]  # fmt: skip
    assert len(rows[0]["certificates"].split()) == 2 and rows[1]["certificates"] == ""


def test_the_printable_page_shows_the_figures_and_the_certificates_to_its_owner_only(matched):
    page = logged_in(matched.user).get(f"/matching/consumers/{matched.id}/report?month={MONTH}")
    html = page.content.decode()

    assert page.status_code == 200
    assert "61.5 %" in html and "73.8 %" in html  # 2000 / 3250.4 and 2400 / 3250.4
    assert "@media print" in html and html.count('class="covered"') == 1  # hour 0 alone has matched supply
    for bundle_id in Match.objects.values_list("bundle_id", flat=True):
        assert f"/api/certificates/verify/{bundle_id}" in html
    assert Client().get(f"/matching/consumers/{matched.id}/report").status_code == 302  # to the sign-in
    assert logged_in(UserFactory()).get(f"/matching/consumers/{matched.id}/report").status_code == 404


def test_a_bad_month_another_accounts_consumer_and_no_credentials_are_refused_with_their_codes(matched):
    api = bearer(matched.user)
    bad = api.get(f"/api/matching/consumers/{matched.id}/report?month=2026-13")
    assert (bad.status_code, bad.json()["error"]["code"], bad.json()["error"]["field"]) == (400, "validation_error",
                                                                                               "month")  # fmt: skip
    other = bearer(UserFactory()).get(f"/api/matching/consumers/{matched.id}/report.csv")
    assert (other.status_code, other.json()["error"]["code"]) == (404, "consumer_not_found")
    assert Client().get(f"/api/matching/consumers/{matched.id}/report").status_code == 401
    operator = bearer(UserFactory(is_staff=True)).get(f"/api/matching/consumers/{matched.id}/report?month={MONTH}")
    assert operator.json()["matched_wh"] == 2000
    listed = api.get("/api/matching/consumers").json()["consumers"]
    assert [(c["id"], c["matched_through"]) for c in listed] == [(str(matched.id), "2026-03-01T05:00:00Z")]
    assert bearer(UserFactory()).get("/api/matching/consumers").json() == {"consumers": []}


def test_a_month_before_the_first_matched_hour_is_empty(matched):
    body = bearer(matched.user).get(f"/api/matching/consumers/{matched.id}/report?month=2026-02").json()
    assert (body["hours"], body["demand_wh"], body["score"], body["annual"]["score"]) == ([], "0", None, None)


WATCHED = {model._meta.db_table for model in (ConsumerHour, Match, Issuance, Allocation, MeterReading)}


def test_every_read_of_the_report_is_index_bounded(matched):
    with connection.cursor() as cursor:
        for table in WATCHED:
            cursor.execute(f"ANALYZE {table}")
    api, site = bearer(matched.user), logged_in(matched.user)
    bundle = Match.objects.first().bundle_id
    with CaptureQueriesContext(connection) as captured:
        assert api.get(f"/api/matching/consumers/{matched.id}/report?month={MONTH}").status_code == 200
        assert api.get(f"/api/matching/consumers/{matched.id}/report.csv?month={MONTH}").status_code == 200
        assert site.get(f"/matching/consumers/{matched.id}/report?month={MONTH}").status_code == 200
        assert Client().get(f"/api/certificates/verify/{bundle}").status_code == 200
    queries = [q["sql"] for q in captured.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    reads = [sql for sql in queries if any(table in sql for table in WATCHED)]
    found = {}
    for sql in reads:
        for table in WATCHED:
            with connection.cursor() as cursor:
                cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
                indexes = tuple(row[0] for row in cursor.fetchall())
            if problems := full_reads(explained(sql), table=table, indexes=indexes, backlog=set()):
                found[sql] = problems
    assert len(reads) >= 6 and found == {}, found
