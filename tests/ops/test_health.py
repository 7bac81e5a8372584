import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from minting.models import MintingControl
from ops import health
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.django_db


def test_health_answers_ok_whatever_the_host_header(client):
    response = client.get("/health", HTTP_HOST="10.0.0.7:8000")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert response["X-Request-ID"]


def test_health_refuses_writes(client):
    assert client.post("/health").status_code == 405


def test_ready_when_database_redis_and_rpc_answer(client, localnet, rpc_at):
    rpc_at(localnet.url)
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "rpc": "ok", "minting": "ok"},
    }


def test_redis_down_makes_the_service_not_ready_and_says_so(client, localnet, rpc_at, redis_down):
    rpc_at(localnet.url)
    response = client.get("/ready")
    body = response.json()
    assert response.status_code == 503
    assert body["down"] == ["redis"]
    assert body["checks"]["redis"].startswith("down: ") and body["checks"]["database"] == "ok"


def test_rpc_down_makes_the_service_not_ready_and_says_so(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["down"] == ["rpc"]
    assert response.json()["checks"]["rpc"] == "down: ConnectError"


def control(**fields) -> MintingControl:
    MintingControl.objects.update_or_create(id=1, defaults={"auto_mint_enabled": True, **fields})
    return MintingControl.objects.get(id=1)


# The checks run in their own threads, on their own connections: the row must be committed to be seen.
committed = pytest.mark.django_db(transaction=True)


@committed
def test_minting_paused_by_the_breaker_is_degraded_not_unready(client, localnet, rpc_at):
    rpc_at(localnet.url)
    control(
        chain_failures=3,
        chain_retry_at=timezone.now() + timedelta(seconds=30),
        chain_error_code="rpc_unauthorized",
        chain_error="https://rpc.example/?api-key=SECRET refused getLatestBlockhash: HTTP 401: check the API key",
    )
    response = client.get("/ready")
    assert response.status_code == 200  # a probe that fails would restart or unroute pods for nothing
    body = response.json()
    assert body["status"] == "degraded" and body["degraded"] == ["minting"]
    assert body["checks"]["minting"] == "degraded: paused by the outage breaker (rpc_unauthorized)"
    assert {body["checks"][name] for name in ("database", "redis", "rpc")} == {"ok"}
    assert "SECRET" not in response.content.decode()  # codes only: a message may carry the RPC URL's key


@committed
def test_decisions_blocked_in_the_last_two_minutes_are_degraded(client, localnet, rpc_at):
    rpc_at(localnet.url)
    control(
        decisions_blocked_at=timezone.now() - timedelta(seconds=30),
        decisions_blocked_reason="history_unavailable: getSignatureStatuses without searchTransactionHistory",
    )
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["minting"] == "degraded: settlement decisions blocked (history_unavailable)"


@committed
def test_both_pause_and_blocked_decisions_are_named(rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    control(
        chain_retry_at=timezone.now() + timedelta(seconds=5),
        chain_error_code="node_behind",
        decisions_blocked_at=timezone.now(),
        decisions_blocked_reason="min_context_slot_not_reached: slot 90 < 120",
    )
    assert health.readiness()["minting"] == (
        "degraded: paused by the outage breaker (node_behind); "
        "settlement decisions blocked (min_context_slot_not_reached)"
    )


@committed
def test_an_old_block_and_an_elapsed_pause_are_ready_again(client, localnet, rpc_at):
    rpc_at(localnet.url)
    control(
        chain_failures=2,  # the breaker counts until a cycle reaches the chain; only retry_at pauses
        chain_retry_at=timezone.now() - timedelta(seconds=1),
        chain_error_code="rpc_unavailable",
        decisions_blocked_at=timezone.now() - timedelta(seconds=121),
        decisions_blocked_reason="node_behind: Node is behind by 42 slots",
    )
    response = client.get("/ready")
    assert (response.status_code, response.json()["status"]) == (200, "ready")
    assert response.json()["checks"]["minting"] == "ok"


@committed
def test_a_degraded_service_with_a_dependency_down_is_unavailable(client, rpc_at, closed_port_url):
    rpc_at(f"http://{closed_port_url}")
    control(chain_retry_at=timezone.now() + timedelta(seconds=60), chain_error_code="rpc_unavailable")
    response = client.get("/ready")
    assert response.status_code == 503
    assert (response.json()["status"], response.json()["down"]) == ("unavailable", ["rpc"])
    assert response.json()["degraded"] == ["minting"]


def test_an_rpc_url_that_is_not_a_solana_node_is_down(live_server, rpc_at):
    # A real HTTP server, but not a JSON-RPC one: POST /health is 405.
    rpc_at(f"{live_server.url}/health")
    assert health.check_rpc() == "HTTP 405"


class _NodeBehind(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = b'{"jsonrpc":"2.0","error":{"code":-32005,"message":"Node is behind by 42 slots"},"id":1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_node_that_is_behind_is_not_ready(rpc_at):
    # A fake node: the local chain never falls behind, so this answer cannot be provoked otherwise.
    server = http.server.HTTPServer(("127.0.0.1", 0), _NodeBehind)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rpc_at(f"http://127.0.0.1:{server.server_port}")
        assert health.readiness()["rpc"] == "down: rpc error -32005"
    finally:
        server.shutdown()
        server.server_close()


def test_a_dependency_slower_than_the_probe_is_reported_as_timed_out(rpc_at):
    # A socket that accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        rpc_at(f"http://127.0.0.1:{silent.getsockname()[1]}")
        checks = health.readiness(timeout=0.3)
    assert checks["rpc"] == "down: timeout"
    assert checks["redis"] == "ok"


def _wait_for(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def test_a_server_whose_dependencies_are_all_down_is_alive_but_not_ready(closed_port_url):
    """The web process starts without PostgreSQL, Redis or RPC; /ready names all three."""
    port = free_port()
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": f"postgres://postgres@{closed_port_url}/gridtoken",
        "REDIS_URL": f"redis://{closed_port_url}/0",
        "SOLANA_RPC_URL": f"http://{closed_port_url}",
        "DB_POOL": "false",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "gridtoken.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", server)
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["down"] == ["database", "redis", "rpc"]
        # Without the database the minting state is unknown, which is the database's failure, not a fourth.
        assert ready.json()["checks"]["minting"].startswith("unknown: ")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'gridtoken_dependency_up{dependency="database"} 0.0' in metrics
    finally:
        server.terminate()
        server.wait(timeout=15)
