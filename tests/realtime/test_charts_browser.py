"""The dashboard's charts in a real headless Chromium (tests/realtime/test_browser.py explains the set-up): the
points uPlot draws and the exact values its legend shows on hover are the chart JSON's figures, which
tests/realtime/test_charts.py checks against the seeded readings. Screenshots at 1,400 px go to
``CHART_SHOTS`` when it names a folder, for a person to look at."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.test import Client
from django.utils import timezone

from gridtoken.events import rfc3339
from meters.history import minute_of
from meters.services.rollups import fleet_minute_record
from tests.conftest import wait_until
from tests.realtime.test_browser import BROWSER_MARKS, browser, chart, processes, sign_in, start_uvicorn
from tests.realtime.test_charts import hour_start

pytestmark = BROWSER_MARKS
__all__ = ["browser", "processes"]  # fixtures, used by name
WIDTH = 1400


def hovered(driver, name: str, index: int) -> dict[str, str]:
    """The chart's legend (label -> value text) with the cursor on point ``index``, as hover shows it."""
    return driver.execute_script(
        """
        const plot = window.GridTokenCharts.charts[arguments[0]].plot;
        plot.setCursor({left: plot.valToPos(plot.data[0][arguments[1]], "x"), top: 10});
        const rows = Array.from(plot.root.querySelectorAll(".u-legend .u-series")).slice(1);
        return Object.fromEntries(rows.map((row) => [row.querySelector(".u-label").textContent,
            row.querySelector(".u-value").textContent]));
        """,
        name,
        index,
    )


def drawn(values: list[str | int | None]) -> list[float | None]:
    return [None if value is None else float(Decimal(value)) for value in values]


def screenshot(driver, name: str) -> None:
    """The whole page at WIDTH px into CHART_SHOTS (when set), the cursor off the charts."""
    folder = os.environ.get("CHART_SHOTS")
    if not folder:
        return
    driver.execute_script(
        "Object.values(window.GridTokenCharts.charts).forEach((c) => c.plot.setCursor({left: -10, top: -10}))"
    )
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, height + 120)
    Path(folder).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_the_producers_charts_draw_the_apis_figures_and_hover_shows_them_exactly(
    processes, browser, people, producer, meter, second_meter
):
    two_ago, one_ago = hour_start(2), hour_start(1)
    people.reading(meter, "2.5", generated_kwh=Decimal("3"), consumed_kwh=Decimal("0.5"), reading_timestamp=two_ago)
    people.reading(meter, "1.25", reading_timestamp=two_ago + timedelta(minutes=15), status="minted",
                   token_amount=1_250_000_000, mint_tx_signature="5" * 88)  # fmt: skip
    people.reading(second_meter, "4", reading_timestamp=one_ago, status="minted", token_amount=4_000_000_000)
    people.reading(second_meter, "0.125", reading_timestamp=timezone.now() - timedelta(days=3))
    client = Client()
    client.force_login(producer)
    api = client.get("/dashboard/energy.json").json()
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})
    browser.set_window_size(WIDTH, 1000)

    sign_in(browser, base, producer)
    wait_until(lambda: chart(browser, "energy") and chart(browser, "tokens"), timeout=30, message="the charts")

    energy, tokens = chart(browser, "energy"), chart(browser, "tokens")
    assert energy["x"] == [datetime.fromisoformat(b).timestamp() for b in api["buckets"]]
    assert [s["label"] for s in energy["series"]] == ["Generated", "Consumed", "Net", "Minted"]
    for series, name in zip(energy["series"], ("generated", "consumed", "net", "minted"), strict=True):
        assert series["values"] == drawn(api["total"][name]), name
    assert tokens["series"][0]["values"] == drawn([int(v) / 10**9 for v in api["tokens_held_base_units"]])
    at = api["buckets"].index(rfc3339(two_ago))
    assert hovered(browser, "energy", at) == {
        "Generated": "4.250000000 kWh",
        "Consumed": "0.500000000 kWh",
        "Net": "3.750000000 kWh",
        "Minted": "1.250000000 kWh",
    }
    assert hovered(browser, "tokens", len(api["buckets"]) - 1)["Held"] == "5.250000000 tokens"
    screenshot(browser, "producer-48h")

    # One meter alone, then 30 days by day: the page asks energy.json again and draws what it answers.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "energy-meter")).select_by_visible_text(second_meter.serial)
    wait_until(lambda: chart(browser, "energy")["series"][0]["values"][-2] == 4.0, timeout=10, message="one meter")
    browser.find_element(By.CSS_SELECTOR, '[data-chart-span="energy"][value="30d"]').click()
    days = client.get("/dashboard/energy.json?span=30d").json()
    second = next(m for m in days["meters"] if m["serial"] == second_meter.serial)
    wait_until(lambda: len(chart(browser, "energy")["x"]) == 30, timeout=10, message="the daily chart")
    assert chart(browser, "energy")["series"][0]["values"] == drawn(second["generated"])
    assert "0.125" in second["generated"][-4] + second["generated"][-3]  # three days ago, by UTC day
    screenshot(browser, "producer-30d-one-meter")


def test_the_operators_charts_draw_the_fleets_minutes(processes, browser, people, producer, meter):
    operator = people.user(staff=True)
    operator.wallet_address = None
    operator.save()
    now = timezone.now()
    for minutes_ago, new in ((5, 3), (4, 8), (3, 2), (1, 5)):  # minute -2 has no row: a gap
        for _ in range(new):
            people.reading(meter, "1")
        people.reading(meter, "1", status="held", flags=["spike"])
        fleet_minute_record(now=now - timedelta(minutes=minutes_ago))
    client = Client()
    client.force_login(operator)
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})
    browser.set_window_size(WIDTH, 1000)

    sign_in(browser, base, operator)
    wait_until(lambda: chart(browser, "throughput") and chart(browser, "waiting"), timeout=30, message="the charts")

    def same_as_api() -> bool:  # the page refreshes every 30 s: a minute may turn between its read and ours
        api = client.get("/dashboard/fleet.json").json()
        throughput, waiting = chart(browser, "throughput"), chart(browser, "waiting")
        return [s["values"] for s in throughput["series"] + waiting["series"]] == [
            api[name] for name in ("readings_in", "minted", "flagged", "backlog", "held", "failed")
        ]

    wait_until(same_as_api, timeout=45, message="the charts drawing fleet.json's figures")
    api = client.get("/dashboard/fleet.json").json()
    index = {stamp: i for i, stamp in enumerate(api["buckets"])}
    at = [index[rfc3339(minute_of(now) - timedelta(minutes=k))] for k in range(6)]  # at[k]: k minutes ago
    assert [api["readings_in"][at[k]] for k in (5, 4, 3, 2, 1)] == [None, 9, 3, None, None]
    assert [api["held"][at[k]] for k in (5, 4, 3, 2, 1)] == [1, 2, 3, None, 4]
    assert hovered(browser, "throughput", at[4]) == {"Stored": "9 readings/min", "Minted": "0 readings/min",
                                                     "Flagged": "1 readings/min"}  # fmt: skip
    assert hovered(browser, "throughput", at[2])["Stored"] == "—"
    screenshot(browser, "operator-1h")
