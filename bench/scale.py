"""Every surface at millions of readings against the same surfaces on a small table, in one run (issue 21).

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/gridtoken REDIS_URL=redis://127.0.0.1:6379/5
    python bench/scale.py --readings 2000000               # builds both, measures, drops them
    python bench/scale.py --readings 20000000 --build-only # the full-size databases, kept; --resume after a stop
    python bench/scale.py --measure-only                   # the kept databases measured (again), as they are
    python bench/scale.py --measure-only --surface metrics # one surface (after a fix)

1. Two databases of their own: the large one (DATABASE_URL's name + ``_scale``) and the small one (+
   ``_scale_small``), created and migrated (dropped first unless ``--resume``), dropped at the end unless
   ``--keep`` (or ``--build-only``, ``--measure-only``). Each is served by a process of its own
   (``bench/scale_world.py``), the two built side by side.
2. A seed through the real batch path (``readings_submit_batch``): one reading per meter, ``--meters``
   meters, most owned by one aggregator, ``--producers`` owning one each.
3. History in the seed's shape: time-shifted copies 15 minutes apart per meter, going back in time (20 M
   readings of 1,000 meters reach back ~7 months), built with one ``INSERT ... SELECT generate_series`` per
   chunk (``--chunk`` rows) through the readings table's own triggers, so the rollups are built as ingestion
   builds them; minted ones (90 %) belong to confirmed batches of 50, the rest recorded, held, failed, a few
   flagged. Ids are UUIDv7 of the moment each row is stored, as ingestion makes them. The monthly partitions
   the history will fill are created first (``partitions_ensure(since=)``), so no row waits in the default
   partition. Each chunk is committed and folded, so a stopped run resumes where it was (``--resume``).
4. Measured alternately, after VACUUM ANALYZE: sample i of a surface on the small database, then on the
   large one, then on the small one again from a third process (the A/A figure: the same database against
   itself, the noise floor of the run), round-robin, ``--samples`` samples per surface and process, so every
   size sees the same load of a shared machine. In-process requests (Django's test client, no HTTP server):
   the device's single post, a 100-item batch post, the producer's stats and my-readings (page 1, by meter,
   a deep page, by cursor), the operator's dashboard, its stats.json, the charts' JSON (the operator's
   fleet.json over a day, over two days of minute rows; energy.json of the producer over 48 h and of the
   fleet owner over 30 days), the admin readings list (plain and filtered) and mint batches list,
   Prometheus' /metrics; the rollup deltas are folded before each surface,
   as the beat task does every 5 s. Printed: each p95 at both sizes, their ratio and the A/A ratio, bytes per
   reading (every partition's heap, TOAST and indexes) and per index, the large database's partitions, the
   commit and the load average.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scale_world import SLOT, say, serve  # noqa: E402 (the repository on the path first)

# Round-robin order: the A/A pair ("small", "small again") has "large" between its samples.
ROLES = ("small", "large", "small again")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2_000_000, help="readings in the large database")
    parser.add_argument("--small", type=int, default=50_000, help="readings in the small database")
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--producers", type=int, default=20, help="owners of one meter each (the rest: one fleet)")
    parser.add_argument("--samples", type=int, default=60, help="requests per surface and process")
    parser.add_argument("--chunk", type=int, default=250_000, help="readings per build statement")
    parser.add_argument("--resume", action="store_true", help="keep the databases a stopped run left")
    parser.add_argument("--keep", action="store_true", help="keep the databases at the end")
    parser.add_argument("--build-only", action="store_true", help="build (or finish) both databases, keep them")
    parser.add_argument("--measure-only", action="store_true", help="measure the kept databases, build nothing")
    parser.add_argument("--surface", default="", help="only surfaces whose name has this")
    args = parser.parse_args()
    if args.measure_only or args.build_only:
        args.resume = args.keep = True
    return args


def scale_database_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtoken")
    return f"{base}_scale"


def admin_connection(url: str):
    import psycopg

    return psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)


def prepare_database(url: str, *, resume: bool) -> None:
    name = url.rsplit("/", 1)[1]
    with admin_connection(url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not resume:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or not resume:
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    with admin_connection(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def commit() -> str:
    import subprocess

    run = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return run.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def p95(durations: list[float]) -> float:
    return statistics.quantiles(durations, n=20, method="inclusive")[18] * 1000


class Workers:
    """One process per role, each serving its database (``bench.scale_world.serve``)."""

    def __init__(self, args: argparse.Namespace, urls: dict[str, str]) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.conns, self.processes, self.rows = {}, {}, {}
        # A rerun's posts need moments of their own (a repeat is a duplicate): phases per minute, 20 rounds.
        self.first_phase = 0 if not args.measure_only else len(ROLES) * (1 + int(time.time() // 60) % 20)
        self.args, self.urls, self.started = args, urls, int(time.time())

    def start(self, role: str, *, target: int) -> None:
        ours, theirs = self.context.Pipe()
        options = {
            "meters": self.args.meters,
            "producers": self.args.producers,
            "chunk": self.args.chunk,
            "samples": self.args.samples,
            "target": target,
            "build_only": self.args.build_only,
            # Every process posts around one moment on the 15-minute grid: posts of different phases and
            # processes are then whole slots apart, never within one meter's duplicate window.
            "now": datetime.fromtimestamp(self.started - self.started % int(SLOT.total_seconds()), UTC),
            "phase": self.first_phase + ROLES.index(role),
        }
        process = self.context.Process(target=serve, args=(self.urls[role], options, theirs), name=role)
        process.start()
        self.conns[role], self.processes[role] = ours, process

    def answer(self, role: str):
        status, value = self.conns[role].recv()
        if status != "ok":
            self.stop()
            raise SystemExit(f"{role}: {value}")
        return value

    def ask(self, role: str, *command):
        self.conns[role].send(command)
        return self.answer(role)

    def stop(self) -> None:
        for role, conn in self.conns.items():
            if self.processes[role].is_alive():
                conn.send(("stop",))
                conn.recv()
            self.processes[role].join()


def measure(workers: Workers, names: list[str], *, samples: int) -> dict[str, dict[str, float]]:
    """p95 per role and surface, sampled round-robin: sample i on every role, then sample i + 1."""
    results = {role: {} for role in ROLES}
    for name in names:
        durations = {role: [] for role in ROLES}
        for role in ROLES:
            workers.ask(role, "warm", name)  # the plans and caches of each process; not counted
        for i in range(samples):
            for role in ROLES:
                durations[role].append(workers.ask(role, "time", name, i))
        for role in ROLES:
            results[role][name] = p95(durations[role])
        say(f"{name}: " + ", ".join(f"{role} {results[role][name]:.1f} ms" for role in ROLES) + f" ({load()})")
    return results


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def report(results: dict[str, dict[str, float]], sizes: dict[str, tuple]) -> None:
    """The tables: p95 per surface at both sizes with their ratio and the A/A ratio, bytes per reading, the
    large database's partitions."""
    small_rows, small_storage, _ = sizes["small"]
    large_rows, large_storage, partitions = sizes["large"]
    small, large, again = results["small"], results["large"], results["small again"]
    print(f"\n| surface | p95 at {small_rows:,} | p95 at {large_rows:,} | ratio | A/A ({small_rows:,} twice) |")
    print("|---|---|---|---|---|")
    for name in small:
        ratio, noise = large[name] / small[name], again[name] / small[name]
        print(f"| {name} | {small[name]:.1f} ms | {large[name]:.1f} ms | {ratio:.2f}x | {noise:.2f}x |")
    print(f"\n| bytes per reading | at {small_rows:,} | at {large_rows:,} |")
    print("|---|---|---|")
    small_sizes = dict(small_storage)
    for name, size in large_storage:
        print(f"| {name} | {small_sizes.get(name, 0):.0f} | {size:.0f} |")
    print("\n| partition | rows | MB (heap, TOAST, indexes) | bytes per row |\n|---|---|---|---|")
    for name, rows, size in partitions:
        print(f"| {name} | {rows:,} | {size / 2**20:,.0f} | {size / max(rows, 1):.0f} |")


def main() -> None:
    args = parse_args()
    large_url = scale_database_url()
    urls = {"small": f"{large_url}_small", "large": large_url, "small again": f"{large_url}_small"}
    for url in (urls["small"], urls["large"]):
        prepare_database(url, resume=args.resume)
    say(f"commit {commit()}, {os.cpu_count()} cores, {load()}")
    build = not args.measure_only
    if build:
        say(f"building {args.small:,} and {args.readings:,} readings, {args.meters:,} meters")
    workers = Workers(args, urls)
    workers.start("small", target=args.small if build else 0)
    workers.start("large", target=args.readings if build else 0)
    small_rows, names = workers.answer("small")
    large_rows, _ = workers.answer("large")
    say(f"ready: {small_rows:,} and {large_rows:,} readings ({load()})")
    if args.build_only:
        workers.stop()
        return
    workers.start("small again", target=0)
    workers.answer("small again")
    results = measure(workers, [name for name in names if args.surface in name], samples=args.samples)
    sizes = {role: workers.ask(role, "sizes") for role in ("small", "large")}
    workers.stop()
    report(results, sizes)
    if not args.keep:
        for url in (urls["small"], urls["large"]):
            drop_database(url)
        say("databases dropped")


if __name__ == "__main__":
    main()
