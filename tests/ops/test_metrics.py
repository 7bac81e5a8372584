import asyncio
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from gridtoken import observability
from meters.models import Meter, User
from minting.models import MintingControl
from minting.selectors import PAUSE_REASONS
from minting.services.policy import rollout_bucket
from ops.metrics import latency_quantile, pipeline_snapshot

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict:
    """``/metrics`` as {(sample name, frozenset(labels)): value}."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def pipeline(rows):
    """Two confirmed batches (0.8 s and 3 s), one failed, one expired, one in flight, and readings."""
    fast = rows.batch("confirmed", created_ago=600, took=0.8)
    slow = rows.batch("confirmed", created_ago=300, took=3.0)
    rows.batch("failed", created_ago=900, took=2.0)
    rows.batch("expired", created_ago=1200, took=70.0)
    rows.in_flight = rows.batch("signed", created_ago=45, took=None)
    # Submit-to-mint latencies: 1.5 s and 12 s in the fast batch, 0.4 s in the slow one.
    rows.reading("minted", batch=fast, tokens=1_000_000_000, submitted_at=fast.settled_at - timedelta(seconds=1.5))
    rows.reading("minted", batch=fast, tokens=2_010_000_000, submitted_at=fast.settled_at - timedelta(seconds=12))
    rows.reading("minted", batch=slow, tokens=5, submitted_at=slow.settled_at - timedelta(seconds=0.4))
    rows.reading("pending", submitted_at=rows.now - timedelta(seconds=90))
    rows.reading("pending", next_attempt_at=rows.now + timedelta(hours=1))
    rows.reading("minting", batch=rows.in_flight)
    rows.reading("failed", attempts=3, last_error="custom program error: 0x1")
    rows.reading("rejected")
    rows.fast, rows.slow = fast, slow
    return rows


def test_reading_counters_and_backlog_come_from_the_database(client, pipeline, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    samples = scrape(client)
    assert value(samples, "gridtoken_readings_received_total") == 8
    assert value(samples, "gridtoken_readings_minted_total") == 3
    assert value(samples, "gridtoken_tokens_minted_total") == 3_010_000_005
    assert value(samples, "gridtoken_readings_pending") == 2
    assert value(samples, "gridtoken_readings_pending_due") == 1
    assert value(samples, "gridtoken_readings_dead_letter") == 1
    assert {
        status: value(samples, "gridtoken_readings", status=status)
        for status in ("pending", "minting", "failed", "rejected")
    } == {
        "pending": 2,
        "minting": 1,
        "failed": 1,
        "rejected": 1,
    }
    assert 90 <= value(samples, "gridtoken_readings_oldest_pending_age_seconds") < 3600


def test_batch_outcomes_in_flight_and_last_success_come_from_the_database(client, pipeline, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    samples = scrape(client)
    assert [value(samples, "gridtoken_mint_batches_total", status=s) for s in ("confirmed", "failed", "expired")] == [
        2,
        1,
        1,
    ]
    assert value(samples, "gridtoken_mint_failures_total", reason="failed") == 1
    assert value(samples, "gridtoken_mint_failures_total", reason="expired") == 1
    assert value(samples, "gridtoken_mint_batches_in_flight") == 1
    assert 45 <= value(samples, "gridtoken_mint_batch_oldest_in_flight_age_seconds") < 3600
    assert value(samples, "gridtoken_last_successful_batch_timestamp_seconds") == pipeline.slow.settled_at.timestamp()


def test_batch_duration_histogram_is_cumulative_per_outcome(client, pipeline, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    samples = scrape(client)
    bucket = "gridtoken_mint_batch_duration_seconds_bucket"
    confirmed = {le: value(samples, bucket, status="confirmed", le=le) for le in ("0.5", "1.0", "2.5", "5.0", "+Inf")}
    assert confirmed == {"0.5": 0, "1.0": 1, "2.5": 1, "5.0": 2, "+Inf": 2}
    assert value(samples, "gridtoken_mint_batch_duration_seconds_sum", status="confirmed") == pytest.approx(
        3.8, abs=1e-6
    )
    assert value(samples, bucket, status="expired", le="60.0") == 0
    assert value(samples, bucket, status="expired", le="120.0") == 1
    assert value(samples, "gridtoken_mint_batch_duration_seconds_count", status="failed") == 1


def test_submit_to_mint_latency_histogram_covers_every_minted_reading(client, pipeline, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    samples = scrape(client)
    bucket = "gridtoken_submit_to_mint_latency_seconds_bucket"
    observed = {le: value(samples, bucket, le=le) for le in ("0.25", "0.5", "2.0", "10.0", "30.0", "+Inf")}
    assert observed == {"0.25": 0, "0.5": 1, "2.0": 2, "10.0": 2, "30.0": 3, "+Inf": 3}
    assert value(samples, "gridtoken_submit_to_mint_latency_seconds_sum") == pytest.approx(13.9, abs=1e-6)


def test_auto_mint_state_and_chain_outage_follow_the_control_row(client, pipeline, rpc_at, closed_port_url, settings):
    rpc_at(f"http://{closed_port_url}")
    assert value(scrape(client), "gridtoken_auto_mint_enabled") == int(settings.TOKENIZATION.auto_mint_enabled)
    MintingControl.objects.update_or_create(pk=1, defaults={"auto_mint_enabled": False, "chain_failures": 4})
    samples = scrape(client)
    assert value(samples, "gridtoken_auto_mint_enabled") == 0
    assert value(samples, "gridtoken_chain_outage_failures") == 4
    assert value(samples, "gridtoken_auto_mint_percentage") == settings.TOKENIZATION.auto_mint_percentage


def paused_series(samples: dict) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (name, labels), v in samples.items() if name == "gridtoken_minting_paused"}


def test_nothing_is_paused_blocked_or_known_about_the_fee_payer_before_the_workers_say_so(
    client, rpc_at, closed_port_url
):
    rpc_at(f"http://{closed_port_url}")
    samples = scrape(client)
    # Every reason has its series from the start, so sum() and alerts never meet a missing one.
    assert paused_series(samples) == dict.fromkeys(PAUSE_REASONS, 0)
    assert value(samples, "gridtoken_chain_outage_failures") == 0
    assert value(samples, "gridtoken_chain_decisions_blocked_timestamp_seconds") == 0
    assert not any(name.startswith("gridtoken_fee_payer") for name, _ in samples)
    assert not MintingControl.objects.exists()  # a scrape writes nothing


def test_a_pause_by_the_breaker_is_one_series_set_to_1_on_its_reason(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=5,
        chain_retry_at=timezone.now() + timedelta(seconds=40),
        chain_error_code="insufficient_funds",
        chain_error="the fee payer Auth111 holds 0 lamports but 1 transaction(s) ... need about 5000: send it SOL",
    )
    samples = scrape(client)
    assert paused_series(samples) == {**dict.fromkeys(PAUSE_REASONS, 0), "insufficient_funds": 1}
    assert value(samples, "gridtoken_chain_outage_failures") == 5


def test_an_unlisted_code_gets_its_own_series_and_free_text_never_becomes_a_label(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    retry_at = timezone.now() + timedelta(seconds=40)
    MintingControl.objects.create(
        id=1, auto_mint_enabled=True, chain_failures=1, chain_retry_at=retry_at, chain_error_code="not_initialised"
    )
    assert paused_series(scrape(client))["not_initialised"] == 1
    MintingControl.objects.filter(id=1).update(chain_error_code="Some Error: with text")
    series = paused_series(scrape(client))
    assert series["other"] == 1 and sum(series.values()) == 1


def test_an_elapsed_pause_is_not_paused_even_while_the_breaker_still_counts(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=2,
        chain_retry_at=timezone.now() - timedelta(seconds=1),
        chain_error_code="rpc_unavailable",
    )
    samples = scrape(client)
    assert sum(paused_series(samples).values()) == 0
    assert value(samples, "gridtoken_chain_outage_failures") == 2


def test_fee_payer_balance_and_blocked_decisions_follow_the_control_row(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    checked, blocked = timezone.now() - timedelta(seconds=8), timezone.now() - timedelta(seconds=3)
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        fee_payer_lamports=12_345_678_901,
        fee_payer_checked_at=checked,
        decisions_blocked_at=blocked,
        decisions_blocked_reason="node_behind: Node is behind by 42 slots",
    )
    samples = scrape(client)
    assert value(samples, "gridtoken_fee_payer_lamports") == 12_345_678_901
    assert value(samples, "gridtoken_fee_payer_checked_timestamp_seconds") == checked.timestamp()
    assert value(samples, "gridtoken_chain_decisions_blocked_timestamp_seconds") == blocked.timestamp()


def test_rejections_by_reason_and_websocket_connections_come_from_redis(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    observability.readings_rejected(["kwh_out_of_range", "kwh_out_of_range", "Some Free Text!", None])
    observability.readings_rejected([])
    asyncio.run(connections(opened=3, closed=1))
    samples = scrape(client)
    assert value(samples, "gridtoken_readings_rejected_total", reason="kwh_out_of_range") == 2
    assert value(samples, "gridtoken_readings_rejected_total", reason="other") == 2
    assert value(samples, "gridtoken_websocket_connections") == 2


async def connections(*, opened: int, closed: int = 0) -> None:
    for _ in range(opened):
        await observability.aws_connected()
    for _ in range(closed):
        await observability.aws_disconnected()


def test_a_process_that_dies_with_open_connections_drops_out_of_the_gauge(db, monkeypatch):
    monkeypatch.setattr(observability, "WS_TTL_SECS", 1)
    asyncio.run(connections(opened=5))  # then this "process" dies: nothing renews its count
    monkeypatch.setattr(observability, "BOOT_ID", "the-next-incarnation")
    monkeypatch.setattr(observability, "WS_TTL_SECS", 90)
    asyncio.run(connections(opened=2, closed=1))
    assert observability.ws_connection_count() == 6

    time.sleep(1.5)  # the dead incarnation's TTL runs out

    assert observability.ws_connection_count() == 1
    members = observability.redis_client().smembers(observability.WS_PROCESSES_KEY)
    assert [member.decode() for member in members] == [observability.process_id()]


def test_a_live_process_keeps_its_count_alive(db, monkeypatch):
    monkeypatch.setattr(observability, "WS_TTL_SECS", 0.9)  # renewed every 0.3 s

    async def hold_open() -> int:
        await observability.aws_connected()
        await asyncio.sleep(2)  # more than twice the TTL
        return observability.ws_connection_count()

    assert asyncio.run(hold_open()) == 1


def test_redis_down_marks_redis_down_and_keeps_the_database_figures(
    client, pipeline, redis_down, rpc_at, closed_port_url
):
    rpc_at(f"http://{closed_port_url}")
    observability.readings_rejected(["kwh_out_of_range"])  # must not raise
    asyncio.run(connections(opened=1))  # must not raise either
    samples = scrape(client)
    assert value(samples, "gridtoken_dependency_up", dependency="redis") == 0
    assert value(samples, "gridtoken_dependency_up", dependency="database") == 1
    assert value(samples, "gridtoken_dependency_up", dependency="rpc") == 0
    assert value(samples, "gridtoken_readings_minted_total") == 3
    assert not any(name == "gridtoken_websocket_connections" for name, _ in samples)


def test_rpc_up_is_reported_when_the_chain_answers_get_health(client, localnet, rpc_at):
    rpc_at(localnet.url)
    assert value(scrape(client), "gridtoken_dependency_up", dependency="rpc") == 1


def test_metrics_answer_any_host_header(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    samples = scrape(client, HTTP_HOST="10.244.1.17:8000")
    assert value(samples, "gridtoken_readings_received_total") == 0


def test_latency_quantile_and_snapshot_cover_only_the_window(pipeline):
    pipeline.reading("recorded")  # a zero interval or a reset: stored, nothing to mint, and counted as such
    pipeline.reading("recorded", submitted_at=pipeline.now - timedelta(minutes=5))  # a meter's baseline
    assert latency_quantile(0.5, since=pipeline.now - timedelta(hours=1)) == pytest.approx(1.5, abs=1e-6)
    assert latency_quantile(0.95, since=pipeline.now + timedelta(hours=1)) is None
    last_minute = pipeline_snapshot(since=pipeline.now - timedelta(seconds=60))
    # Submitted within the last minute: the not-yet-due pending, minting, failed, rejected and zero readings.
    assert last_minute == {"submitted": 5, "minted": 0, "recorded": 1, "pending": 3, "failed": 1, "p95_secs": None}
    last_hour = pipeline_snapshot(since=pipeline.now - timedelta(hours=1))
    # p95 of 0.4, 1.5 and 12 s, interpolated as PostgreSQL's percentile_cont does: 1.5 + 0.9 * 10.5.
    assert last_hour == {
        "submitted": 10, "minted": 3, "recorded": 2, "pending": 3, "failed": 1, "p95_secs": pytest.approx(10.95)
    }  # fmt: skip


def test_pending_readings_outside_the_rollout_are_counted_as_manual(client, rows, rpc_at, closed_port_url, settings):
    rpc_at(f"http://{closed_port_url}")
    other = User.objects.create_user(username="second-producer", password="pw-producer-2")
    while rollout_bucket(other.id) == rollout_bucket(rows.user.id):
        other = User.objects.create_user(username=f"p-{other.username}", password="pw")
    inside, outside = sorted((rows.user, other), key=lambda user: rollout_bucket(user.id))
    settings.TOKENIZATION = replace(settings.TOKENIZATION, auto_mint_percentage=rollout_bucket(outside.id))
    meter = Meter.objects.create(serial="SIM-0002", owner=other, wallet_address=rows.meter.wallet_address)
    rows.reading("pending", submitted_at=rows.now - timedelta(seconds=30))
    rows.reading("pending", submitted_at=rows.now - timedelta(seconds=30))
    rows.user, rows.meter = other, meter
    rows.reading("pending", submitted_at=rows.now - timedelta(hours=2))
    samples = scrape(client)
    manual = 1 if outside == other else 2
    assert value(samples, "gridtoken_readings_pending") == 3
    assert value(samples, "gridtoken_readings_pending_manual") == manual
    assert value(samples, "gridtoken_readings_pending_due") == 3 - manual
    oldest = value(samples, "gridtoken_readings_oldest_pending_age_seconds")
    assert (oldest >= 7200) == (inside == other)


def test_held_readings_and_the_oldest_ones_wait_are_gauges(client, rows, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    rows.reading("held", submitted_at=rows.now - timedelta(hours=2))
    rows.reading("held", flags=["capacity"])
    rows.reading("pending")

    samples = scrape(client)

    assert value(samples, "gridtoken_readings_held") == 2
    assert value(samples, "gridtoken_readings", status="held") == 2
    assert 7200 <= value(samples, "gridtoken_readings_oldest_held_age_seconds") < 7200 + 600


def test_no_held_reading_means_zero_held_and_no_wait(client, rows, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    rows.reading("pending")

    samples = scrape(client)

    assert value(samples, "gridtoken_readings_held") == 0
    assert value(samples, "gridtoken_readings_oldest_held_age_seconds") == 0


def test_flagged_readings_are_counted_per_flag_over_the_last_day(client, rows, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    rows.reading("pending", flags=["spike", "clock_drift"])
    rows.reading("held", flags=["spike"])
    rows.reading("recorded", flags=["late_settled_window"])
    rows.reading("pending", flags=["spike"], submitted_at=rows.now - timedelta(hours=25))  # older than a day
    rows.reading("pending", flags=["Hand edited!"])
    rows.reading("pending")

    samples = scrape(client)

    flagged = {
        dict(labels)["flag"]: count for (name, labels), count in samples.items() if name == "gridtoken_readings_flagged"
    }
    assert {flag: count for flag, count in flagged.items() if count} == {
        "spike": 2,
        "clock_drift": 1,
        "late_settled_window": 1,
        "other": 1,
    }
    assert flagged["wallet_mismatch"] == 0 and flagged["register_reset"] == 0  # every known flag has a series
