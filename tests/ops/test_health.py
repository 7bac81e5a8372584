import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from gridtoken.ops import health
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
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "rpc": "ok"}}


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
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'gridtoken_dependency_up{dependency="database"} 0.0' in metrics
    finally:
        server.terminate()
        server.wait(timeout=15)
