"""The dashboard's 24/7 chart in a real headless Chromium (tests/realtime/test_browser.py explains the set-up):
a consumer picks a month, the page draws the report API's hourly demand and matched Wh, shows the score, and
links the printable page, which renders the same figures."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from matching.models import Match
from tests.conftest import wait_until
from tests.matching.helpers import consume, make_consumer
from tests.matching.test_report import matched
from tests.meters.test_plans import bearer
from tests.realtime.test_browser import BROWSER_MARKS, browser, chart, processes, sign_in, start_uvicorn, text_of
from tests.realtime.test_charts_browser import drawn, hovered, screenshot

pytestmark = BROWSER_MARKS
__all__ = ["browser", "matched", "processes"]  # fixtures, used by name
MONTH = "2026-03"


def test_the_consumers_chart_draws_the_reports_hours_and_links_the_printable_page(processes, browser, matched):
    matched.user.set_password("correct horse battery")
    matched.user.save()
    other = make_consumer()  # a second consumer of another account: never offered on this page
    consume(other, 0, ["1"])
    api = bearer(matched.user).get(f"/api/matching/consumers/{matched.id}/report?month={MONTH}").json()
    base = start_uvicorn(processes)
    browser.set_window_size(1400, 1200)

    sign_in(browser, base, matched.user)
    options = browser.find_elements(By.CSS_SELECTOR, "#matching-consumer option")
    assert [o.get_attribute("value") for o in options] == [str(matched.id)]
    browser.execute_script(
        "const m = document.getElementById('matching-month'); m.value = arguments[0];"
        "m.dispatchEvent(new Event('change'));",
        MONTH,
    )
    wait_until(lambda: chart(browser, "matching"), timeout=30, message="the matching chart")

    drew = chart(browser, "matching")
    assert [s["label"] for s in drew["series"]] == ["Demand", "Matched"]
    assert drew["series"][0]["values"] == drawn([h["demand_wh"] for h in api["hours"]])
    assert drew["series"][1]["values"] == drawn([h["matched_wh"] for h in api["hours"]])
    assert hovered(browser, "matching", 0) == {"Demand": "2000.4 Wh", "Matched": "2000 Wh"}
    assert text_of(browser, "#matching-score") == "61.5 %" and text_of(browser, "#matching-unmatched") == "2 of 5"
    screenshot(browser, "consumer-matching")

    browser.get(browser.find_element(By.ID, "matching-page").get_attribute("href"))
    assert text_of(browser, "#score").startswith("61.5 %") and text_of(browser, "#annual").startswith("73.8 %")
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "td.certs a")}
    assert links == {f"{base}/api/certificates/verify/{b}" for b in Match.objects.values_list("bundle_id", flat=True)}
