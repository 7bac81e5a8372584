"""Simulate solar meters posting readings to the REST API exactly as devices and aggregators do.

1. Make sure the producer account exists (created in this database when missing; a wallet is assigned).
2. Get the user's API token with ``POST /api/auth/token`` (or from this database when no password is given).
3. Register each meter with ``POST /api/meters`` (which answers with its device key). A meter registered by an
   earlier run gets a fresh device key issued in this database (keys are shown once and never stored; its
   earlier device keys are revoked) and, with ``--sign``, a fresh Ed25519 key (none without). ``--batch``
   also issues a fleet key and re-announces every meter with ``POST /api/v1/simulator/meters/register``, as
   an aggregator does when it starts.
4. Walk a simulated clock forward one 15-minute interval per tick, from ``--backfill`` hours ago (or just
   after the meters' newest stored reading) to now, one tick every ``--interval`` seconds, then one tick at
   each real 15-minute boundary. Each tick posts every producing meter's reading: v1 body per meter (default),
   the legacy ``submit-reading`` body (``--legacy``), one batch post with the fleet key (``--batch``), or
   publishes the v1 body to ``gridtoken/meters/{serial}/readings`` at QoS 1 on a broker (``--mqtt URL``, for the
   ingester ``manage.py ingest_mqtt``; "published" counts what the broker acknowledged).
   Ticks that only replay stored readings (or fall at night) do not wait. ``--until-now`` stops once the
   clock reaches real time (load history and exit); ``--duration`` after so many seconds; Ctrl-C any time.
5. With ``--live``, once caught up, one tick every ``--interval`` seconds (at least 1) instead of one per
   real 15 minutes: readings stamped with the real time whose energy follows a compressed sun (one interval
   per tick, nights skipped; ``meters.simulator.live_readings``), so the meters never go quiet. The server must
   take readings that close (``TOKENIZATION_DUPLICATE_WINDOW_SECS`` below --interval; the demo's runs with 0).

The password comes from ``--password`` or, kept out of ``ps``, the ``SIMULATOR_PASSWORD`` environment variable
(the demo uses that); ``--mqtt`` without a URL publishes to the broker at ``MQTT_URL``, whose login stays out of
``ps`` too.

The simulator needs this database for steps 1-3 (run it where the server's database is reachable).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max
from django.utils import timezone
from rest_framework.authtoken.models import Token
from solders.keypair import Keypair

from meters.models import ApiKey, Meter, User
from meters.services.api_keys import api_key_create, api_key_revoke
from meters.simulator import INTERVAL, Reading, SimMeter, floor_interval, live_readings, make_meter, readings_at

KEY_NAME = "simulator"
MAX_BACKFILL_HOURS = 7 * 24 - 1  # readings older than READING_MAX_AGE_DAYS (7) are refused
ACCEPTED, DUPLICATE, REJECTED, ERROR, PUBLISHED = "accepted", "duplicate", "rejected", "error", "published"
MQTT_TOPIC = "gridtoken/meters/{serial}/readings"
PASSWORD_ENV = "SIMULATOR_PASSWORD"


class Simulator:
    def __init__(self, *, url: str, mode: str, stdout, timeout: float = 30.0, mqtt_url: str | None = None) -> None:
        self.url, self.mode, self.stdout = url.rstrip("/"), mode, stdout
        self.http = httpx.Client(base_url=self.url, timeout=timeout)
        self.fleet_key: str | None = None
        self.errors_shown = 0
        self.broker = _broker(mqtt_url) if mqtt_url else None

    # -- set-up ---------------------------------------------------------------------------------
    def ensure_user(self, username: str, password: str | None) -> tuple[User, str]:
        user = User.objects.filter(username=username).first()
        if user is None:
            if not password:
                raise CommandError(f"User {username!r} does not exist: pass --password to create it.")
            user = User.objects.create_user(username=username, password=password)
            self.stdout.write(f"Created producer {username!r}.")
        if not user.wallet_address:
            User.objects.filter(pk=user.pk).update(wallet_address=str(Keypair().pubkey()))
            user.refresh_from_db(fields=["wallet_address"])
        if password:
            response = self.http.post("/api/auth/token", json={"username": username, "password": password})
            if response.status_code != 200:
                raise CommandError(f"POST /api/auth/token for {username!r}: {response.status_code} {response.text}")
            return user, response.json()["token"]
        return user, Token.objects.get_or_create(user=user)[0].key

    def ensure_meter(self, user: User, token: str, meter: SimMeter) -> None:
        existing = Meter.objects.filter(serial=meter.serial).first()
        if existing is None:
            body = {
                "serial": meter.serial,
                "wallet_address": user.wallet_address,
                "meter_type": "solar",
                "location": f"{meter.latitude},{meter.longitude:.4f}",
                "zone_id": meter.zone_id,
            }
            if meter.keypair:
                body["public_key"] = meter.public_key
            response = self.http.post("/api/meters", json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 201:
                raise CommandError(f"POST /api/meters {meter.serial}: {response.status_code} {response.text}")
            meter.api_key = response.json()["api_key"]
            return
        if existing.owner_id != user.pk:
            raise CommandError(f"Meter {meter.serial} belongs to another account; choose another --prefix.")
        # Keys are shown once: issue this run a fresh one; the simulated device's earlier keys are revoked.
        for old in ApiKey.objects.filter(meter=existing, scope=ApiKey.Scope.DEVICE, revoked_at__isnull=True):
            api_key_revoke(key=old)
        meter.api_key = api_key_create(owner=user, scope=ApiKey.Scope.DEVICE, meter=existing, name=KEY_NAME)[1]
        Meter.objects.filter(pk=existing.pk).update(public_key=meter.public_key)

    def ensure_fleet(self, user: User, meters: list[SimMeter]) -> None:
        for old in ApiKey.objects.filter(owner=user, scope=ApiKey.Scope.FLEET, name=KEY_NAME, revoked_at__isnull=True):
            api_key_revoke(key=old)
        self.fleet_key = api_key_create(owner=user, scope=ApiKey.Scope.FLEET, name=KEY_NAME)[1]
        for meter in meters:
            body = {"meter_id": meter.serial, "wallet_address": user.wallet_address, "meter_type": "solar"}
            response = self.http.post("/api/v1/simulator/meters/register", json=body, headers=self._key(self.fleet_key))
            if response.status_code not in (200, 201):
                raise CommandError(f"register {meter.serial}: {response.status_code} {response.text}")

    # -- posting --------------------------------------------------------------------------------
    @staticmethod
    def _key(api_key: str) -> dict:
        return {"Authorization": f"Bearer {api_key}"}

    def _post(self, path: str, body, api_key: str) -> httpx.Response:
        """POST, waiting out 429s as a well-behaved device does (Retry-After)."""
        while True:
            response = self.http.post(path, json=body, headers=self._key(api_key))
            if response.status_code != 429:
                return response
            time.sleep(min(int(response.headers.get("Retry-After", "1")), 60))

    def _outcome(self, response: httpx.Response) -> str:
        if response.status_code == 201:
            return ACCEPTED
        if response.status_code == 200 and response.json().get("duplicate"):
            return DUPLICATE
        self._show_error(response.status_code, response.text)
        return REJECTED if response.status_code < 500 else ERROR

    def _show_error(self, status, text: str) -> None:
        if self.errors_shown < 5:
            self.errors_shown += 1
            self.stdout.write(f"  refused ({status}): {text[:300]}")

    def post_one(self, reading: Reading) -> str:
        try:
            if self.mode == "legacy":
                response = self._post("/api/meters/submit-reading", reading.legacy_body(), reading.meter.api_key)
            else:
                path = f"/api/v1/meters/{reading.meter.serial}/readings"
                response = self._post(path, reading.v1_body(), reading.meter.api_key)
        except httpx.HTTPError as exc:
            self._show_error("transport", str(exc))
            return ERROR
        return self._outcome(response)

    def post_batch(self, readings: list[Reading]) -> Counter:
        body = {"readings": [reading.v1_body(with_serial=True) for reading in readings]}
        try:
            response = self._post("/api/v1/meters/batch/readings", body, self.fleet_key)
        except httpx.HTTPError as exc:
            self._show_error("transport", str(exc))
            return Counter({ERROR: len(readings)})
        if response.status_code != 200:
            self._show_error(response.status_code, response.text)
            return Counter({REJECTED if response.status_code < 500 else ERROR: len(readings)})
        results = response.json()["results"]
        for result in results:
            if result["status"] == REJECTED:
                self._show_error("item", str(result.get("error")))
        return Counter(result["status"] for result in results)

    def publish(self, readings: list[Reading]) -> Counter:
        """Publish each reading at QoS 1 and wait for the broker's acknowledgements."""
        sent = [
            (reading, self.broker.publish(MQTT_TOPIC.format(serial=reading.meter.serial), _json(reading.v1_body()), 1))
            for reading in readings
        ]
        tally: Counter = Counter()
        for _, info in sent:
            try:
                info.wait_for_publish(timeout=30)
            except (RuntimeError, ValueError) as exc:
                self._show_error("mqtt", str(exc))
            tally[PUBLISHED if info.is_published() else ERROR] += 1
        return tally

    def post(self, readings: list[Reading], pool: ThreadPoolExecutor) -> Counter:
        if not readings:
            return Counter()
        if self.mode == "mqtt":
            return self.publish(readings)
        if self.mode == "batch":
            return self.post_batch(readings)
        return Counter(pool.map(self.post_one, readings))


def _json(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _broker(url: str):
    """A connected MQTT client publishing for the simulated meters (one gateway connection for all)."""
    parts = urlsplit(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"simulator-{time.monotonic_ns()}")
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    if parts.scheme == "mqtts":
        client.tls_set()
    try:
        client.connect(parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883))
    except OSError as exc:
        raise CommandError(f"Cannot reach the MQTT broker at {parts.hostname}:{parts.port}: {exc}") from None
    client.loop_start()
    return client


def resume_point(meters: list[SimMeter], start):
    """The first interval after every meter's newest stored reading, when that is later than ``start``."""
    newest = Meter.objects.filter(serial__in=[m.serial for m in meters]).annotate(
        newest=Max("readings__reading_timestamp")
    )
    latest = [row.newest for row in newest]
    if len(latest) < len(meters) or any(moment is None for moment in latest):
        return start
    return max(start, floor_interval(min(latest)) + INTERVAL)


def _stop(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Simulate N solar meters posting readings through the public REST API (or MQTT): replay --backfill hours, "
        "then follow real time (--live: keep reporting every --interval s with a compressed sun)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--meters", type=int, default=5, help="number of meters (1..1000)")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between ticks while catching up")
        parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
        parser.add_argument("--until-now", action="store_true", help="stop once the backfill reaches real time")
        parser.add_argument(
            "--live", action="store_true",
            help="once caught up, keep reporting every --interval s (>= 1), stamped now, energy from a compressed "
            "sun (one 15-minute interval per report, nights skipped; the server's TOKENIZATION_DUPLICATE_WINDOW_SECS "
            "must be below --interval); without it, one report per real 15 minutes",
        )  # fmt: skip
        parser.add_argument(
            "--backfill", type=float, default=0, help=f"start this many hours ago (<= {MAX_BACKFILL_HOURS})"
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--batch", action="store_true", help="one batch post per tick with a fleet key")
        mode.add_argument("--legacy", action="store_true", help="the legacy POST /api/meters/submit-reading body")
        mode.add_argument(
            "--mqtt", metavar="URL", nargs="?", const="", default=None,
            help="publish to this broker (mqtt://host:port); without URL, to MQTT_URL's (its login stays out of ps)",
        )  # fmt: skip
        parser.add_argument("--sign", action="store_true", help="sign each reading with the meter's Ed25519 key")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the API's base URL")
        parser.add_argument("--username", default="demo-producer")
        parser.add_argument(
            "--password", default=None,
            help=f"creates the user when missing; gets the token via API (or {PASSWORD_ENV}, which ps does not show)",
        )  # fmt: skip
        parser.add_argument("--prefix", default=None, help="meter serial prefix (default SIM-<username>)")
        parser.add_argument("--seed", type=int, default=0, help="same seed, same readings (replays are idempotent)")

    def handle(self, *args, **options):
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if not 1 <= options["meters"] <= 1000:
            raise CommandError("--meters must be from 1 to 1000.")
        if not 0 <= options["backfill"] <= MAX_BACKFILL_HOURS:
            raise CommandError(f"--backfill must be from 0 to {MAX_BACKFILL_HOURS} hours (older readings are refused).")
        if options["interval"] < 0:
            raise CommandError("--interval must be >= 0.")
        if options["mqtt"] == "":
            options["mqtt"] = settings.MQTT.url
        if options["password"] is None:
            options["password"] = os.environ.get(PASSWORD_ENV) or None
        mqtt_mode = options["mqtt"] is not None
        mode = "batch" if options["batch"] else "legacy" if options["legacy"] else "mqtt" if mqtt_mode else "v1"
        prefix = options["prefix"] or "SIM-" + re.sub(r"[^A-Za-z0-9._-]", "-", options["username"])
        serials = [f"{prefix}-{i:03d}" for i in range(1, options["meters"] + 1)]
        meters = [make_meter(serial, seed=options["seed"], sign=options["sign"]) for serial in serials]
        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            self.simulate(meters, mode, options)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def simulate(self, meters: list[SimMeter], mode: str, options) -> None:
        seed = options["seed"]
        sim = Simulator(url=options["url"], mode=mode, stdout=self.stdout, mqtt_url=options["mqtt"])
        with sim.http:  # closing it ends keep-alive connections (and the server threads holding them)
            try:
                user, token = sim.ensure_user(options["username"], options["password"])
                for meter in meters:
                    sim.ensure_meter(user, token, meter)
                if mode == "batch":
                    sim.ensure_fleet(user, meters)
            except httpx.HTTPError as exc:
                raise CommandError(f"Cannot reach {options['url']}: {exc}") from None
            start = floor_interval(timezone.now() - timedelta(hours=options["backfill"]))
            clock = resume_point(meters, start)
            signed = ", signed" if options["sign"] else ""
            self.stdout.write(
                f"Simulating {len(meters)} meters of {user.username} ({mode}{signed}) "
                f"against {options['url']} from {clock:%Y-%m-%d %H:%M}Z"
            )
            try:
                totals = self.run(sim, meters, clock, options, seed)
            finally:
                if sim.broker is not None:
                    sim.broker.disconnect()
                    sim.broker.loop_stop()
        self.stdout.write(f"Done: {summary(totals)}")

    def run(self, sim: Simulator, meters, clock, options, seed) -> Counter:
        totals: Counter = Counter()
        deadline = time.monotonic() + options["duration"] if options["duration"] is not None else float("inf")

        def pause(seconds: float) -> None:
            time.sleep(max(0.0, min(seconds, deadline - time.monotonic())))

        # Live phase: the last stamp sent (each meter's readings must go forward) and the compressed sun's clock.
        stamp, sun = clock - INTERVAL, clock
        with ThreadPoolExecutor(max_workers=min(8, len(meters))) as pool:
            try:
                while time.monotonic() < deadline:
                    ahead = (clock - timezone.now()).total_seconds()
                    if ahead > 0 and options["until_now"]:
                        break
                    if ahead > 0 and options["live"]:
                        stamp = max(timezone.now().replace(microsecond=0), stamp + timedelta(seconds=1))
                        sun, readings = live_readings(meters, stamp, sun, seed=seed)
                        tally = sim.post(readings, pool)
                        totals.update(tally)
                        total = totals[ACCEPTED] + totals[PUBLISHED]
                        self.stdout.write(
                            f"{stamp:%H:%M:%S}Z live (sun {sun:%H:%M}) {summary(tally)} | sent so far {total}"
                        )
                        sun += INTERVAL
                        pause(max(options["interval"], 1.0))
                        continue
                    if ahead > 0:  # caught up with real time: wait for the interval to end
                        pause(min(ahead, 1.0))
                        continue
                    tally = sim.post(readings_at(meters, clock, seed=seed), pool)
                    totals.update(tally)
                    if tally:
                        total = totals[ACCEPTED] + totals[PUBLISHED]
                        self.stdout.write(f"{clock:%Y-%m-%d %H:%M}Z {summary(tally)} | sent so far {total}")
                    stamp, sun = clock, clock + INTERVAL
                    clock += INTERVAL
                    if tally[ACCEPTED] or tally[PUBLISHED]:
                        pause(options["interval"])
            except KeyboardInterrupt:
                self.stdout.write("Stopping.")
        return totals


def summary(tally: Counter) -> str:
    kinds = (ACCEPTED, PUBLISHED, DUPLICATE, REJECTED, ERROR)
    return ", ".join(f"{kind} {tally[kind]}" for kind in kinds if tally[kind]) or "none"
