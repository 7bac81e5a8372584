"""Django admin with its styling, in a real headless Chromium against uvicorn (tests/realtime/test_browser.py
explains the set-up). Without static files served the page still renders, unstyled: only the browser sees it."""

from __future__ import annotations

import urllib.request

import pytest

from meters.models import Meter, User
from tests.realtime.test_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    PAGE_TIMEOUT,
    browser,
    processes,
    start_uvicorn,
    wait_for,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists() or not CHROMEDRIVER.exists(), reason="needs Debian chromium + chromium-driver"
    ),
]
__all__ = ["browser", "processes"]  # fixtures, used by name

# The admin's base.css paints the header with --header-bg, #417690; an unstyled page leaves it transparent.
ADMIN_HEADER_BACKGROUND = "rgba(65, 118, 144, 1)"


def test_the_admin_changelist_is_styled_in_the_browser(processes, browser):
    from selenium.webdriver.common.by import By

    admin = User.objects.create_superuser(username="admin1", password="correct horse battery", email="a@x.test")
    Meter.objects.create(
        owner=admin, serial="STYLED-METER-1", wallet_address="9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
    )
    base = start_uvicorn(processes)

    browser.get(f"{base}/admin/login/?next=/admin/meters/meter/")
    browser.find_element(By.ID, "id_username").send_keys(admin.username)
    browser.find_element(By.ID, "id_password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: browser.current_url == f"{base}/admin/meters/meter/", PAGE_TIMEOUT, "the meters changelist")
    assert "STYLED-METER-1" in browser.page_source

    header = browser.find_element(By.ID, "header")
    assert header.value_of_css_property("background-color") == ADMIN_HEADER_BACKGROUND
    stylesheets = [
        link.get_attribute("href") for link in browser.find_elements(By.CSS_SELECTOR, "link[rel=stylesheet]")
    ]
    assert any(href.endswith("/static/admin/css/base.css") for href in stylesheets), stylesheets
    for href in stylesheets:
        with urllib.request.urlopen(href, timeout=10) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/css"), href
    # Every stylesheet the page links was parsed by the browser (a 404 HTML page yields no rules).
    rule_counts = browser.execute_script(
        "return Array.from(document.styleSheets).filter(s => s.href).map(s => s.cssRules.length)"
    )
    assert len(rule_counts) == len(stylesheets) and all(count > 0 for count in rule_counts), rule_counts
