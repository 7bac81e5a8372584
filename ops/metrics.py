"""Prometheus figures computed from shared state at scrape time.

Minting happens in Celery workers, not in the web process Prometheus scrapes, so in-process counters would
show only this process' share. Instead every scrape derives the figures from facts every process shares:

- PostgreSQL (the truth): counters come from monotonic facts (readings stored, readings minted and the
  sum of their ``token_amount``, settled batches by outcome); gauges from current state (pending, due,
  in flight, dead letters, oldest pending); histograms are cumulative over all settled batches and
  minted readings, so they only grow and ``histogram_quantile(rate(...))`` works as usual.
- Redis: readings the API rejected (never stored), items the doors refused with ``internal_error`` and open
  WebSocket connections (``gridtoken.observability``);
  the MQTT ingesters' counters and heartbeats (``protocols.status``).
- The RPC node: ``getHealth``, for the "RPC down" alert.
- The minting control row: the outage breaker's pause and its reason, the fee payer's balance at the last
  build, the last time settling had to wait for the node.
- Meter data review: readings held for an operator (and the oldest one's age), and readings flagged per flag
  over the last 24 hours (from the start of that hour: the flag rollup's hours).

Cost: the readings' counters and the latency histogram come from the fleet rollup (docs/ROLLUPS.md), the
backlog's gauges from the pending and held rows (partial indexes), flags from the flag rollup's last 25 hours
of rows, the batch counts and the batch duration histogram from the batch rollup, the oldest
in-flight and newest confirmed batch from one end of an index: none of them grows with history.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from config.providers import host_only
from gridtoken import observability
from meters.archive.services import archive_failing
from meters.models import LATENCY_BUCKETS, READING_FLAGS, DeadLetter, FlagDelta, FlagHourRollup, MeterReading
from meters.selectors import fleet_totals
from minting.models import BATCH_DURATION_BUCKETS, MintBatch
from minting.selectors import PAUSE_REASONS, batch_totals, chain_costs_by_day, chain_state, control_peek
from minting.services.policy import rollout_bucket_sql
from ops.health import check_rpc
from protocols import status as mqtt_status

logger = logging.getLogger(__name__)

SETTLED = (MintBatch.Status.CONFIRMED, MintBatch.Status.FAILED, MintBatch.Status.EXPIRED)
R = MeterReading.Status
FLAGGED_SINCE = timedelta(hours=24)
# The flag rollup's hours from the one ``since`` falls in, and the deltas not folded yet (migration 0013):
# at most 25 hours of rows per flag, whatever the history. Flags are codes the ingestion code sets; anything
# else (a hand-edited row) is counted as one bounded "other" series by the rollup's triggers.
SINCE_HOUR = "hour >= date_trunc('hour', %(since)s, 'UTC')"
FLAGGED_SQL = (
    f"SELECT flag, sum(readings)::bigint FROM (SELECT flag, readings FROM {FlagHourRollup._meta.db_table}"  # noqa: S608 (model names)
    f" WHERE {SINCE_HOUR} UNION ALL SELECT flag, readings FROM {FlagDelta._meta.db_table} WHERE {SINCE_HOUR})"
    " t GROUP BY flag"
)


def _seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


def _age(moment: datetime | None, now: datetime) -> float:
    return max((now - moment).total_seconds(), 0.0) if moment is not None else 0.0


def duration_histogram(totals: dict) -> tuple[list, float]:
    """``gridtoken_mint_batch_duration_seconds`` of one status from the batch rollup's histogram."""
    buckets = [(str(bound), totals[f"duration_le_{i}"]) for i, bound in enumerate(BATCH_DURATION_BUCKETS)]
    buckets.append(("+Inf", totals["duration_count"]))
    return buckets, float(totals["duration_seconds"])


def latency_quantile(quantile: float, *, since: datetime) -> float | None:
    """Submit-to-mint latency quantile (seconds) over readings whose batch settled since ``since``."""
    readings, batches = MeterReading._meta.db_table, MintBatch._meta.db_table
    sql = (
        f"SELECT percentile_cont(%s) WITHIN GROUP (ORDER BY extract(epoch FROM b.settled_at - r.submitted_at)) "  # noqa: S608 (table names from models)
        f"FROM {readings} r JOIN {batches} b ON b.id = r.batch_id "
        f"WHERE r.status = %s AND b.settled_at >= %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [quantile, R.MINTED, since])
        value = cursor.fetchone()[0]
    return None if value is None else float(value)


def readings_with_rollout():
    """Readings, and the filter selecting users inside the automatic rollout (empty at 100 %).

    Uses the pipeline's own SQL twin of its stable user bucket, so the two can never disagree.
    """
    percentage = settings.TOKENIZATION.auto_mint_percentage
    if percentage >= 100:
        return MeterReading.objects.all(), Q()
    bucket = RawSQL(rollout_bucket_sql(f'"{MeterReading._meta.db_table}"."user_id"'), ())  # noqa: S611 (a constant expression over a model column)
    return MeterReading.objects.annotate(rollout_bucket=bucket), Q(rollout_bucket__lt=percentage)


def readings_figures(*, fleet: dict, now: datetime) -> dict:
    """The readings' counters and gauges: totals by status from the fleet rollup ``fleet`` (exact, whatever the
    history), the backlog's figures from the pending and held rows alone (partial indexes: their cost is the
    backlog's)."""
    row = {
        "received": fleet["rows"],
        "tokens": fleet["minted_units"],
        **{status: fleet[status] for status in ("minted", "pending", "minting", "failed", "rejected", "held")},
    }
    pending, automatic = readings_with_rollout()
    row.update(
        pending.filter(status=R.PENDING).aggregate(
            due=Count("pk", filter=Q(next_attempt_at__lte=now) & automatic),
            oldest_pending=Min("submitted_at", filter=automatic),
            **({"manual": Count("pk", filter=~automatic)} if automatic else {}),
        )
    )
    row["oldest_held"] = MeterReading.objects.filter(status=R.HELD).aggregate(oldest=Min("submitted_at"))["oldest"]
    row.setdefault("manual", 0)
    return row


def latency_histogram(fleet: dict) -> tuple[list, float]:
    """``gridtoken_submit_to_mint_latency_seconds`` from the fleet rollup's histogram of minted readings."""
    buckets = [(str(bound), fleet[f"latency_le_{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)]
    buckets.append(("+Inf", fleet["latency_count"]))
    return buckets, float(fleet["latency_seconds"])


def flagged_counts(*, since: datetime) -> dict[str, int]:
    """Readings submitted since the start of the UTC hour ``since`` falls in, carrying each flag (a reading
    with two flags counts under both), from the flag rollup."""
    with connection.cursor() as cursor:
        cursor.execute(FLAGGED_SQL, {"since": since})
        rows = cursor.fetchall()
    return {**dict.fromkeys(READING_FLAGS, 0), **dict(rows)}


def pause_series(reason: str | None) -> list[tuple[str, int]]:
    """``gridtoken_minting_paused`` as a state set: every known reason always has a series (0, or 1 for the
    one in force), so sums and alerts never meet a missing series; a code outside the list gets its own
    series while it is in force (codes are a fixed set in the code, so the label stays bounded)."""
    series = [(code, int(code == reason)) for code in PAUSE_REASONS]
    if reason is not None and reason not in PAUSE_REASONS:
        series.append((reason, 1))
    return series


class PipelineCollector(Collector):
    """Readings and batches from PostgreSQL, rejections and WebSocket connections from Redis, RPC health."""

    def collect(self):
        up = GaugeMetricFamily(
            "gridtoken_dependency_up", "1 when the dependency answered this scrape.", labels=["dependency"]
        )
        started = time.perf_counter()
        try:
            yield from self._database()
            up.add_metric(["database"], 1)
        except Exception:
            logger.warning("metrics: database figures unavailable", exc_info=True)
            up.add_metric(["database"], 0)
        try:
            yield from self._redis()
            up.add_metric(["redis"], 1)
        except Exception:
            logger.warning("metrics: redis figures unavailable", exc_info=True)
            up.add_metric(["redis"], 0)
        up.add_metric(["rpc"], 1 if check_rpc() is None else 0)
        yield up
        yield GaugeMetricFamily(
            "gridtoken_metrics_scrape_seconds",
            "Time this process spent computing the figures.",
            value=time.perf_counter() - started,
        )

    def _database(self):
        now = timezone.now()
        fleet = fleet_totals(latency=True)  # one read of the rollup serves the counters and the latency histogram
        row = readings_figures(fleet=fleet, now=now)
        yield CounterMetricFamily("gridtoken_readings_received_total", "Readings accepted and stored.", row["received"])
        yield CounterMetricFamily("gridtoken_readings_minted_total", "Readings minted on chain.", row["minted"])
        yield CounterMetricFamily(
            "gridtoken_tokens_minted_total", "Tokens minted, in base units (10^-decimals).", int(row["tokens"] or 0)
        )
        readings = GaugeMetricFamily("gridtoken_readings", "Stored readings by current status.", labels=["status"])
        for status in ("pending", "minting", "failed", "rejected", "held"):
            readings.add_metric([status], row[status])
        yield readings
        yield GaugeMetricFamily(
            "gridtoken_readings_pending", "Readings waiting to be minted (backlog).", row["pending"]
        )
        yield GaugeMetricFamily(
            "gridtoken_readings_pending_due", "Pending readings due for automatic minting now.", row["due"]
        )
        yield GaugeMetricFamily(
            "gridtoken_readings_pending_manual",
            "Pending readings of users outside TOKENIZATION_AUTO_MINT_PERCENTAGE: they wait for an operator.",
            row["manual"],
        )
        yield GaugeMetricFamily(
            "gridtoken_readings_oldest_pending_age_seconds",
            "Age of the oldest pending reading due for automatic minting (0 when none).",
            _age(row["oldest_pending"], now),
        )
        yield GaugeMetricFamily(
            "gridtoken_readings_dead_letter",
            "Readings failed after their last attempt (need an operator).",
            row["failed"],
        )
        yield GaugeMetricFamily(
            "gridtoken_readings_held", "Readings a VEE rule holds for an operator to approve or reject.", row["held"]
        )
        yield GaugeMetricFamily(
            "gridtoken_readings_oldest_held_age_seconds",
            "How long the oldest held reading has waited for an operator (0 when none).",
            _age(row["oldest_held"], now),
        )
        dead = GaugeMetricFamily(
            "gridtoken_dead_letters", "Dead letters waiting for an operator, by door.", labels=["door", "status"]
        )
        waiting = DeadLetter.objects.filter(status__in=(DeadLetter.Status.PENDING, DeadLetter.Status.QUARANTINED))
        for row in waiting.values("door", "status").annotate(n=Count("pk")).order_by():
            dead.add_metric([row["door"], row["status"]], row["n"])
        yield dead
        yield GaugeMetricFamily(
            "gridtoken_readings_archive_failing",
            "Readings partitions whose newest archive attempt did not verify (nothing of them was dropped).",
            archive_failing(),
        )
        flagged = GaugeMetricFamily(
            "gridtoken_readings_flagged",
            "Readings submitted in the last 24 hours (from the start of that UTC hour) carrying each quality or VEE"
            " flag.",
            labels=["flag"],
        )
        for flag, count in flagged_counts(since=now - FLAGGED_SINCE).items():
            flagged.add_metric([flag], count)
        yield flagged
        yield from self._batches(now, fleet)
        control = control_peek()
        enabled = settings.TOKENIZATION.auto_mint_enabled if control is None else control.auto_mint_enabled
        yield GaugeMetricFamily("gridtoken_auto_mint_enabled", "1 when automatic minting is on.", int(enabled))
        yield GaugeMetricFamily(
            "gridtoken_auto_mint_percentage",
            "Share of users minted automatically (rollout).",
            settings.TOKENIZATION.auto_mint_percentage,
        )
        yield from self._chain(chain_state(control=control, now=now))
        yield from self._costs()

    def _costs(self):
        """Today's (UTC) chain costs from the daily rollup: one row by its primary key."""
        (today,) = chain_costs_by_day(days=1) or [None]
        for name, help_text, value in (
            ("fee_lamports", "Transaction fees (signatures + priority) of the batches landed today (UTC).", "fee"),
            ("priority_fee_lamports", "The priority part of today's transaction fees.", "priority"),
            ("rent_lamports", "Rent of the token accounts and records today's batches created.", "rent"),
            ("lamports_per_kwh", "Fees and rent per kWh minted today (0 before the first mint).", "per_kwh"),
            (
                "lamports_per_reading",
                "Fees and rent per reading minted today (0 before the first mint).",
                "per_reading",
            ),
        ):
            figures = {
                "fee": today.fee_lamports, "priority": today.priority_fee_lamports, "rent": today.rent_lamports,
                "per_kwh": float(today.lamports_per_kwh or 0), "per_reading": float(today.lamports_per_reading or 0),
            } if today else {}  # fmt: skip
            yield GaugeMetricFamily(f"gridtoken_chain_cost_today_{name}", help_text, figures.get(value, 0))

    def _chain(self, chain: dict):
        yield GaugeMetricFamily(
            "gridtoken_chain_outage_failures",
            "Consecutive failed chain probes of the workers' outage breaker (0 once a cycle reaches the chain).",
            chain["failures"],
        )
        paused = GaugeMetricFamily(
            "gridtoken_minting_paused",
            "1 on the reason the outage breaker holds automatic minting for now, 0 on every other reason.",
            labels=["reason"],
        )
        for reason, in_force in pause_series(chain["reason_code"]):
            paused.add_metric([reason], in_force)
        yield paused
        blocked_at = chain["decisions_blocked_at"]
        yield GaugeMetricFamily(
            "gridtoken_chain_decisions_blocked_timestamp_seconds",
            "Unix time settling an in-flight batch last had to wait for a lagging or history-less RPC (0: never).",
            blocked_at.timestamp() if blocked_at else 0,
        )
        if chain["fee_payer_lamports"] is not None:
            yield GaugeMetricFamily(
                "gridtoken_fee_payer_lamports",
                "The fee payer's SOL balance, in lamports, at the last mint build.",
                chain["fee_payer_lamports"],
            )
            yield GaugeMetricFamily(
                "gridtoken_fee_payer_checked_timestamp_seconds",
                "Unix time the fee payer's balance was last read.",
                chain["fee_payer_checked_at"].timestamp() if chain["fee_payer_checked_at"] else 0,
            )

    def _batches(self, now: datetime, fleet: dict):
        totals = batch_totals()
        by_status = {status: row["batches"] for status, row in totals.items()}
        # Two queries, not one aggregate with FILTERs: each then reads one end of its index
        # (batch_status_created_idx, batch_settled_idx) instead of every batch.
        oldest_signed = MintBatch.objects.filter(status=MintBatch.Status.SIGNED).aggregate(oldest=Min("created_at"))
        last_confirmed = MintBatch.objects.filter(status=MintBatch.Status.CONFIRMED).aggregate(last=Max("settled_at"))
        batches = CounterMetricFamily(
            "gridtoken_mint_batches_total", "Settled mint transactions by outcome.", labels=["status"]
        )
        for status in SETTLED:
            batches.add_metric([status], by_status.get(status, 0))
        yield batches
        failures = CounterMetricFamily(
            "gridtoken_mint_failures_total",
            "Mint transactions that did not land: failed on chain or expired unlanded.",
            labels=["reason"],
        )
        for status in (MintBatch.Status.FAILED, MintBatch.Status.EXPIRED):
            failures.add_metric([status], by_status.get(status, 0))
        yield failures
        yield GaugeMetricFamily(
            "gridtoken_mint_batches_in_flight",
            "Signed transactions not yet settled.",
            by_status.get(MintBatch.Status.SIGNED, 0),
        )
        yield GaugeMetricFamily(
            "gridtoken_mint_batch_oldest_in_flight_age_seconds",
            "Age of the oldest unsettled batch (0 when none).",
            _age(oldest_signed["oldest"], now),
        )
        last = last_confirmed["last"]
        yield GaugeMetricFamily(
            "gridtoken_last_successful_batch_timestamp_seconds",
            "Unix time the newest confirmed batch settled (0 when none yet).",
            last.timestamp() if last else 0,
        )
        duration = HistogramMetricFamily(
            "gridtoken_mint_batch_duration_seconds",
            "Batch created (signed) to settled, all settled batches.",
            labels=["status"],
        )
        for status in SETTLED:
            duration.add_metric([status], *duration_histogram(totals[status]))
        yield duration
        latency = HistogramMetricFamily(
            "gridtoken_submit_to_mint_latency_seconds",
            "Reading submitted to its batch confirmed, all minted readings.",
        )
        latency.add_metric([], *latency_histogram(fleet))
        yield latency

    def _redis(self):
        rejected = CounterMetricFamily(
            "gridtoken_readings_rejected_total", "Readings the API refused, by error code.", labels=["reason"]
        )
        for reason, count in sorted(observability.rejected_counts().items()):
            rejected.add_metric([reason], count)
        yield rejected
        internal = CounterMetricFamily(
            "gridtoken_internal_errors_total",
            "Items refused with internal_error (dead letters), by door.",
            labels=["door"],
        )
        for door, count in sorted(observability.internal_error_counts().items()):
            internal.add_metric([door], count)
        yield internal
        yield CounterMetricFamily(
            "gridtoken_mint_internal_errors_total",
            "Readings and certificate operations whose mint raised an unexpected error (internal_error).",
            observability.mint_internal_error_count(),
        )
        yield GaugeMetricFamily(
            "gridtoken_websocket_connections",
            "Open WebSocket connections, all web processes.",
            observability.ws_connection_count(),
        )
        yield from self._mqtt()
        yield from self._rpc_providers()

    def _rpc_providers(self):
        """Each provider as the workers see it (their reports to Redis) and the errors they met there."""
        endpoints = settings.CHAIN.rpc_endpoints
        labels = ["provider", "host"]
        healthy = GaugeMetricFamily(
            "gridtoken_rpc_provider_healthy",
            "1 while every reporting process has the RPC provider in (not taken out), else 0.",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "gridtoken_rpc_provider_lag_slots",
            "Slots the provider's last answer was behind the best slot seen (highest over processes).",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "gridtoken_rpc_provider_errors_total", "Errors met at the RPC provider, by error code.",
            labels=[*labels, "code"],
        )  # fmt: skip
        reported: dict[int, list[dict]] = {}
        for view in observability.rpc_providers_reports():
            for provider in view:
                reported.setdefault(provider["number"], []).append(provider)
        host = {number: host_only(endpoint.url) for number, endpoint in enumerate(endpoints, start=1)}
        for number, views in sorted(reported.items()):
            if number in host:
                healthy.add_metric([str(number), host[number]], int(all(v["state"] == "in" for v in views)))
                lag.add_metric([str(number), host[number]], max(v["lag_slots"] for v in views))
        for (number, code), count in sorted(observability.rpc_provider_error_counts().items()):
            if number in host:
                errors.add_metric([str(number), host[number], code], count)
        yield healthy
        yield lag
        yield errors

    def _mqtt(self):
        totals = mqtt_status.ingester_totals()
        yield CounterMetricFamily(
            "gridtoken_mqtt_messages_received_total", "MQTT messages the ingesters took in.", totals["received"]
        )
        yield CounterMetricFamily(
            "gridtoken_mqtt_readings_stored_total", "Readings the MQTT ingesters stored.", totals["stored"]
        )
        yield CounterMetricFamily(
            "gridtoken_mqtt_duplicates_total",
            "MQTT messages answered as duplicates (redeliveries, device repeats).",
            totals["duplicates"],
        )
        refused = CounterMetricFamily(
            "gridtoken_mqtt_refused_total", "MQTT messages refused, by error code.", labels=["code"]
        )
        for code, count in totals["refused"].items():
            refused.add_metric([code], count)
        yield refused
        fleet = mqtt_status.ingester_fleet()
        live = fleet["live"]
        yield GaugeMetricFamily(
            "gridtoken_mqtt_ingesters_connected",
            "Live MQTT ingesters connected to the broker.",
            sum(1 for ingester in live if ingester["connected"]),
        )
        yield GaugeMetricFamily("gridtoken_mqtt_ingesters_live", "MQTT ingesters sending heartbeats.", len(live))
        yield GaugeMetricFamily(
            "gridtoken_mqtt_ingesters_missing",
            "MQTT ingesters that stopped sending heartbeats without a clean stop.",
            len(fleet["missing"]),
        )
        lags = [ingester["lag_seconds"] for ingester in live if ingester["lag_seconds"] is not None]
        if lags:
            yield GaugeMetricFamily(
                "gridtoken_mqtt_lag_seconds",
                "The largest lag a live MQTT ingester reports (absent while none reports one).",
                max(lags),
            )


def build_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector())
    # Per-process figures (memory, CPU, fds) of the process that answered this scrape.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


REGISTRY = build_registry()


def pipeline_snapshot(*, since: datetime) -> dict:
    """Figures for the demo's progress line: this run's readings (reading_submitted_idx), minted and stored as
    ``recorded`` (baselines, zeros, resets: nothing to mint), and the whole backlog."""
    row = MeterReading.objects.filter(submitted_at__gte=since).aggregate(
        submitted=Count("pk"),
        minted=Count("pk", filter=Q(status=R.MINTED)),
        recorded=Count("pk", filter=Q(status=R.RECORDED)),
    )
    fleet = fleet_totals()
    row.update(pending=fleet["pending"] + fleet["minting"], failed=fleet["failed"])
    row["p95_secs"] = latency_quantile(0.95, since=since)
    return row
