"""A private Mosquitto per test session (and per ACL test): the real broker, isolated from other runs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port


class Mosquitto:
    """``mosquitto -c <conf>`` on a free port of 127.0.0.1; ``lines`` are extra configuration.

    Started by root, the broker runs as ``user`` (default root: it reads the test's private files); Mosquitto
    ignores the setting for anyone else."""

    def __init__(
        self, directory: Path, lines: tuple[str, ...] = ("allow_anonymous true",), *, user: str = "root"
    ) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        owner = (f"user {user}",) if os.geteuid() == 0 else ()
        self.conf.write_text(
            "\n".join(
                (
                    f"listener {self.port} 127.0.0.1",
                    "persistence false",
                    "max_queued_messages 0",  # unlimited: the crash test queues messages while the ingester is down
                    *owner,
                    *lines,
                )
            )
            + "\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        handle = open(self.log, "ab")  # noqa: SIM115 (kept open for the subprocess' lifetime)
        self.process = subprocess.Popen([binary, "-c", str(self.conf)], stdout=handle, stderr=subprocess.STDOUT)
        handle.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory):
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()
