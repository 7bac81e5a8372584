"""``/``: what GridToken is and the doors into it; ``/favicon.ico``; the admin branded as GridToken operations.

Served through the ASGI app as uvicorn serves it (``tests/ops/test_static.py`` checks the same pages without
DEBUG, from the files ``collectstatic`` writes).
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.conf import settings

from tests.ops.test_static import asgi_get

FAVICON = settings.BASE_DIR / "gridtoken" / "static" / "gridtoken" / "favicon.ico"
ICO_HEADER = b"\x00\x00\x01\x00"  # reserved 0, type 1 (icon)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[str] = []
        self.assets: list[str] = []
        self.icons: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.anchors.append(attrs["href"])
        elif tag == "link" and attrs.get("href"):
            self.assets.append(attrs["href"])
            if "icon" in (attrs.get("rel") or "").split():
                self.icons.append(attrs["href"])


def page_links(html: str) -> Links:
    links = Links()
    links.feed(html)
    return links


async def test_the_front_door_says_what_this_is_under_the_asgi_app_and_reads_nothing():
    response = await asgi_get("/")  # no database marker: a query would fail the test

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "Smart-meter readings in, Solana energy tokens out." in response.text
    links = page_links(response.text)
    assert "/favicon.ico" in links.icons and any(icon.endswith(".svg") for icon in links.icons)
    for asset in links.assets:
        assert (await asgi_get(asset)).status_code == 200, asset


async def test_the_favicon_is_an_icon_file_answered_at_the_root():
    response = await asgi_get("/favicon.ico")

    assert response.status_code == 200 and response.headers["content-type"] == "image/x-icon"
    assert response.content == FAVICON.read_bytes() and response.content.startswith(ICO_HEADER)
    assert "max-age" in response.headers["cache-control"]


@pytest.mark.django_db
def test_the_front_door_links_every_door_and_each_answers(client):
    links = page_links(client.get("/").content.decode())

    assert {"/dashboard/", "/api/docs/", "/admin/", "/health", "/ready", "/metrics"} <= set(links.anchors)
    # /ready asks every dependency (the chain's absence here is its honest 503); each other link is followed.
    for href in set(links.anchors) - {"/ready"}:
        answer = client.get(href)
        # The dashboard and the admin send a visitor to sign in first; everything else answers as it is.
        assert answer.status_code in (200, 302), href
        if answer.status_code == 302:
            assert answer.headers["location"].startswith(("/login", "/admin/login/")), href


@pytest.mark.django_db
def test_the_admin_is_branded_gridtoken_operations(client):
    html = client.get("/admin/login/").content.decode()

    assert "GridToken operations" in html and "Django administration" not in html
    assert "<title>Log in | GridToken operations</title>" in html
