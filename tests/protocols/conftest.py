"""A private Mosquitto per test session (and per ACL test): the real broker, isolated from other runs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from paho.mqtt.enums import CallbackAPIVersion

from protocols.mqtt.ingester import Ingester
from tests.conftest import free_port


class Mosquitto:
    """``mosquitto -c <conf>`` on a free port of 127.0.0.1; ``lines`` are extra configuration.

    Started by root, the broker runs as ``user`` (default root: it reads the test's private files); Mosquitto
    ignores the setting for anyone else."""

    def __init__(
        self, directory: Path, lines: tuple[str, ...] = ("allow_anonymous true",), *, user: str = "root"
    ) -> None:
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.lines = (
            "persistence false",
            "max_queued_messages 0",  # unlimited: the crash test queues messages while the ingester is down
            *((f"user {user}",) if os.geteuid() == 0 else ()),
            *lines,
        )
        self.process: subprocess.Popen | None = None
        self._listen(free_port())

    def _listen(self, port: int) -> None:
        self.port, self.url = port, f"mqtt://127.0.0.1:{port}"
        self.conf.write_text("\n".join((f"listener {port} 127.0.0.1", *self.lines)) + "\n")

    def start(self) -> Mosquitto:
        """Start the broker and wait until it says it runs. A free port can be taken by another process (a
        parallel test worker's broker) before Mosquitto binds it: then it exits with "Address already in use"
        and starts again on another port; connecting alone would not tell (it would reach the other broker)."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        for _attempt in range(5):
            offset = self.log.stat().st_size if self.log.exists() else 0
            handle = open(self.log, "ab")  # noqa: SIM115 (kept open for the subprocess' lifetime)
            self.process = subprocess.Popen([binary, "-c", str(self.conf)], stdout=handle, stderr=subprocess.STDOUT)
            handle.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                said = self.log.read_bytes()[offset:].decode(errors="replace")
                if self.process.poll() is not None:
                    assert "Address already in use" in said, said
                    break
                if " running" in said:
                    socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                    return self
                time.sleep(0.05)
            else:
                raise AssertionError(f"mosquitto did not start on {self.port}: {said}")
            self._listen(free_port())
        raise AssertionError(f"mosquitto found no free port: {said}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory):
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


def mqtt_config(broker: Mosquitto, **changes):
    tag = uuid.uuid4().hex[:8]
    return dataclasses.replace(
        settings.MQTT,
        url=broker.url, host="127.0.0.1", port=broker.port, tls=False, username=None, password=None,
        client_id=f"test-ingest-{tag}", share_group=f"g{tag}", batch_ms=20, **changes,
    )  # fmt: skip


class Peer:
    """A plain MQTT v5 client: publishes QoS 1 (waiting for the broker's PUBACK) and records what it receives."""

    def __init__(self, port: int, *, client_id: str = "", username=None, password=None, subscribe=(), **kw):
        self.received: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kw)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connack = None
        connected, self.subscribed = threading.Event(), threading.Event()

        def on_connect(client, userdata, flags, reason_code, properties):
            self.connack = reason_code
            connected.set()

        self.client.on_connect = on_connect
        self.client.on_message = lambda client, userdata, message: self.received.append(
            (message.topic, message.payload)
        )
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(30)
        for topic in subscribe:
            self.subscribed.clear()
            self.client.subscribe(topic, qos=1)
            assert self.subscribed.wait(30)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        if qos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def forget_session(broker: Mosquitto, client_id: str) -> None:
    """Connect with clean_start and no session expiry: the broker drops the ingester's persistent session."""
    Peer(broker.port, client_id=client_id).close()


@pytest.fixture
def ingester(mqtt_broker):
    made: list[Ingester] = []

    def make(**changes) -> Ingester:
        made.append(Ingester(mqtt_config(mqtt_broker, **changes)))
        made[-1].start()
        assert made[-1].subscribed.wait(30), "ingester subscribed"
        return made[-1]

    yield make
    for one in made:
        one.stop()
        one.close()
        forget_session(mqtt_broker, one.client_id)


@pytest.fixture
def peer(mqtt_broker):
    made: list[Peer] = []

    def make(**kw) -> Peer:
        made.append(Peer(mqtt_broker.port, **kw))
        return made[-1]

    yield make
    for one in made:
        one.close()
