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
from meters.history import FleetMinute, minute_of
from meters.models import MeterReading
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


def logged_in(user) -> Client:
    """A test client with ``user``'s session, made after the browser signed in (``sign_in``): the server's login
    re-hashes the tests' one-round password (tests/hashers.py), which ends every session made before."""
    client = Client()
    client.force_login(user)
    return client


def solar_day(meter) -> None:
    """A roof's readings every 15 minutes from 47 to 3 hours ago: a sun from 06:00 to 18:00 UTC against a
    steady house; minted when older than a day (a curve a person can judge the chart by)."""
    now = timezone.now()
    start = hour_start(47)
    rows = []
    for quarter in range(44 * 4):
        moment = start + timedelta(minutes=15 * quarter)
        hour = moment.hour + moment.minute / 60
        sun = Decimal(max(0, round(6 - abs(hour - 12), 2))) * Decimal("0.35") if 6 < hour < 18 else Decimal(0)
        house = Decimal("0.150") + (Decimal("0.250") if 17 <= hour < 21 else Decimal(0))
        net = sun - house
        minted = net > 0 and moment < now - timedelta(days=1)
        rows.append(MeterReading(
            user=meter.owner, meter=meter, wallet_address=meter.wallet_address, reading_timestamp=moment,
            kwh_amount=net, generated_kwh=sun, consumed_kwh=house, mintable_kwh=max(net, Decimal(0)),
            status="minted" if minted else "pending" if net > 0 else "recorded",
            token_amount=int(net * 10**9) if minted else None,
        ))  # fmt: skip
    MeterReading.objects.bulk_create(rows)


def test_the_producers_charts_draw_the_apis_figures_and_hover_shows_them_exactly(
    processes, browser, people, producer, meter, second_meter
):
    two_ago, one_ago = hour_start(2), hour_start(1)
    people.reading(meter, "2.5", generated_kwh=Decimal("3"), consumed_kwh=Decimal("0.5"), reading_timestamp=two_ago)
    people.reading(meter, "1.25", reading_timestamp=two_ago + timedelta(minutes=15), status="minted",
                   token_amount=1_250_000_000, mint_tx_signature="5" * 88)  # fmt: skip
    people.reading(second_meter, "4", reading_timestamp=one_ago, status="minted", token_amount=4_000_000_000)
    people.reading(second_meter, "0.125", reading_timestamp=timezone.now() - timedelta(days=3))
    solar_day(people.meter(producer, serial="SM-ROOF-3"))
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})
    browser.set_window_size(WIDTH, 1000)

    sign_in(browser, base, producer)
    client = logged_in(producer)
    api = client.get("/dashboard/energy.json").json()
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
    held = Decimal(api["tokens_held_base_units"][-1]).scaleb(-9)
    assert held > Decimal("5.25") and hovered(browser, "tokens", len(api["buckets"]) - 1)["Held"] == f"{held} tokens"
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


def earlier_hour(minute) -> None:
    """Minute rows from 60 to 7 minutes before ``minute`` (the one before the test's own is missing): a busy
    fleet whose minting stalls for a while, a person can judge the charts by."""
    stored = minted = flagged = 0
    rows = []
    for ago in range(60, 6, -1):
        arriving = 40 + (ago * 7) % 23
        stalled = 35 <= ago <= 45
        stored, minted = stored + arriving, minted + (0 if stalled else arriving + (25 if ago == 34 else 0))
        flagged += ago % 5 == 0
        backlog = stored - minted
        rows.append(FleetMinute(minute=minute - timedelta(minutes=ago), readings=stored, minted=minted,
                                flagged=flagged, pending=backlog, minting=0, awaiting_window=0,
                                held=flagged // 3, failed=1 if ago < 30 else 0))  # fmt: skip
    FleetMinute.objects.bulk_create(rows)


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
    earlier_hour(minute_of(now))
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})
    browser.set_window_size(WIDTH, 1000)

    sign_in(browser, base, operator)
    client = logged_in(operator)
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

    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, '[data-chart-span="fleet"][value="24h"]').click()
    wait_until(lambda: len(chart(browser, "waiting")["x"]) == 1440, timeout=10, message="the day's minutes")
    screenshot(browser, "operator-24h")
