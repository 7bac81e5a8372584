"""The soak's MQTT door: a private Mosquitto, meters publishing through it, poison messages, and their audit.

``--mqtt-meters`` meters (no API keys) publish one GridToken JSON reading per 15-minute slot each, QoS 1, to
``gridtoken/meters/{serial}/readings``; ``manage.py ingest_mqtt`` (the ``ingester`` role, restarted by the
supervisor like any other) stores them. Every ``--poison-every`` s a poison message goes to a random one of
those meters: a reading carrying ``SOAK-POISON-<n>``, which the GridToken format turns into an unexpected
exception (``bench/poison_hook.py``, loaded only by the soak's ingester command line: no real message provokes a
bug on purpose, and the fix for the numbers that did leaves none).

The audit: every published reading stored exactly once (by meter and timestamp), every poison message a dead
letter of door ``mqtt``, and no ingester restart at all (the chaos never kills the ingester, so any restart is
one a message caused). How long readings took to be stored is reported against one progress line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

TOPIC = "gridtoken/meters/{serial}/readings"
MARKER = "SOAK-POISON"
# Runs manage.py with the poison hook loaded first; sys.argv then reads as ``manage.py ingest_mqtt ...``.
BOOTSTRAP = "import runpy, sys; import bench.poison_hook; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"  # noqa: E501


class PrivateMosquitto:
    """``mosquitto`` on a free port of 127.0.0.1, anonymous, queueing without limit for the ingester's session."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.port, self.dir = port, workdir / "mosquitto"
        self.dir.mkdir()
        self.url = f"mqtt://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        owner = ["user root"] if os.geteuid() == 0 else []
        conf.write_text("\n".join([f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                                   "max_queued_messages 0", *owner]) + "\n")  # fmt: skip
        log = open(self.dir / "mosquitto.log", "ab")  # noqa: SIM115 (mosquitto writes to it until it stops)
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"private mosquitto did not start: {self.dir / 'mosquitto.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def ingester_command(python: str, env: dict[str, str], broker: PrivateMosquitto) -> tuple[list[str], dict[str, str]]:
    env = {**env, "MQTT_URL": broker.url, "MQTT_TOPICS": "gridtoken", "MQTT_SHARE_GROUP": "soak",
           "MQTT_BATCH_MAX": "200", "MQTT_BATCH_MS": "50"}  # fmt: skip
    return [python, "-c", BOOTSTRAP, "manage.py", "ingest_mqtt", "--client-id", "soak-ingester"], env


def create_meters(count: int, owners: list) -> dict[str, str]:
    """The MQTT meters, wallet by serial."""
    from solders.keypair import Keypair

    from meters.models import Meter

    meters = Meter.objects.bulk_create(
        [
            Meter(serial=f"SOAK-MQTT-{i:05d}", owner=owners[i % len(owners)], wallet_address=str(Keypair().pubkey()))
            for i in range(count)
        ]
    )
    return {meter.serial: meter.wallet_address for meter in meters}


class MqttLoad:
    """Publishes each meter's reading per slot (``published``: serial, timestamp, time the broker took it) and
    a poison message every ``poison_every`` s (``poisons``: time, serial, marker)."""

    def __init__(self, broker: PrivateMosquitto, serials: list[str], *, base: datetime, interval: float,
                 stop_at: float, poison_every: float) -> None:  # fmt: skip
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.serials, self.base, self.interval, self.stop_at = serials, base, interval, stop_at
        self.poison_every = poison_every
        self.published: list[tuple[str, str, float]] = []
        self.poisons: list[tuple[float, str, str]] = []
        self.errors = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-meters", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.threads = [threading.Thread(target=self.readings, daemon=True)]
        if poison_every > 0 and serials:
            self.threads.append(threading.Thread(target=self.poison, daemon=True))
        for thread in self.threads:
            thread.start()

    def send(self, serial: str, body: dict) -> bool:
        info = self.client.publish(TOPIC.format(serial=serial), json.dumps(body), qos=1)
        try:
            info.wait_for_publish(10)
            return info.is_published()
        except (RuntimeError, ValueError):
            self.errors += 1
            return False

    def readings(self) -> None:
        slot = 0
        while time.time() < self.stop_at:
            started = time.time()
            moment = (self.base + timedelta(minutes=15 * slot)).isoformat()
            for serial in self.serials:
                if self.send(serial, {"kwh": "0.5", "timestamp": moment}):
                    self.published.append((serial, moment, time.time()))
            slot += 1
            time.sleep(max(0.0, self.interval - (time.time() - started)))

    def poison(self) -> None:
        count = 0
        while time.time() + self.poison_every < self.stop_at:
            time.sleep(self.poison_every)
            count += 1
            serial, marker = random.choice(self.serials), f"{MARKER}-{count}"
            moment = (self.base - timedelta(days=1, minutes=count)).isoformat()
            if self.send(serial, {"kwh": "0.5", "timestamp": moment, "note": marker}):
                self.poisons.append((time.time(), serial, marker))

    def stop(self) -> None:
        self.stop_at = 0
        for thread in self.threads:
            thread.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_audit(load: MqttLoad, restarts: int, progress_secs: float) -> dict:
    """Published readings against stored rows, poison messages against dead letters, ingester restarts."""
    from meters.models import DeadLetter, MeterReading

    rows = {
        (serial, moment.isoformat()): submitted
        for serial, moment, submitted in MeterReading.objects.filter(meter__serial__in=load.serials).values_list(
            "meter__serial", "reading_timestamp", "submitted_at"
        )
    }
    missing = [(serial, moment) for serial, moment, _ in load.published if (serial, moment) not in rows]
    delays = sorted(
        rows[(serial, moment)].timestamp() - sent for serial, moment, sent in load.published if (serial, moment) in rows
    )
    letters = {
        bytes(payload).decode(errors="replace"): status
        for payload, status in DeadLetter.objects.filter(door="mqtt").values_list("payload", "status")
    }
    undead = [marker for _, _, marker in load.poisons if not any(f'"{marker}"' in text for text in letters)]
    return {
        "mqtt_published": len(load.published),
        "mqtt_missing": len(missing),
        "mqtt_missing_sample": missing[:5],
        "mqtt_publish_errors": load.errors,
        "mqtt_delay_p99": delays[int(len(delays) * 0.99)] if delays else None,
        "mqtt_delay_max": delays[-1] if delays else None,
        "mqtt_delayed_beyond_progress": sum(1 for delay in delays if delay > progress_secs),
        "poisons": len(load.poisons),
        "poisons_not_dead_letters": len(undead),
        "dead_letters": dict(
            sorted({status: list(letters.values()).count(status) for status in letters.values()}.items())
        ),
        "ingester_restarts": restarts,
    }


def mqtt_clean(result: dict) -> bool:
    return result["mqtt_missing"] == 0 and result["poisons_not_dead_letters"] == 0 and result["ingester_restarts"] == 0


def mqtt_report(say, result: dict) -> None:
    r = result
    say(f"\n  MQTT: published {r['mqtt_published']:,} (publish errors {r['mqtt_publish_errors']}), lost "
        f"{r['mqtt_missing']} {r['mqtt_missing_sample']}; stored after p99 {_secs(r['mqtt_delay_p99'])}, max "
        f"{_secs(r['mqtt_delay_max'])}, {r['mqtt_delayed_beyond_progress']} later than one progress line "
        f"(PostgreSQL restarts included)")  # fmt: skip
    say(f"    poison messages {r['poisons']}: not a dead letter {r['poisons_not_dead_letters']}; dead letters "
        f"{r['dead_letters']}; ingester restarts {r['ingester_restarts']}")  # fmt: skip
    if r["poisons"]:
        say(f"    {r['poisons']:3d} x poison MQTT message")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
