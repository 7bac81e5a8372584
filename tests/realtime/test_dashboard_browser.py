"""The settlement-window table and the held/flagged counts in a real headless Chromium (tests/realtime/test_browser.py
explains the set-up: uvicorn, the Redis layer, Debian's chromium and chromium-driver)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from realtime.events import rfc3339
from tests.factories import ReadingFactory
from tests.realtime.test_browser import CHROMEDRIVER, CHROMIUM, browser, processes, sign_in, start_uvicorn, text_of
from tests.realtime.test_dashboard_windows import window_start

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists() or not CHROMEDRIVER.exists(), reason="needs Debian chromium + chromium-driver"
    ),
]
__all__ = ["browser", "processes"]  # fixtures, used by name


def test_the_operator_sees_window_sums_and_held_counts_in_the_browser(processes, browser, people, operator, meter):
    operator.is_superuser = True  # may open the readings admin the dashboard links to
    operator.save()
    start = window_start(2)
    plain = ReadingFactory(
        meter=meter,
        kwh_amount=Decimal("2.5"),
        generated_kwh=Decimal("3"),
        consumed_kwh=Decimal("0.5"),
        mintable_kwh=Decimal("2.5"),
        reading_timestamp=start + timedelta(minutes=1),
    )
    held = ReadingFactory(
        meter=meter,
        kwh_amount=Decimal("-1"),
        generated_kwh=Decimal("0"),
        consumed_kwh=Decimal("1"),
        mintable_kwh=Decimal("0"),
        reading_timestamp=start + timedelta(minutes=7),
        status="held",
        flags=["spike"],
    )
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})

    sign_in(browser, base, operator)

    row = f'#windows tr[data-meter-id="{meter.pk}"][data-window-start="{rfc3339(start)}"]'
    assert text_of(browser, f"{row} .generated") == "3.000000000 kWh"
    assert text_of(browser, f"{row} .consumed") == "1.500000000 kWh"
    assert text_of(browser, f"{row} .net") == "1.500000000 kWh"
    assert text_of(browser, f"{row} .held") == "1"
    assert text_of(browser, "#held-count") == "1"
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, '#flagged tr[data-flag="spike"] a').click()
    assert browser.current_url.endswith("/admin/meters/meterreading/?flag=spike")
    page = browser.page_source
    assert str(held.pk) in page and str(plain.pk) not in page
