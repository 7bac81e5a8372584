"""End to end in a real headless Chromium: the ASGI app under uvicorn, the Redis layer, the dashboard's JS.

Nothing here downloads a browser or a driver: Selenium is pointed at the Debian packages' binaries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import call_command

from gridtoken import events
from meters.models import MeterReading
from meters.services.api_keys import api_key_create
from tests.conftest import ROOT, database_url, free_port, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_TIMEOUT = 60  # generous deadlines for waiting on the page; nothing asserts how fast it was


def wait_for(predicate, timeout: float, what: str):
    return wait_until(predicate, timeout=timeout, interval=0.1, message=what)


# Every browser test module's marks: a real server (committed data), a real Chromium.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists() or not CHROMEDRIVER.exists(), reason="needs Debian chromium + chromium-driver"
    ),
]
pytestmark = BROWSER_MARKS


class Process:
    def __init__(self, command: list[str], env: dict, log: Path) -> None:
        self.log = log
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def processes(tmp_path):
    """Start subprocesses against the test database and this run's Redis; all stop before the flush."""
    started: list[Process] = []
    redis.Redis.from_url(settings.SERVICE.redis_url).flushdb()  # no stale tasks or group members

    def start(name: str, command: list[str], extra_env: dict | None = None) -> Process:
        env = {
            **os.environ,
            "DEBUG": "true",
            "DB_POOL": "true",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.SERVICE.redis_url,
            **(extra_env or {}),
        }
        process = Process(command, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


def start_uvicorn(processes, extra_env: dict | None = None) -> str:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "gridtoken.asgi:application", "--host", "127.0.0.1"]
    server = processes("uvicorn", [*command, "--port", str(port), "--no-access-log"], extra_env)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert server.process.poll() is None, server.output()
        try:
            with urllib.request.urlopen(f"{base}/login", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(answers, 60, "uvicorn answering")
    return base


def chromium(tmp_path, *arguments: str):
    """Headless Debian Chromium with a profile of its own under ``tmp_path``, plus ``arguments``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *arguments,
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path)
    yield driver
    driver.quit()


def sign_in(driver, base: str, user) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/dashboard/")
    assert driver.current_url.startswith(f"{base}/login")  # the dashboard needs a session
    driver.find_element(By.ID, "id_username").send_keys(user.username)
    driver.find_element(By.ID, "id_password").send_keys("correct horse battery")
    driver.find_element(By.ID, "sign-in").click()
    wait_for(lambda: driver.current_url == f"{base}/dashboard/", PAGE_TIMEOUT, "landing on the dashboard")
    wait_for(lambda: text_of(driver, "#connection") == "live", PAGE_TIMEOUT, "the WebSocket going live")
    user.refresh_from_db()  # the server's login re-hashed the password (tests/hashers.py): this object's is stale


def text_of(driver, selector: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.CSS_SELECTOR, selector).text.strip()
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def chart(driver, name: str) -> dict | None:
    """What the page's chart ``name`` draws: its x values, and each series' label and y values."""
    return driver.execute_script(
        """
        const entry = window.GridTokenCharts && window.GridTokenCharts.charts[arguments[0]];
        if (!entry || !entry.plot || !entry.plot.data[0].length) return null;
        return {x: entry.plot.data[0], series: entry.plot.series.slice(1).map((s, i) => ({label: s.label,
            values: entry.plot.data[i + 1]}))};
        """,
        name,
    )


def row_status(driver, reading_id: str) -> str | None:
    return text_of(driver, f'tr[data-reading-id="{reading_id}"] .status')


def submit_reading(base: str, meter, kwh: str) -> str:
    """Through the REST API with the meter's device key, as the meter would."""
    _key, raw_key = api_key_create(owner=meter.owner, scope="device", meter=meter)
    body = json.dumps({"kwh_amount": kwh, "reading_timestamp": events.rfc3339()}).encode()
    request = urllib.request.Request(
        f"{base}/api/meters/submit-reading", body, {"Content-Type": "application/json", "X-API-Key": raw_key}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())["id"]


def test_submitted_reading_appears_live_on_the_owners_dashboard_only(
    processes, browser, people, producer, meter, neighbour_meter
):
    base = start_uvicorn(processes, {"TOKENIZATION_AUTO_MINT_ENABLED": "false"})
    sign_in(browser, base, producer)
    assert text_of(browser, "#readings tbody") == ""

    neighbours = people.reading(neighbour_meter, "8")
    events.publish([events.reading_received(neighbours)])
    reading_id = submit_reading(base, meter, "2.5")

    wait_for(lambda: row_status(browser, reading_id) == "pending", PAGE_TIMEOUT, "the reading appearing as pending")
    row = text_of(browser, f'tr[data-reading-id="{reading_id}"]')
    assert meter.serial in row and "2.5" in row
    assert row_status(browser, str(neighbours.pk)) is None
    feed = text_of(browser, "#feed")
    assert "meter_reading_received" in feed and neighbour_meter.serial not in feed
    assert MeterReading.objects.get(pk=reading_id).status == "pending"


def test_operator_sees_everyones_events_and_switches_auto_mint_from_the_page(
    processes, browser, people, operator, neighbour_meter
):
    from selenium.webdriver.common.by import By

    from minting.models import MintingControl

    base = start_uvicorn(processes)
    sign_in(browser, base, operator)
    assert text_of(browser, "#fig-auto-mint") == "on"

    browser.find_element(By.ID, "toggle-auto-mint").click()
    wait_for(lambda: text_of(browser, "#fig-auto-mint") == "off", PAGE_TIMEOUT, "auto-mint showing off")
    assert MintingControl.objects.get(id=1).auto_mint_enabled is False
    assert text_of(browser, "#toggle-message") == ""

    backlog = chart(browser, "waiting")["series"][0]["values"][-1]  # this minute's, read from the fleet rollup
    reading = people.reading(neighbour_meter, "3")
    batch = events.batch_completed(batch_id="b-e2e", total_readings=1, successful_mints=1, failed_mints=0)
    events.publish([events.reading_received(reading), batch])
    wait_for(lambda: "batch: 1/1 minted" in (text_of(browser, "#feed") or ""), PAGE_TIMEOUT, "the batch event")
    # The fleet charts are read again on the event (their own poll is every 30 s: too slow for this wait).
    wait_for(lambda: chart(browser, "waiting")["series"][0]["values"][-1] == backlog + 1, 20, "the backlog chart")
    feed = text_of(browser, "#feed")
    assert f"{neighbour_meter.serial} 3 kWh received" in feed  # another user's reading, as operators see all
    assert row_status(browser, str(reading.pk)) is None  # the readings table stays the operator's own


def test_submitted_reading_turns_minted_on_the_page_through_the_real_pipeline(
    processes, browser, people, settings, localnet, tmp_path
):
    """The minted step is the pipeline's own: the on-submit trigger and a Celery worker on the local chain.

    No beat runs, so the reading is minted only if the submit itself asked for it.
    """
    from solders.keypair import Keypair

    producer = people.user()
    producer.wallet_address = str(Keypair().pubkey())
    producer.save()
    meter = people.meter(producer, serial="SM-E2E-MINT")
    keypair = tmp_path / "authority.json"
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=localnet.url, keypair_path=keypair)
    call_command("chain_init", "--new-mint", stdout=open(os.devnull, "w"))  # noqa: SIM115
    chain_env = {"SOLANA_RPC_URL": localnet.url, "SOLANA_KEYPAIR_PATH": str(keypair)}
    celery = [sys.executable, "-m", "celery", "-A", "gridtoken"]
    worker = processes(
        "worker", [*celery, "worker", "--pool=solo", "--without-gossip", "--without-mingle", "-l", "INFO"], chain_env
    )
    wait_for(lambda: b" ready." in worker.log.read_bytes() or worker.process.poll() is not None, 60, "worker ready")
    assert worker.process.poll() is None, worker.output()
    base = start_uvicorn(processes, chain_env)
    sign_in(browser, base, producer)

    reading_id = submit_reading(base, meter, "1.5")
    wait_for(lambda: row_status(browser, reading_id) in ("pending", "minted"), PAGE_TIMEOUT, "the reading appearing")
    wait_for(lambda: row_status(browser, reading_id) == "minted", 120, "the reading turning minted")

    reading = MeterReading.objects.get(pk=reading_id)
    assert reading.status == "minted" and reading.mint_tx_signature
    link = browser.find_element("css selector", f'tr[data-reading-id="{reading_id}"] .signature a')
    signature = reading.mint_tx_signature
    assert link.get_attribute("data-signature") == signature and link.get_attribute("title") == signature
    assert link.text == f"{signature[:8]}…{signature[-8:]}"  # abbreviated; the copy button copies it whole
    copy = browser.find_element("css selector", f'tr[data-reading-id="{reading_id}"] .signature button.copy')
    assert copy.get_attribute("data-copy") == signature
    assert "tokens_minted" in text_of(browser, "#feed")
    balance = f'#balances tr[data-wallet="{producer.wallet_address}"] .balance'
    wait_for(lambda: text_of(browser, balance) == "1.500000000", PAGE_TIMEOUT, "the chain balance showing")
    # The charts follow the events (the producer's page polls nothing): this hour's minted energy and the
    # tokens held, as energy.json says.
    wait_for(lambda: chart(browser, "energy")["series"][3]["values"][-1] == 1.5, PAGE_TIMEOUT, "the minted energy")
    assert chart(browser, "energy")["series"][0]["values"][-1] == 1.5  # generated
    assert chart(browser, "tokens")["series"][0]["values"][-1] == 1.5  # held
