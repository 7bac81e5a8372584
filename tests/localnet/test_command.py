"""``manage.py localnet`` in-process: option checks, start-up line, SIGTERM, restore from the ledger."""

import os
import signal
import socket
import threading
import time

import httpx
import pytest
from django.core.management import CommandError, call_command

from tests.conftest import free_port


def stop_when_healthy(port: int) -> threading.Thread:
    """SIGTERM this process once the server answers: its handler is installed before the first answer."""

    def wait_then_signal() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=wait_then_signal, daemon=True)
    thread.start()
    return thread


def test_the_command_serves_until_sigterm_and_restores_its_ledger(tmp_path, capsys):
    port, path = free_port(), tmp_path / "ledger.bin"
    stopper = stop_when_healthy(port)
    call_command("localnet", "--port", str(port), "--ledger", str(path), "--slot-ms", "20", "--save-interval", "0.05")
    stopper.join()
    first = capsys.readouterr().out.splitlines()
    assert first[0] == f"localnet listening on http://127.0.0.1:{port}"
    assert first[-1].startswith("localnet stopped at slot ") and first[-1].endswith(f"ledger saved to {path}")
    assert path.exists()

    stopper = stop_when_healthy(port)
    call_command("localnet", "--port", str(port), "--ledger", str(path))
    stopper.join()
    assert capsys.readouterr().out.splitlines()[0].startswith(f"localnet restored {path} at slot ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--slot-ms", "0"], "--slot-ms must be at least 1"),
        (["--port", "70000"], "--port must be 0..65535"),
        (["--port", "8899", "--port", "8900", "--port", "8899"], "each port once"),
    ],
)
def test_the_command_refuses_impossible_options(options, message):
    with pytest.raises(CommandError, match=message):
        call_command("localnet", *options)


def test_the_command_refuses_a_file_that_is_not_a_ledger(tmp_path):
    path = tmp_path / "ledger.bin"
    path.write_bytes(b"something else")
    with pytest.raises(CommandError, match="not a localnet ledger"):
        call_command("localnet", "--ledger", str(path))


def test_the_command_reports_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}"):
            call_command("localnet", "--port", str(port))
