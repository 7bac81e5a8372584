"""Static files: the admin's and the dashboard's, served by the app itself (WhiteNoise) in every way it runs.

With DEBUG (the demo, the tests) they come straight from the apps' folders, no collectstatic; without DEBUG
from the compressed, hashed copies ``collectstatic`` writes at image build time (Dockerfile).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import django.contrib.admin
import httpx
import pytest

from gridtoken.asgi import application
from tests.conftest import ROOT, free_port, wait_until

ADMIN_CSS = Path(django.contrib.admin.__file__).parent / "static/admin/css/base.css"
DASHBOARD_ASSETS = ROOT / "realtime/static/realtime"


async def asgi_get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return await client.get(path)


async def test_the_admin_stylesheet_is_served_through_the_asgi_app():
    response = await asgi_get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.content == ADMIN_CSS.read_bytes()


@pytest.mark.parametrize(
    "name",
    ["dashboard.css", "dashboard.js", "charts.js", "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css"],
)
async def test_the_dashboards_own_assets_are_served_as_static_files_and_from_their_page_route(name):
    for path in (f"/static/realtime/{name}", f"/dashboard/assets/{name}"):
        response = await asgi_get(path)
        assert response.status_code == 200, path
        assert response.content == (DASHBOARD_ASSETS / name).read_bytes(), path


async def test_a_missing_static_file_is_a_404_not_a_page():
    response = await asgi_get("/static/admin/css/no-such-file.css")
    assert response.status_code == 404


def dockerfile_build_env() -> dict[str, str]:
    """The variables the Dockerfile's ``collectstatic`` step runs with (``RUN A=1 B=2 python manage.py ...``)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    line = re.search(r"^RUN (.*)python manage\.py collectstatic --noinput$", dockerfile, re.MULTILINE)
    assert line, "the Dockerfile runs collectstatic"
    return dict(pair.split("=", 1) for pair in line[1].split())


# Run in a fresh interpreter: settings are read once per process, and these tests need DEBUG=false.
PRODUCTION_CHECK = """
import json, os, re, sys
import django
from django.conf import settings
django.setup()
from django.core.management import call_command
from django.templatetags.static import static
from django.test import Client
from gridtoken import settings as project

settings.STATIC_ROOT = sys.argv[1]  # collect into the test's directory, not the working tree
call_command("collectstatic", "--noinput", verbosity=0)
client = Client(HTTP_HOST="localhost")
hashed = static("admin/css/base.css")
answers = {}
for path in ("/static/admin/css/base.css", hashed):
    response = client.get(path, HTTP_ACCEPT_ENCODING="gzip")
    answers[path] = {
        "status": response.status_code,
        "encoding": response.headers.get("Content-Encoding"),
        "cache": response.headers.get("Cache-Control", ""),
    }
front = client.get("/")
icons = [client.get(path) for path in re.findall(r'<link rel="icon" href="([^"]+)"', front.content.decode())]
stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', front.content.decode())[1]
print(json.dumps({
    "front": [front.status_code, stylesheet, client.get(stylesheet).status_code],
    "icons": [[icon.status_code, icon.headers["Content-Type"]] for icon in icons],
    "debug": settings.DEBUG,
    "storage": settings.STORAGES["staticfiles"]["BACKEND"],
    "middleware": settings.MIDDLEWARE,
    "finders": project.WHITENOISE_USE_FINDERS,
    "hashed": hashed,
    "answers": answers,
}))
"""


def test_the_build_time_collectstatic_needs_no_database_and_yields_compressed_hashed_files(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "gridtoken.settings",
        # Nothing listens here: the build has no database or Redis, and collectstatic must not need them.
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        **dockerfile_build_env(),
    }
    run = subprocess.run(
        [sys.executable, "-c", PRODUCTION_CHECK, str(tmp_path / "static")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.splitlines()[-1])
    assert found["debug"] is False and found["finders"] is False
    assert found["storage"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    security = found["middleware"].index("django.middleware.security.SecurityMiddleware")
    assert found["middleware"][security + 1] == "whitenoise.middleware.WhiteNoiseMiddleware"
    assert (tmp_path / "static/staticfiles.json").exists()
    assert re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", found["hashed"])
    plain, hashed = found["answers"]["/static/admin/css/base.css"], found["answers"][found["hashed"]]
    assert plain["status"] == hashed["status"] == 200
    assert hashed["encoding"] == "gzip"  # the compressed copy collectstatic wrote
    assert "immutable" in hashed["cache"] and "immutable" not in plain["cache"]
    # The front door's stylesheet by its hashed name, its SVG icon and /favicon.ico: all answered without DEBUG.
    status, stylesheet, stylesheet_status = found["front"]
    assert status == stylesheet_status == 200 and re.fullmatch(r"/static/ops/home\.[0-9a-f]{12}\.css", stylesheet)
    assert found["icons"] == [[200, "image/svg+xml"], [200, "image/x-icon"]]


def test_gunicorn_serves_the_admin_stylesheet_as_the_compose_web_service_runs_it(tmp_path):
    """The REST process of docker-compose.yml (sync workers, WSGI) with DEBUG, so without collectstatic."""
    port = free_port()
    env = {**os.environ, "DEBUG": "true", "DB_POOL": "false"}
    command = [sys.executable, "-m", "gunicorn", "gridtoken.wsgi:application", "-k", "sync", "-w", "1"]
    with open(tmp_path / "gunicorn.log", "wb") as log:
        server = subprocess.Popen([*command, "-b", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:

        def fetch():
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=2) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as error:
                return error.code, b""
            except OSError:
                return None  # not listening yet, or the worker still booting past the timeout

        status, body = wait_until(fetch, timeout=60, message="gunicorn answering")
        assert status == 200 and body == ADMIN_CSS.read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=20)
