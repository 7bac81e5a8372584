"""The settlement-window table and the held/flagged counts in a real headless Chromium (tests/realtime/test_browser.py
explains the set-up: uvicorn, the Redis layer, Debian's chromium and chromium-driver)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gridtoken.events import rfc3339
from minting.models import MintBatch
from tests.conftest import wait_until
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


def confirmed_batch(signature: str, *, base_units: int, readings: int, age: timedelta) -> MintBatch:
    settled = timezone.now() - age
    return MintBatch.objects.create(
        status=MintBatch.Status.CONFIRMED,
        signature=signature,
        raw_transaction=b"\x01",
        last_valid_block_height=100,
        mint_address="Mint111",
        reading_count=readings,
        total_token_amount=base_units,
        created_at=settled,
        settled_at=settled,
    )


def attribute(driver, selector: str, name: str) -> str | None:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name)


def test_an_operator_sees_the_fleet_figures_with_their_units_in_the_browser(
    processes, browser, people, producer, meter, second_meter, tmp_path
):
    operator = people.user(staff=True)
    operator.wallet_address = None  # an operator with no wallet and no meters of their own
    operator.save()
    for status in ("pending", "pending", "held", "failed", "minted"):
        people.reading(meter if status != "held" else second_meter, "1", status=status)
    people.reading(meter, "0", status="recorded")  # a zero interval: stored, nothing to mint
    confirmed_batch("OlderBatchSig", base_units=7 * 10**9, readings=7, age=timedelta(minutes=5))  # not this minute
    confirmed_batch("FleetBatchSig", base_units=2_500_000_000, readings=2, age=timedelta(seconds=5))
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})

    sign_in(browser, base, operator)

    assert text_of(browser, "#fig-readings-total") == "6" and text_of(browser, "#fig-meters-total") == "2"
    assert text_of(browser, "#fig-pending") == "2" and text_of(browser, "#fig-recorded") == "1"
    assert text_of(browser, "#fig-held") == "1" and text_of(browser, "#fig-failed") == "1"
    assert text_of(browser, "#fig-minted-per-minute") == "2.500000000 tokens/min"
    assert attribute(browser, "#fig-minted-per-minute", "title") == "2500000000 base units/min"
    assert text_of(browser, "#fig-minted-readings-per-minute") == "2"
    assert text_of(browser, "#fig-last-batch-status") == "confirmed"
    assert text_of(browser, "#fig-last-batch-signature") == "FleetBatchSig"
    assert text_of(browser, "#fig-last-batch-time").endswith("Z")
    assert text_of(browser, "#fig-last-batch-tokens") == "2.500000000 tokens"
    for empty_panel in ("#balances", "#meters", "#readings"):
        assert not browser.find_elements("css selector", empty_panel), empty_panel
    assert "No wallet yet" not in browser.page_source and "No meters registered" not in browser.page_source
    browser.set_window_size(1280, 1400)
    browser.save_screenshot(str(tmp_path / "operator-dashboard.png"))

    # The page refreshes the figures from stats.json; an amount past 2**53 base units must stay exact there.
    huge = 12_345_678_901_234_567_891
    confirmed_batch("HugeBatchSig", base_units=huge, readings=1, age=timedelta(seconds=1))
    wait_until(
        lambda: text_of(browser, "#fig-last-batch-signature") == "HugeBatchSig",
        timeout=60,
        message="the figures refreshing",
    )
    assert text_of(browser, "#fig-minted-per-minute") == "12345678903.734567891 tokens/min"
    assert attribute(browser, "#fig-minted-per-minute", "title") == f"{huge + 2_500_000_000} base units/min"
    assert attribute(browser, "#fig-last-batch-tokens", "title") == f"{huge} base units"
    assert text_of(browser, "#fig-readings-total") == "6" and text_of(browser, "#fig-recorded") == "1"
    browser.save_screenshot(str(tmp_path / "operator-dashboard-refreshed.png"))


def test_a_producer_keeps_their_own_panels_in_the_browser(processes, browser, people, producer, meter, tmp_path):
    minted = people.reading(meter, "1.25", status="minted", token_amount=1_250_000_000, mint_tx_signature="ProdSig")
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})

    sign_in(browser, base, producer)

    assert browser.find_elements("css selector", f'#balances tr[data-wallet="{producer.wallet_address}"]')
    assert text_of(browser, f'#meters tr[data-meter-id="{meter.pk}"] td') == meter.serial
    row = f'#readings tr[data-reading-id="{minted.pk}"]'
    wait_until(lambda: text_of(browser, f"{row} .tokens") == "1.250000000", timeout=60, message="the readings row")
    assert attribute(browser, f"{row} .tokens", "title") == "1250000000 base units"
    assert attribute(browser, f"{row} time", "datetime") == rfc3339(minted.submitted_at)
    assert text_of(browser, f"{row} time") == f"{minted.submitted_at:%Y-%m-%d %H:%M:%S}"  # one line, to the second
    assert text_of(browser, f"{row} .signature a") == "ProdSig"  # short enough to show whole
    assert not browser.find_elements("css selector", "#pipeline")
    browser.set_window_size(1280, 1000)
    browser.save_screenshot(str(tmp_path / "producer-dashboard.png"))
