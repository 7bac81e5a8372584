"""The MQTT ingesters' shared state (protocols/status.py) against the real Redis, and what /ready and /metrics
make of it."""

import dataclasses
import time
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops import health
from protocols import status

pytestmark = pytest.mark.django_db


def clear_mqtt_state() -> None:
    client = status.redis_client()
    client.delete(status.REGISTRY_KEY, status.COUNTS_KEY)
    for key in client.scan_iter(status.HEARTBEAT_PREFIX + "*"):
        client.delete(key)
    status._pending.clear()
    status._retry_at = 0.0


@pytest.fixture(autouse=True)
def clean_mqtt_state():
    clear_mqtt_state()
    yield
    clear_mqtt_state()


def beat(name: str = "ingest-a", *, connected: bool = True, lag: float | None = None) -> None:
    status.ingester_heartbeat(name=name, connected=connected, broker="mqtt://broker.local:1883", lag_seconds=lag)


def test_a_heartbeat_makes_the_ingester_live_with_what_it_reported():
    beat("ingest-a", connected=True, lag=1.25)
    (ingester,) = status.ingesters_status()
    assert {k: ingester[k] for k in ("name", "connected", "broker", "lag_seconds")} == {
        "name": "ingest-a",
        "connected": True,
        "broker": "mqtt://broker.local:1883",
        "lag_seconds": 1.25,
    }
    assert abs((datetime.now(UTC) - datetime.fromisoformat(ingester["last_seen"])).total_seconds()) < 60
    ttl = status.redis_client().ttl(status.HEARTBEAT_PREFIX + "ingest-a")
    assert 0 < ttl <= status.HEARTBEAT_TTL_SECS == 3 * status.HEARTBEAT_SECS


def test_the_broker_is_reported_without_credentials_or_path():
    status.ingester_heartbeat(name="ingest-a", connected=False, broker="mqtts://ingester:s3cret@[::1]:8883/x?y=1")
    assert status.ingesters_status()[0]["broker"] == "mqtts://[::1]:8883"
    assert b"s3cret" not in status.redis_client().get(status.HEARTBEAT_PREFIX + "ingest-a")
    assert status.broker_label("not a url") == "unknown"


def test_an_ingester_that_stops_sending_heartbeats_drops_out_and_is_reported_missing(monkeypatch):
    monkeypatch.setattr(status, "HEARTBEAT_TTL_SECS", 1)
    beat("ingest-a")
    beat("ingest-b")
    assert [i["name"] for i in status.ingesters_status()] == ["ingest-a", "ingest-b"]
    monkeypatch.setattr(status, "HEARTBEAT_TTL_SECS", 60)
    deadline = time.monotonic() + 10
    # ingest-b keeps beating; ingest-a has died (Redis expires its key, nothing clears it).
    while status.ingester_fleet()["missing"] != ["ingest-a"] and time.monotonic() < deadline:
        beat("ingest-b")
        time.sleep(0.2)
    fleet = status.ingester_fleet()
    assert ([i["name"] for i in fleet["live"]], fleet["missing"]) == (["ingest-b"], ["ingest-a"])


def test_a_clean_stop_leaves_the_fleet_instead_of_going_missing():
    beat("ingest-a")
    status.ingester_stopped(name="ingest-a")
    assert status.ingester_fleet() == {"live": [], "missing": []}


def test_a_live_heartbeat_forgets_long_dead_ingesters_but_not_recent_ones():
    client = status.redis_client()
    now = time.time()
    client.zadd(status.REGISTRY_KEY, {"replaced-long-ago": now - status.FORGET_SECS - 60, "died-lately": now - 60})
    beat("ingest-a")
    assert status.ingester_fleet()["missing"] == ["died-lately"]


def test_counts_add_up_across_calls_with_refusals_by_code():
    status.ingester_count(received=5, stored=3, duplicates=1, refused={"validation_error": 1})
    status.ingester_count(received=2, stored=1, refused={"meter_not_found": 1, "Free text!": 1, "zero": 0})
    status.ingester_count(received=-4)  # counters only grow
    assert status.ingester_totals() == {
        "received": 7,
        "stored": 4,
        "duplicates": 1,
        "refused": {"meter_not_found": 1, "other": 1, "validation_error": 1},
    }


def test_redis_down_never_raises_and_the_counts_reach_redis_once_it_is_back(settings, closed_port_url, caplog):
    reachable = settings.SERVICE
    settings.SERVICE = dataclasses.replace(reachable, redis_url=f"redis://{closed_port_url}/0")

    status.ingester_count(received=3, stored=2)
    beat("ingest-a")
    status.ingester_stopped(name="ingest-a")
    assert "could not count MQTT messages" in caplog.text

    settings.SERVICE = reachable
    # Within RETRY_SECS of the failure nothing waits on Redis, so nothing is written yet.
    status.ingester_count(received=1)
    assert status.ingester_totals()["received"] == 0
    status._retry_at = 0.0  # the retry window has passed
    beat("ingest-a")
    assert status.ingester_totals() == {"received": 4, "stored": 2, "duplicates": 0, "refused": {}}
    assert [i["name"] for i in status.ingesters_status()] == ["ingest-a"]


# --- /ready ---------------------------------------------------------------------------------------------


@pytest.fixture
def chain_ok(localnet, rpc_at):
    rpc_at(localnet.url)


def test_ready_says_nothing_about_mqtt_where_no_ingester_has_run(chain_ok, client):
    status_code, body = health.ready_answer()
    assert (status_code, body["status"]) == (200, "ready")
    assert "mqtt" not in body and "mqtt" not in body["checks"]
    assert client.get("/ready").json()["checks"] == body["checks"]


def test_ready_says_nothing_about_mqtt_when_mqtt_is_not_configured(chain_ok, settings):
    settings.MQTT = dataclasses.replace(settings.MQTT, url="")
    beat("ingest-a", connected=False)
    status_code, body = health.ready_answer()
    assert (status_code, body["status"]) == (200, "ready") and "mqtt" not in body


def test_ready_lists_the_live_ingesters_and_is_ready_while_one_is_connected(chain_ok):
    beat("ingest-a", connected=True, lag=0.5)
    beat("ingest-b", connected=False)
    status_code, body = health.ready_answer()
    assert (status_code, body["status"], body["checks"]["mqtt"]) == (200, "ready", "ok")
    assert body["mqtt"]["connected"] is True and body["mqtt"]["missing"] == []
    assert [(i["name"], i["connected"]) for i in body["mqtt"]["ingesters"]] == [("ingest-a", True), ("ingest-b", False)]


def test_no_connected_ingester_is_degraded_not_unready(chain_ok):
    beat("ingest-a", connected=False)
    status_code, body = health.ready_answer()
    assert status_code == 200  # restarting or unrouting web pods cures no broker trouble
    assert (body["status"], body["degraded"]) == ("degraded", ["mqtt"])
    assert body["checks"]["mqtt"] == "degraded: no ingester connected to the broker"
    assert body["mqtt"]["connected"] is False and body["mqtt"]["ingesters"][0]["broker"] == "mqtt://broker.local:1883"


def test_every_ingester_gone_without_a_clean_stop_is_degraded_and_named(chain_ok):
    status.redis_client().zadd(status.REGISTRY_KEY, {"ingest-a": time.time() - 30})
    status_code, body = health.ready_answer()
    assert (status_code, body["status"], body["checks"]["mqtt"]) == (200, "degraded", "degraded: no live ingester")
    assert body["mqtt"] == {"connected": False, "ingesters": [], "missing": ["ingest-a"]}


def test_a_dependency_down_is_still_unavailable_with_the_mqtt_state(rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    beat("ingest-a", connected=False)
    status_code, body = health.ready_answer()
    assert (status_code, body["status"], body["down"], body["degraded"]) == (503, "unavailable", ["rpc"], ["mqtt"])


# --- /metrics -------------------------------------------------------------------------------------------


def scrape(client) -> dict:
    samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").content.decode()):
        for sample in family.samples:
            if sample.name.startswith("gridtoken_mqtt_"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_report_the_fleets_counters_connections_and_largest_lag(client):
    status.ingester_count(received=10, stored=6, duplicates=2, refused={"validation_error": 2})
    beat("ingest-a", connected=True, lag=1.5)
    beat("ingest-b", connected=False, lag=7.0)
    status.redis_client().zadd(status.REGISTRY_KEY, {"ingest-dead": time.time() - 30})
    assert scrape(client) == {
        ("gridtoken_mqtt_messages_received_total", ()): 10,
        ("gridtoken_mqtt_readings_stored_total", ()): 6,
        ("gridtoken_mqtt_duplicates_total", ()): 2,
        ("gridtoken_mqtt_refused_total", (("code", "validation_error"),)): 2,
        ("gridtoken_mqtt_ingesters_connected", ()): 1,
        ("gridtoken_mqtt_ingesters_live", ()): 2,
        ("gridtoken_mqtt_ingesters_missing", ()): 1,
        ("gridtoken_mqtt_lag_seconds", ()): 7.0,
    }


def test_metrics_without_ingesters_are_zero_and_report_no_lag(client):
    samples = scrape(client)
    assert samples[("gridtoken_mqtt_ingesters_connected", ())] == 0
    assert samples[("gridtoken_mqtt_messages_received_total", ())] == 0
    assert not any(name == "gridtoken_mqtt_lag_seconds" for name, _ in samples)
