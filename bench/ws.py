"""WebSocket fan-out latency: commit -> gridtoken.events -> Redis layer -> uvicorn -> N connected clients.

    DATABASE_URL=... REDIS_URL=... python bench/ws.py --clients 500 --events 100 --interval 0.1

1. Creates (or reuses) bench users with API tokens in DATABASE_URL (which must be migrated).
2. Starts ``uvicorn gridtoken.asgi:application`` on a free port (DB_POOL=true, the Redis layer).
3. Connects ``--clients`` WebSocket clients with the ``websockets`` library (token subprotocol).
4. A separate publisher process commits and emits events through ``gridtoken.events.emit``; each event
   carries the wall-clock time taken just before its transaction commits.
5. Every client records receipt time minus that stamp; prints p50/p95/p99/max and what was lost.

Modes: ``fanout``: every client is an operator, so each event reaches all N clients through the ``operators``
group (the worst case per event). ``per-user``: N producers, each event goes to its one user, ``--batch``
events per commit (as a mint batch settles).
Figures, not pass/fail: the lead re-runs them on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")


def django_setup() -> None:
    import django

    django.setup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_users(count: int, *, staff: bool) -> list[tuple[str, str]]:
    """(user id, API token) for ``count`` bench users, created once and reused by later runs."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    prefix = "bench-ws-operator-" if staff else "bench-ws-producer-"
    names = [f"{prefix}{n:05d}" for n in range(count)]
    existing = set(user_model.objects.filter(username__in=names).values_list("username", flat=True))
    user_model.objects.bulk_create(
        [user_model(username=name, is_staff=staff, password="!") for name in names if name not in existing]
    )
    users = list(user_model.objects.filter(username__in=names).order_by("username"))
    have = set(Token.objects.filter(user__in=users).values_list("user_id", flat=True))
    Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users if u.pk not in have])
    tokens = dict(Token.objects.filter(user__in=users).values_list("user_id", "key"))
    return [(str(u.pk), tokens[u.pk]) for u in users]


def publisher(user_ids: list[str], events: int, interval: float, batch: int, mode: str, start, done) -> None:
    """Runs in its own process: one transaction per round, whose events leave on commit."""
    django_setup()
    from django.db import transaction

    from gridtoken import events as contract

    start.wait()
    next_at = time.perf_counter()
    sent = 0
    rounds = 0
    while sent < events:
        size = 1 if mode == "fanout" else min(batch, events - sent)
        with transaction.atomic():
            stamp = time.time_ns()
            batch_events = []
            for index in range(size):
                user_id = user_ids[(sent + index) % len(user_ids)]
                batch_events.append(
                    {
                        "type": "meter_reading_received",
                        "user_id": user_id,
                        "meter_serial": "BENCH",
                        "kwh_amount": "1.000000000",
                        "seq": sent + index,
                        "bench_sent_ns": stamp,
                    }
                )
            contract.emit(batch_events)
        sent += size
        rounds += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    done.set()


class Collector:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.connected = 0
        self.failed = 0

    async def client(self, url: str, token: str, deflate: bool, ready: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        try:
            async with connect(
                url,
                subprotocols=["token", token],
                compression="deflate" if deflate else None,
                proxy=None,
                open_timeout=60,
                ping_interval=None,
                max_queue=None,
            ) as ws:
                greeting = json.loads(await ws.recv())
                assert greeting["type"] == "connected", greeting
                self.connected += 1
                ready.set()
                async for frame in ws:
                    received = time.time_ns()
                    event = json.loads(frame)
                    if "bench_sent_ns" in event:
                        self.latencies_ms.append((received - event["bench_sent_ns"]) / 1e6)
        except Exception as error:
            self.failed += 1
            ready.set()
            print(f"client failed: {error!r}", file=sys.stderr)


def client_process(index: int, url: str, tokens: list[str], deflate: bool, connected, received, stop, results) -> None:
    """One of ``--client-procs`` processes, so parsing 500 frames per event is not one loop's queue."""

    async def main() -> None:
        collector = Collector()
        tasks = []
        # Connect in waves: each handshake reads the token from PostgreSQL through a pool of 20.
        for wave in range(0, len(tokens), 25):
            ready_events = []
            for token in tokens[wave : wave + 25]:
                ready = asyncio.Event()
                ready_events.append(ready)
                tasks.append(asyncio.create_task(collector.client(url, token, deflate, ready)))
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready_events)), timeout=120)
            connected[index] = collector.connected
        while not stop.is_set():
            received[index] = len(collector.latencies_ms)
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        own = os.times()
        results.put((collector.latencies_ms, collector.failed, own.user + own.system))

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (uvicorn's workers), from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] if len(values) > 1 else values[0]


def start_server(port: int, workers: int, deflate: bool) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "uvicorn", "gridtoken.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning", "--workers", str(workers),
    ]  # fmt: skip
    if not deflate:
        command += ["--ws-per-message-deflate", "false"]
    env = {**os.environ, "DB_POOL": "true", "LOG_LEVEL": "WARNING"}
    # Its own process group, so stopping it also stops --workers children even if the supervisor hangs.
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    raise SystemExit("uvicorn did not start")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def run(args, users: list[tuple[str, str]], port: int) -> dict:
    context = multiprocessing.get_context("spawn")
    procs = max(1, args.client_procs)
    connected, received = context.Array("i", procs, lock=False), context.Array("i", procs, lock=False)
    stop, start, done, results = context.Event(), context.Event(), context.Event(), context.Queue()
    url = f"ws://127.0.0.1:{port}/ws"
    tokens = [token for _, token in users]
    clients = [
        context.Process(
            target=client_process,
            args=(i, url, tokens[i::procs], args.deflate, connected, received, stop, results),
        )
        for i in range(procs)
    ]
    for process in clients:
        process.start()
    deadline = time.monotonic() + 180
    while sum(connected) < args.clients and time.monotonic() < deadline:
        time.sleep(1)
        print(f"connected {sum(connected)}/{args.clients}", flush=True)

    user_ids = [user_id for user_id, _ in users]
    publishing = context.Process(
        target=publisher, args=(user_ids, args.events, args.interval, args.batch, args.mode, start, done)
    )
    publishing.start()
    time.sleep(3)  # the publisher process imports Django before it starts the clock
    expected = args.events * (args.clients if args.mode == "fanout" else 1)
    began = time.monotonic()
    start.set()
    while not done.is_set() or sum(received) < expected:
        time.sleep(1)
        state = "all" if done.is_set() else "..."
        print(f"published {state}; received {sum(received)}/{expected}", flush=True)
        if time.monotonic() - began > args.events * args.interval + 30:
            break
    elapsed = time.monotonic() - began
    publishing.join()
    stop.set()
    latencies, failed, client_cpu = [], 0, 0.0
    for _ in clients:
        values, failures, cpu = results.get(timeout=60)
        latencies += values
        failed += failures
        client_cpu += cpu
    for process in clients:
        process.join()
    return {
        "latencies": latencies, "expected": expected, "elapsed": elapsed, "failed": failed,
        "connected": sum(connected), "client_cpu": client_cpu,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--events", type=int, default=100, help="events published in total")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between commits")
    parser.add_argument("--mode", choices=("fanout", "per-user"), default="fanout")
    parser.add_argument("--batch", type=int, default=50, help="events per commit in per-user mode")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--deflate", action=argparse.BooleanOptionalAction, default=True,
                        help="negotiate permessage-deflate, as browsers do")  # fmt: skip
    args = parser.parse_args()

    django_setup()
    users = bench_users(args.clients, staff=args.mode == "fanout")
    from django.db import connections

    connections.close_all()
    port = free_port()
    server = start_server(port, args.workers, args.deflate)
    cpu_before = cpu_seconds(server.pid)
    try:
        result = run(args, users, port)
    finally:
        server_cpu = cpu_seconds(server.pid) - cpu_before
        stop_server(server)
    values, expected = result["latencies"], result["expected"]
    print()
    print(f"mode={args.mode} clients={args.clients} events={args.events} interval={args.interval}s "
          f"batch={args.batch if args.mode == 'per-user' else 1} workers={args.workers} deflate={args.deflate} "
          f"client_procs={args.client_procs}")  # fmt: skip
    print(f"connected {result['connected']}, client failures {result['failed']}")
    print(f"deliveries {len(values)}/{expected} ({expected - len(values)} missing) in {result['elapsed']:.1f} s")
    if values:
        print(
            f"latency commit->client ms: p50 {percentile(values, 50):.1f}  p95 {percentile(values, 95):.1f}  "
            f"p99 {percentile(values, 99):.1f}  max {max(values):.1f}"
        )
    print(f"cpu seconds: uvicorn {server_cpu:.1f}, bench clients {result['client_cpu']:.1f}")


if __name__ == "__main__":
    main()
