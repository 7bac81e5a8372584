"""The Compose web tier: nginx (deploy/nginx/gridtoken.conf) in front of gunicorn (REST) and uvicorn (/ws).

Docker cannot run here, so the shipped nginx config is run by the real nginx, its upstreams moved onto a real
gunicorn and a real uvicorn started the way docker-compose.yml starts them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from rest_framework.authtoken.models import Token
from websockets.sync.client import connect

from meters.models import User
from tests.conftest import ROOT, free_port, wait_until
from tests.realtime.test_browser import processes

__all__ = ["processes"]  # fixture, used by name

NGINX_CONF = ROOT / "deploy/nginx/gridtoken.conf"
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "correct horse battery"


def upstreams() -> dict[str, str]:
    """Upstream block name -> the Compose service:port it points at."""
    return dict(re.findall(r"upstream (\w+) \{\s*server ([\w-]+:\d+);", NGINX_CONF.read_text()))


def test_compose_publishes_only_the_proxy_which_routes_to_gunicorn_and_uvicorn():
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx/gridtoken.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    (listen,) = re.findall(r"^\s*listen (\d+);", NGINX_CONF.read_text(), re.MULTILINE)
    published = [name for name, service in SERVICES.items() if any(":8000" in p for p in service.get("ports", []))]
    assert published == ["proxy"] and proxy["ports"] == [f"127.0.0.1:8000:{listen}"]
    routes = upstreams()
    assert routes == {"gridtoken_rest": "rest:8000", "gridtoken_ws": "web:8000"}
    rest, web = SERVICES["rest"], SERVICES["web"]
    assert rest["command"][:2] == ["gunicorn", "gridtoken.wsgi:application"] and "0.0.0.0:8000" in rest["command"]
    assert rest["command"][rest["command"].index("--worker-class") + 1] == "sync"
    assert web["command"][:2] == ["uvicorn", "gridtoken.asgi:application"] and web["command"][-1] == "8000"
    # Sync workers keep persistent connections; the ASGI server's threads share a pool (settings.py).
    assert (rest["environment"]["DB_POOL"], web["environment"]["DB_POOL"]) == ("false", "true")
    assert set(proxy["depends_on"]) == {"rest", "web"}
    for name in ("proxy", "rest", "web"):
        assert "/health" in " ".join(SERVICES[name]["healthcheck"]["test"]), name
        assert all(c["condition"] == "service_healthy" for c in proxy["depends_on"].values())
    assert rest["volumes"] == web["volumes"] == ["authority:/run/gridtoken:ro"]  # admin's "mint now" signs


def test_every_file_compose_mounts_or_builds_from_exists():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):  # a file (the proxy's config) or a folder (Grafana's provisioning)
                assert (ROOT / volume.split(":")[0]).exists(), (name, volume)
    assert (ROOT / "Dockerfile").is_file()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_answering(server, url: str) -> None:
    def up() -> bool:
        assert server.process.poll() is None, server.output()
        return answers(url)

    wait_until(up, timeout=60, message=f"{url} answering")


def start_nginx(tmp_path: Path, ports: dict[str, int]) -> tuple[subprocess.Popen, int]:
    """The shipped config with its upstreams and listen port moved onto loopback ports, nginx in the foreground."""
    port = free_port()
    text = NGINX_CONF.read_text()
    for service, local in ports.items():
        text = text.replace(f"server {service}:8000;", f"server 127.0.0.1:{local};")
    text = re.sub(r"listen \d+;", f"listen 127.0.0.1:{port};", text)
    (tmp_path / "gridtoken.conf").write_text(text)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  include {tmp_path}/gridtoken.conf;\n}}\n"
    )
    nginx = subprocess.Popen(
        [NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return nginx, port


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not Path(NGINX).exists(), reason="no nginx binary")
def test_through_the_proxy_rest_and_static_files_reach_gunicorn_and_websockets_reach_uvicorn(processes, tmp_path):
    operator = User.objects.create_user(username="proxied-op", password=PASSWORD, is_staff=True, wallet_address="W1")
    token = Token.objects.create(user=operator).key
    rest_port, ws_port = free_port(), free_port()
    gunicorn = [sys.executable, "-m", "gunicorn", "gridtoken.wsgi:application", "--worker-class", "sync", "-w", "2"]
    rest = processes("gunicorn", [*gunicorn, "--bind", f"127.0.0.1:{rest_port}"], {"DB_POOL": "false"})
    web = processes(
        "uvicorn",
        [sys.executable, "-m", "uvicorn", "gridtoken.asgi:application", "--host", "127.0.0.1", "--port", str(ws_port)],
    )
    wait_answering(rest, f"http://127.0.0.1:{rest_port}/health")
    wait_answering(web, f"http://127.0.0.1:{ws_port}/health")
    nginx, port = start_nginx(tmp_path, {"rest": rest_port, "web": ws_port})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: nginx.poll() is not None or answers(f"{base}/health"), timeout=30, message="nginx")
        assert nginx.poll() is None, nginx.stderr.read().decode()

        with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as browser:
            css = browser.get("/static/admin/css/base.css")
            assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
            # A form post with the browser's Origin: CSRF passes only if the proxy kept the Host's port.
            form = browser.get("/login")
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
            signed_in = browser.post(
                "/login",
                data={"username": operator.username, "password": PASSWORD, "csrfmiddlewaretoken": csrf},
                headers={"Origin": base, "Referer": f"{base}/login"},
            )
            assert signed_in.status_code == 302 and signed_in.headers["location"] == "/dashboard/"
            assert browser.get("/dashboard/").status_code == 200
            session = browser.cookies["sessionid"]

        # gunicorn cannot speak WebSocket: a greeting proves /ws went to uvicorn, by token and by session.
        with connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["token", token], open_timeout=20) as socket:
            greeting = json.loads(socket.recv(timeout=20))
            assert (greeting["type"], greeting["username"], greeting["auth"]) == ("connected", "proxied-op", "token")
        headers = {"Cookie": f"sessionid={session}", "Origin": base}
        with connect(f"ws://127.0.0.1:{port}/ws/events/", additional_headers=headers, open_timeout=20) as socket:
            greeting = json.loads(socket.recv(timeout=20))
            assert (greeting["type"], greeting["username"], greeting["auth"]) == ("connected", "proxied-op", "session")
    finally:
        nginx.terminate()
        nginx.wait(timeout=20)

    # Each request is logged (JSON, one line) by the server that answered it.
    served_by_rest, served_by_web = rest.log.read_text(), web.log.read_text()
    for path in ("/static/admin/css/base.css", "/login", "/dashboard/"):
        assert f'"path": "{path}"' in served_by_rest and f'"path": "{path}"' not in served_by_web, path
