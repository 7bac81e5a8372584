import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# The files that take minutes each (real chains, Celery workers, servers, fuzzers, the soak), heaviest first by
# their summed durations in a 3-worker run (docs/BENCHMARKS.md ## Test suite). Under `--dist loadfile` a file is
# one unit of work, handed out in collection order (the Makefile's --no-loadscope-reorder): these go out first,
# so that no worker starts a three-minute file when the others are nearly done; every other file follows, most
# tests first (xdist's own order). A missing name fails tests/test_suite_order.py.
HEAVIEST_FIRST = (
    "tests/minting/test_pipeline_cluster.py",
    "tests/minting/test_pipeline_faults.py",
    "tests/ops/test_fuzz_schema.py",
    "tests/ops/test_demo.py",
    "tests/certificates/test_fuzz.py",
    "tests/ops/test_soak_smoke.py",
    "tests/minting/test_chain_client.py",
    "tests/certificates/test_chain.py",
    "tests/ops/test_demo_runs.py",
    "tests/meters/test_rollups.py",
    "tests/realtime/test_browser.py",
    "tests/minting/test_pipeline_mint.py",
    "tests/minting/test_pipeline_races.py",
    "tests/protocols/test_mqtt_poison.py",
    "tests/minting/test_signer_pipeline.py",
)


def pytest_collection_modifyitems(items) -> None:
    """The heaviest files first, in HEAVIEST_FIRST's order; then the others, most tests first; a file's tests
    together and in their own order."""
    rank = {path: place for place, path in enumerate(HEAVIEST_FIRST)}
    files: dict[str, int] = {}
    for item in items:
        path = item.nodeid.partition("::")[0]
        files[path] = files.get(path, 0) + 1
    order = {path: (rank.get(path, len(rank)), -count, place) for place, (path, count) in enumerate(files.items())}
    items.sort(key=lambda item: order[item.nodeid.partition("::")[0]])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float = 90.0, interval: float = 0.2, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; generous deadlines, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout:.0f} s")
        time.sleep(interval)


def concurrently(work, count: int, *, timeout: float = 60.0) -> list:
    """Run ``work()`` in ``count`` threads released together, each on its own database connection (closed after);
    their results, or the first exception any of them raised."""
    from django.db import connection

    barrier, results, errors = threading.Barrier(count), [], []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    assert len(results) == count, f"{count - len(results)} of {count} threads still running after {timeout:.0f} s"
    return results


def database_url() -> str:
    """The test database this process uses, for the subprocesses a test starts (workers, servers)."""
    from django.db import connection

    conf = connection.settings_dict
    user = conf.get("USER") or "postgres"
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}/{conf['NAME']}"


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashes():
    """Passwords hashed and checked at one PBKDF2 round in the test processes (tests/hashers.py)."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["tests.hashers.OneRoundPBKDF2PasswordHasher"]):
        yield


@pytest.fixture(scope="session", autouse=True)
def _cheaper_flush():
    """Transactional tests flush only the tables they wrote to (tests/flush.py)."""
    from tests import flush

    flush.install()


@pytest.fixture(autouse=True)
def _mint_trigger_memory_cleared():
    """Each test starts with an emptied broker or its own, so no process memory of an earlier test's mint task."""
    from minting import triggers

    triggers.forget()


@pytest.fixture
def broker(settings):
    """The Celery broker's Redis database, emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def mint_internal_errors_counter():
    """``gridtoken_mint_internal_errors_total``'s Redis counter, zero before the test and removed after it."""
    from gridtoken import observability

    observability.redis_client().delete(observability.MINT_INTERNAL_ERRORS_KEY)
    yield
    observability.redis_client().delete(observability.MINT_INTERNAL_ERRORS_KEY)


def queued_tasks(broker) -> list[str]:
    """Names of the tasks waiting in the broker's default queue, oldest first."""
    return [json.loads(raw)["headers"]["task"] for raw in broker.lrange("celery", 0, -1)]


def rpc_call(url: str, method: str, params: list | None = None, timeout: float = 5.0) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class Localnet:
    """A ``python -m localnet`` process (the ``manage.py localnet`` command without loading the project's apps:
    ~0.2 s of CPU to start instead of ~1.7 s) on a free port (``front_ends`` ports over the same chain, ``urls``);
    ``restart()`` keeps its ledger file."""

    def __init__(self, tmp_path: Path, slot_ms: int = 400, front_ends: int = 1) -> None:
        self.ports = [free_port() for _ in range(front_ends)]
        self.port = self.ports[0]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.url = self.urls[0]
        self.ledger = tmp_path / "ledger.bin"
        self.slot_ms = slot_ms
        self.process: subprocess.Popen | None = None

    def start(self) -> "Localnet":
        command = [
            sys.executable,
            "-m",
            "localnet",
            *(argument for port in self.ports for argument in ("--port", str(port))),
            "--ledger",
            str(self.ledger),
            "--slot-ms",
            str(self.slot_ms),
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"localnet exited with {self.process.returncode}")
            try:
                if rpc_call(self.url, "getHealth", timeout=1).get("result") == "ok":
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("localnet did not answer getHealth within 30 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> "Localnet":
        self.stop()
        return self.start()

    def set_faults(self, plan: dict, *, front_end: int = 1) -> dict:
        """Replace a front-end's fault plan (``{}`` clears it; docs/LOCALNET.md); returns it normalised."""
        return self._control("localnet_setFaults", [plan], front_end)

    def faults(self, *, front_end: int = 1) -> dict:
        """A front-end's current fault plan with what is left of it (remaining counts, seconds left)."""
        return self._control("localnet_getFaults", None, front_end)

    def _control(self, method: str, params: list | None, front_end: int) -> dict:
        answer = rpc_call(self.urls[front_end - 1], method, params)
        if "error" in answer:
            raise ValueError(f"{method}: {answer['error']['message']}")
        return answer["result"]


@pytest.fixture(scope="session")
def localnet(tmp_path_factory):
    """One local chain for the whole session (tests that need a fresh chain use ``make_localnet``)."""
    chain = Localnet(tmp_path_factory.mktemp("localnet")).start()
    yield chain
    chain.stop()


@pytest.fixture
def make_localnet(tmp_path):
    """Factory for a private chain, e.g. with a short ``slot_ms`` for blockhash expiry tests."""
    started: list[Localnet] = []

    def make(slot_ms: int = 400, front_ends: int = 1) -> Localnet:
        chain = Localnet(tmp_path / f"chain{len(started)}", slot_ms=slot_ms, front_ends=front_ends)
        chain.ledger.parent.mkdir(parents=True, exist_ok=True)
        started.append(chain)
        return chain.start()

    yield make
    for chain in started:
        chain.stop()


SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
SOFTHSM_PIN = "test-user-pin"  # a throw-away token's PIN, nothing to protect


@pytest.fixture
def softhsm(tmp_path, monkeypatch):
    """A SoftHSM2 token of this test's own: its own token directory and SOFTHSM2_CONF (so parallel workers never
    share a token), the PKCS#11 library re-initialised to read it. Yields the pkcs11 SignerConfig for it
    (key label ``authority``; no key yet: ``signer_keygen`` or ``pkcs11_keygen`` makes one)."""
    from config.signer import SignerConfig

    tokens = tmp_path / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "gridtoken-test", "--so-pin", "test-so-pin",
         "--pin", SOFTHSM_PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    pkcs11_reinitialize(SOFTHSM_MODULE)  # SoftHSM reads SOFTHSM2_CONF when initialised
    return SignerConfig(
        backend="pkcs11", module=SOFTHSM_MODULE, token_label="gridtoken-test", key_label="authority", pin=SOFTHSM_PIN
    )


def pkcs11_reinitialize(module: Path) -> None:
    """What a fresh process sees: the library finalised and initialised again, every session of this one gone.
    Finished searches still bound to the old sessions are collected first (their finalisers need the session)."""
    import pkcs11

    from minting.chain import signer

    gc.collect()
    pkcs11.lib(str(module)).reinitialize()
    signer._sessions.clear()  # and what the signer module remembered: its session, the PINs refused
    signer._refused_pins.clear()
