"""What the provider pool costs a healthy read: one transport alone against pools of one and three providers.

    python bench/rpc_providers.py [--calls 400] [--rounds 5]

Starts a local chain with three front-ends (``manage.py localnet --port A --port B --port C``, no faults) and
reads ``getLatestBlockhash`` with ``minContextSlot`` (what every deciding read carries) ``--calls`` times per
round through: ``Rpc`` (the bare transport), a ``ProviderPool`` of one provider, and a pool of three. Rounds
alternate the three so the machine's load falls on each alike. Prints, per variant, the HTTP requests per
read (counted from the transports' request ids: the pool must add none) and this process's CPU time per read
(``time.process_time``: the pool's own work, not the network's), median over rounds. Figures, never
pass/fail.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.providers import RpcEndpoint  # noqa: E402
from minting.chain.providers import ProviderPool  # noqa: E402
from minting.chain.rpc import Rpc  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    request = urllib.request.Request(
        url, b'{"jsonrpc":"2.0","id":1,"method":"getHealth"}', {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return b'"ok"' in response.read()
    except OSError:
        return False


def requests_made(transports: list[Rpc]) -> int:
    return sum(next(rpc._ids) - 1 for rpc in transports)


def measure(call, transports: list[Rpc], calls: int) -> tuple[float, float]:
    """(CPU microseconds per read, HTTP requests per read)."""
    before = requests_made(transports) + len(transports)  # requests_made consumed one id per transport
    slot = 0
    started = time.process_time()
    for _ in range(calls):
        answer = call("getLatestBlockhash", [{"commitment": "confirmed", "minContextSlot": slot}])
        slot = answer["context"]["slot"]
    cpu = time.process_time() - started
    return cpu / calls * 1e6, (requests_made(transports) - before) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    command = [sys.executable, "manage.py", "localnet", *(a for port in ports for a in ("--port", str(port)))]
    chain = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "DEBUG": "true"}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not all(healthy(url) for url in urls):
            if time.monotonic() > deadline or chain.poll() is not None:
                raise SystemExit("the local chain did not start")
            time.sleep(0.2)
        bare = Rpc(urls[0])
        one = ProviderPool([RpcEndpoint(url=urls[0])])
        three = ProviderPool([RpcEndpoint(url=url) for url in urls])
        variants = {
            "Rpc (one transport)": (bare.call, [bare]),
            "ProviderPool, 1 provider": (one.call, [p.rpc for p in one.providers]),
            "ProviderPool, 3 providers": (three.call, [p.rpc for p in three.providers]),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for call, transports in variants.values():  # warm-up: connections, caches
            measure(call, transports, 50)
        for round_number in range(options.rounds):
            for name, (call, transports) in variants.items():
                results[name].append(measure(call, transports, options.calls))
            print(f"round {round_number + 1}/{options.rounds} done", file=sys.stderr, flush=True)
        load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        print(f"{load}; {options.calls} reads x {options.rounds} rounds")
        print(f"{'variant':28} {'CPU us/read':>12} {'requests/read':>14}")
        for name, rows in results.items():
            cpu = statistics.median(row[0] for row in rows)
            requests = statistics.median(row[1] for row in rows)
            print(f"{name:28} {cpu:12.0f} {requests:14.2f}")
        print("pool states:", [(s.number, s.state, s.lag_slots) for s in three.states()])
    finally:
        chain.terminate()
        chain.wait(timeout=20)


if __name__ == "__main__":
    main()
