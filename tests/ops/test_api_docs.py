"""/api/docs/ works offline: Swagger UI comes from drf-spectacular-sidecar through the app's own static files
(WhiteNoise), never from a CDN. Served by a real uvicorn; the browser test runs Debian's headless Chromium with
every host name but 127.0.0.1 unresolvable (tests/realtime/test_browser.py explains the set-up)."""

from __future__ import annotations

import json
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from tests.conftest import wait_until
from tests.realtime.test_browser import CHROMEDRIVER, CHROMIUM, chromium, processes, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["processes"]  # a fixture, used by name

PAGE_TIMEOUT = 60


class AssetLinks(HTMLParser):
    """The scripts, stylesheets and icons a page loads, as written in its HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.links.append(attrs["src"])
        elif tag == "link" and attrs.get("href") and {"stylesheet", "icon"} & set((attrs.get("rel") or "").split()):
            self.links.append(attrs["href"])


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def operation_count(base: str) -> int:
    _status, body = fetch(f"{base}/api/schema/?format=json")
    methods = {"get", "post", "put", "patch", "delete"}
    return sum(len(methods & set(item)) for item in json.loads(body)["paths"].values())


def test_the_docs_page_loads_only_its_own_assets_and_each_answers(processes):
    base = start_uvicorn(processes)

    status, html = fetch(f"{base}/api/docs/")
    parser = AssetLinks()
    parser.feed(html.decode())

    assert status == 200
    assert len(parser.links) >= 3  # swagger-ui.css, swagger-ui-bundle.js, the standalone preset, the favicon
    external = [link for link in parser.links if urlsplit(link).netloc or link.startswith("//")]
    assert external == []
    for link in parser.links:
        status, body = fetch(urljoin(f"{base}/api/docs/", link))
        assert status == 200 and len(body) > 0, link
    assert b"cdn.jsdelivr.net" not in html and b"unpkg.com" not in html


@pytest.fixture
def offline_browser(tmp_path):
    # Offline as far as the page can tell: no other host name resolves (a CDN link would fail to load).
    driver = chromium(tmp_path, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    yield driver
    driver.quit()


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists() or not CHROMEDRIVER.exists(), reason="needs Debian chromium + chromium-driver"
)
def test_swagger_ui_renders_every_operation_without_the_internet(processes, offline_browser):
    from selenium.webdriver.common.by import By

    base = start_uvicorn(processes)
    expected = operation_count(base)

    offline_browser.get(f"{base}/api/docs/")

    def rendered():
        return len(offline_browser.find_elements(By.CSS_SELECTOR, ".opblock")) >= expected

    wait_until(rendered, timeout=PAGE_TIMEOUT, interval=0.2, message="Swagger UI rendering the operations")
    assert len(offline_browser.find_elements(By.CSS_SELECTOR, ".opblock")) == expected
    assert offline_browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("GridToken API")
    loaded = offline_browser.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert loaded and all(url.startswith(base) for url in loaded), loaded
