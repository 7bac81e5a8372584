"""/ready and /metrics with several RPC providers: the web's own probe of each, and what the workers report."""

import dataclasses

import pytest

from config.providers import RpcEndpoint
from gridtoken import observability
from minting.chain.providers import ProviderState
from tests.ops.test_metrics import scrape, value

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_reports():
    client = observability.redis_client()
    client.delete(observability.RPC_ERRORS_KEY, observability.RPC_STATES_KEY)
    yield
    client.delete(observability.RPC_ERRORS_KEY, observability.RPC_STATES_KEY)


@pytest.fixture
def providers_at(settings):
    def point(*urls: str) -> None:
        endpoints = tuple(RpcEndpoint(url=url) for url in urls)
        settings.CHAIN = dataclasses.replace(
            settings.CHAIN, rpc_url=urls[0], rpc=dataclasses.replace(settings.CHAIN.rpc, endpoints=endpoints)
        )

    return point


def reported(number: int, state: str, code: str = "", lag: int = 0) -> dict:
    return dataclasses.asdict(
        ProviderState(
            number=number, where="http://127.0.0.1", role="all", weight=1, state=state, code=code, slot=1000,
            lag_slots=lag, out_for_secs=2.0, errors={},
        )
    )  # fmt: skip


def test_one_provider_down_leaves_the_service_ready_but_degraded_naming_it_by_number(
    client, localnet, closed_port_url, providers_at
):
    providers_at(localnet.url, f"http://{closed_port_url}/secret-key")
    response = client.get("/ready")
    body = response.json()
    assert (response.status_code, body["status"], body["degraded"]) == (200, "degraded", ["rpc_providers"])
    assert body["checks"]["rpc"] == "ok"
    assert body["checks"]["rpc_providers"] == "degraded: provider 2 not in"
    assert body["rpc_providers"] == {"1": "ok", "2": "down: ConnectError"}
    assert "secret-key" not in response.content.decode() and closed_port_url not in response.content.decode()


def test_every_provider_down_is_the_rpc_dependency_down(client, closed_port_url, providers_at):
    providers_at(f"http://{closed_port_url}", f"http://{closed_port_url}/other")
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["rpc"] == "down: every provider: 1 ConnectError, 2 ConnectError"


def test_a_provider_the_workers_took_out_is_out_in_ready_and_unhealthy_in_metrics(client, localnet, providers_at):
    providers_at(localnet.url, localnet.url + "/second")
    observability.rpc_providers_report([reported(1, "in"), reported(2, "out", "rpc_lagging", lag=300)])
    for _ in range(3):
        observability.rpc_provider_error(2, "rpc_lagging")
    observability.rpc_provider_error(1, "rpc_rate_limited")

    body = client.get("/ready").json()
    assert body["rpc_providers"] == {"1": "ok", "2": "out: rpc_lagging"}
    assert body["status"] == "degraded"

    samples = scrape(client)
    host = localnet.url
    assert value(samples, "gridtoken_rpc_provider_healthy", provider="1", host=host) == 1
    assert value(samples, "gridtoken_rpc_provider_healthy", provider="2", host=host) == 0
    assert value(samples, "gridtoken_rpc_provider_lag_slots", provider="2", host=host) == 300
    assert value(samples, "gridtoken_rpc_provider_errors_total", provider="2", host=host, code="rpc_lagging") == 3
    assert value(samples, "gridtoken_rpc_provider_errors_total", provider="1", host=host, code="rpc_rate_limited") == 1
    assert value(samples, "gridtoken_dependency_up", dependency="rpc") == 1


def test_a_report_older_than_its_ttl_is_forgotten(client, localnet, providers_at, monkeypatch):
    providers_at(localnet.url, localnet.url + "/second")
    observability.rpc_providers_report([reported(1, "in"), reported(2, "out", "rpc_unavailable")])
    monkeypatch.setattr(observability.time, "time", lambda: 10**10)  # far past the TTL
    assert observability.rpc_providers_reports() == []
    assert not observability.redis_client().hlen(observability.RPC_STATES_KEY)
