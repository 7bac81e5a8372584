"""The MQTT door: sustained ingest from a private Mosquitto, and publish-to-confirmed-mint latency.

    python bench/mqtt.py [--meters 2000] [--owners 10] [--duration 20] [--publishers 2] [--ingesters 1,2]
                         [--rate 200] [--latency-duration 60] [--batch-max 500] [--batch-ms 50]

Builds its own world: a database (``--database-url``, default ``gt_bench_mqtt``: created, migrated, emptied),
Redis db 8, a private ``mosquitto`` on a free port (``max_queued_messages 0``, so a backlog is never dropped),
``--owners`` fleet owners with ``--meters`` meters (one wallet each), and ``manage.py ingest_mqtt`` processes
with their own share group and client ids.

1. Sustained ingest, minting off (``TOKENIZATION_AUTO_MINT_ENABLED=false``, no worker, no chain): for each
   count in ``--ingesters`` (sharing ``MQTT_SHARE_GROUP``), ``--publishers`` processes publish QoS 1 v1
   readings (``{"kwh", "timestamp"}``, each meter's 15 minutes apart going back from now) as fast as they
   can, with up to ``--window`` unacknowledged each, for ``--duration`` s. Stored readings/s is the rows in
   PostgreSQL over the time from the first publish to the poll that saw the last row. Exactly-once: rows ==
   messages the broker acknowledged, no (meter, timestamp) twice, no refusal on the error topic. CPU per
   process kind (publishers, mosquitto, ingesters, their PostgreSQL backends) is read from /proc.
2. Latency, the whole pipeline (``manage.py localnet``, ``chain_init``, ``celery -A gridtoken worker``, one
   ingester): ``--rate`` readings/s for ``--latency-duration`` s; each reading's publish time (wall clock,
   taken before ``publish``) against its batch's ``settled_at`` (confirmed), p50/p95/p99, split into
   publish -> stored (``submitted_at``) and stored -> confirmed. Ends with bench/pipeline.py's exactness
   check (balances and supply).

Prints progress every few seconds and the figures; never pass/fail on time. Every process it started is
stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import process_cpu  # noqa: E402
from bench.pipeline import (  # noqa: E402
    QUEUE_KEYS,
    Fleet,
    counts,
    create_database,
    free_port,
    fresh_world,
    prepare_environment,
    say,
    start_localnet,
    start_worker,
    stop,
    verify_exactly_once,
    wait_all_minted,
)

SLOT = timedelta(minutes=15)
MAX_SLOTS = 640  # 6.7 days of 15-minute readings per meter: inside TOKENIZATION_READING_MAX_AGE_DAYS (7)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--owners", type=int, default=10, help="meter owners (the wallets' accounts)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of publishing per run (0 skips part 1)")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--window", type=int, default=1000, help="unacknowledged QoS 1 messages per publisher")
    parser.add_argument("--ingesters", default="1,2", help="ingester process counts to run part 1 with")
    parser.add_argument("--rate", type=int, default=200, help="offered readings/s in part 2")
    parser.add_argument("--latency-duration", type=int, default=60, help="seconds of part 2 (0 skips it)")
    parser.add_argument("--batch-max", type=int, default=500, help="MQTT_BATCH_MAX")
    parser.add_argument("--batch-ms", type=int, default=50, help="MQTT_BATCH_MS")
    parser.add_argument("--batch-size", type=int, default=500, help="TOKENIZATION_BATCH_SIZE")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (prefork)")
    parser.add_argument("--debounce-ms", type=int, default=200, help="TOKENIZATION_TRIGGER_DEBOUNCE_MS")
    parser.add_argument("--in-flight", type=int, default=8, help="BLOCKCHAIN_CONCURRENT_BATCHES")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gt_bench_mqtt")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    args = parser.parse_args()
    if not args.database_url.rsplit("/", 1)[1].startswith("gt_bench_mqtt"):
        parser.error("--database-url must name a database starting gt_bench_mqtt (it is emptied)")
    return args


# --- processes -----------------------------------------------------------------------------------------


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    owner = ("user root",) if os.geteuid() == 0 else ()
    lines = (f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", "max_queued_messages 0")
    conf.write_text("\n".join((*lines, *owner)) + "\n")
    log = open(workdir / "mosquitto.log", "ab")  # noqa: SIM115 (the broker writes to it until the end)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"mosquitto did not listen on {port}: see {workdir / 'mosquitto.log'}")


def broker_alive(broker: subprocess.Popen, workdir: Path) -> None:
    """Stop the run when the private broker is gone (a `pkill mosquitto` elsewhere on a shared machine takes
    it down too): its queued messages are lost, so no figure after that would mean anything."""
    if broker.poll() is not None:
        tail = (workdir / "mosquitto.log").read_text(errors="replace").splitlines()[-1:]
        raise SystemExit(f"the private mosquitto (pid {broker.pid}) exited with {broker.returncode}: {tail}")


def start_ingesters(
    count: int, env: dict[str, str], port: int, workdir: Path, *, mint: bool, args
) -> list[subprocess.Popen]:
    """``count`` ingesters in one fresh share group; returns once every one has subscribed."""
    group = f"bench{uuid.uuid4().hex[:6]}"
    env = {
        **env,
        "LOG_LEVEL": "INFO",  # "mqtt subscribed" and the exit counts are INFO lines
        "MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "MQTT_SHARE_GROUP": group,
        "MQTT_TOPICS": "gridtoken",
        "MQTT_BATCH_MAX": str(args.batch_max),
        "MQTT_BATCH_MS": str(args.batch_ms),
        "TOKENIZATION_AUTO_MINT_ENABLED": "true" if mint else "false",
    }
    made = []
    for index in range(count):
        log_path = workdir / f"{group}-{index}.log"
        log = open(log_path, "ab")  # noqa: SIM115 (the ingester writes to it until the end)
        command = [sys.executable, "manage.py", "ingest_mqtt", "--client-id", f"{group}-{index}"]
        made.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        made[-1].log_path = log_path  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    for process in made:
        while b"mqtt subscribed" not in process.log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ingester did not subscribe: see {process.log_path}")
            time.sleep(0.1)
    return made


def ingester_counts(process: subprocess.Popen) -> dict:
    """The counts of the ingester's last ``mqtt ingest counts`` log line (written at exit)."""
    found: dict = {}
    for line in process.log_path.read_text(errors="replace").splitlines():  # type: ignore[attr-defined]
        if "mqtt ingest counts" in line:
            try:
                found = json.loads(line).get("counts", {})
            except ValueError:
                continue
    return found


class Listener:
    """Counts the refusals the ingesters answer on the error topic."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.codes: dict[str, int] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe("gridtoken/meters/+/errors", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise SystemExit("error-topic listener did not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        code = json.loads(message.payload).get("error", {}).get("code", "?")
        self.codes[code] = self.codes.get(code, 0) + 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def timestamps(base: datetime, first_slot: int, last_slot: int) -> list[str]:
    return [(base - SLOT * slot).isoformat() for slot in range(first_slot, last_slot + 1)]


def publish_flat_out(port, serials, base_iso, duration, start_at, window, published, results) -> None:
    """A publisher process: QoS 1 as fast as it can with ``window`` unacknowledged, slot by slot over its
    meters, until ``duration`` s after ``start_at`` (or every meter has MAX_SLOTS readings)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    window_free = threading.Semaphore(window)
    acked = [0]

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        acked[0] += 1
        window_free.release()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    topics = [f"gridtoken/meters/{serial}/readings" for serial in serials]
    times = timestamps(datetime.fromisoformat(base_iso), 1, MAX_SLOTS)
    time.sleep(max(0.0, start_at - time.time()))
    first = time.time()
    end = time.monotonic() + duration
    sent = 0
    for stamp in times:
        if time.monotonic() >= end:
            break
        for index, topic in enumerate(topics):
            window_free.acquire()
            client.publish(topic, f'{{"kwh": "0.{250 + index % 500:03d}", "timestamp": "{stamp}"}}', qos=1)
            sent += 1
            if sent % 1000 == 0:
                published.value = sent
                if time.monotonic() >= end:
                    break
    last = time.time()
    published.value = sent
    deadline = time.monotonic() + 120
    while acked[0] < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    results.put({"sent": sent, "acked": acked[0], "first": first, "last": last})


# --- measuring ------------------------------------------------------------------------------------------


def backends() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        return [row[0] for row in cursor.fetchall()]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


class CpuMeter:
    """CPU seconds per process kind between ``start()`` and ``stop()`` (kind -> pids, or a function giving them)."""

    def __init__(self, pids: dict) -> None:
        self.pids = pids

    def _pids(self) -> dict[str, list[int]]:
        return {kind: pids() if callable(pids) else pids for kind, pids in self.pids.items()}

    def start(self) -> None:
        self.before = {kind: {pid: process_cpu(pid) for pid in pids} for kind, pids in self._pids().items()}
        self.machine_before, self.wall_before = machine_busy(), time.monotonic()
        self.seen: dict[str, dict[int, float]] = {kind: {} for kind in self.pids}

    def sample(self) -> None:
        """Remember every pid's CPU so far: a backend Django replaces (CONN_MAX_AGE) still counts."""
        for kind, pids in self._pids().items():
            for pid in pids:
                self.seen[kind][pid] = max(self.seen[kind].get(pid, 0.0), process_cpu(pid))

    def stop(self) -> dict[str, float]:
        """A pid born during the run (a backend opened on the first batch) counts its whole life."""
        self.sample()
        used = {
            kind: sum(max(0.0, cpu - self.before[kind].get(pid, 0.0)) for pid, cpu in seen.items())
            for kind, seen in self.seen.items()
        }
        busy, total = machine_busy()
        used["anything else (other users)"] = max(0.0, busy - self.machine_before[0] - sum(used.values()))
        used["machine (all processes)"] = busy - self.machine_before[0]
        self.wall = time.monotonic() - self.wall_before
        self.machine_share = (busy - self.machine_before[0]) / max(1e-9, total - self.machine_before[1])
        return used

    def report(self, used: dict[str, float], readings: int) -> None:
        say(f"  CPU over {self.wall:.1f} s wall ({os.cpu_count()} cores; machine {self.machine_share:.0%} busy):")
        for kind, seconds in used.items():
            per = f", {seconds / readings * 1e6:,.0f} us/reading" if readings else ""
            say(f"    {kind:<26} {seconds:7.2f} CPU-s = {seconds / self.wall:5.2f} cores{per}")


def rows_and_duplicates() -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) - count(DISTINCT (meter_id, reading_timestamp)) FROM meters_meterreading"
        )
        return cursor.fetchone()


def row_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM meters_meterreading")
        return cursor.fetchone()[0]


def empty_readings() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE meters_meterreading, minting_mintbatch CASCADE")


def sustained(args, env, port, workdir, serials, broker, ingesters_n) -> dict:
    say(f"\n== sustained ingest: {args.publishers} publishers flat out for {args.duration} s, "
        f"{ingesters_n} ingester(s), minting off")  # fmt: skip
    empty_readings()
    listener = Listener(port)
    ingesters = start_ingesters(ingesters_n, env, port, workdir, mint=False, args=args)
    time.sleep(1.0)  # let their PostgreSQL backends open, so the CPU meter sees them
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    values = [context.Value("q", 0) for _ in range(args.publishers)]
    base = datetime.now(UTC).replace(second=0, microsecond=0)
    start_at = time.time() + 3.0  # after the spawned interpreters have imported paho
    publishers = [
        context.Process(
            target=publish_flat_out,
            args=(
                port,
                serials[i :: args.publishers],
                base.isoformat(),
                args.duration,
                start_at,
                args.window,
                values[i],
                results,
            ),
        )
        for i in range(args.publishers)
    ]
    try:
        for process in publishers:
            process.start()
        time.sleep(max(0.0, start_at - time.time() - 0.2))
        cpu = CpuMeter(
            {
                "publishers": [p.pid for p in publishers],
                "mosquitto": [broker.pid],
                "ingesters": [p.pid for p in ingesters],
                "postgres (their backends)": backends,
            }
        )
        cpu.start()
        done: list[dict] = []
        next_report, stored = time.time() + 3.0, 0
        end_publish_rows = end_publish_at = None
        last_change, last_rows = time.time(), -1
        while True:
            while not results.empty():
                done.append(results.get())
            now = time.time()
            stored = row_count()
            if stored != last_rows:
                last_change, last_rows = now, stored
            if len(done) == args.publishers and end_publish_at is None:
                end_publish_at, end_publish_rows = now, stored
            published = sum(v.value for v in values)
            broker_alive(broker, workdir)
            if done and len(done) == args.publishers and stored >= sum(r["acked"] for r in done):
                break
            if now - last_change > 60:
                say("  no new rows for 60 s: giving up waiting")
                break
            if now >= next_report:
                cpu.sample()
                say(f"  t={now - start_at:5.1f}s published {published:,}, stored {stored:,}")
                next_report += 3.0
            time.sleep(0.05)
        stored_at = time.time()
        used = cpu.stop()
    finally:
        for process in publishers:
            if process.is_alive():
                process.terminate()
        for process in ingesters:
            stop(process)
        listener.close()
    first = min(r["first"] for r in done)
    last_publish = max(r["last"] for r in done)
    acked, sent = sum(r["acked"] for r in done), sum(r["sent"] for r in done)
    rows, doubled = rows_and_duplicates()
    rate = rows / (stored_at - first)
    say(f"  published {sent:,} ({acked:,} acknowledged by the broker) in {last_publish - first:.1f} s "
        f"({sent / (last_publish - first):,.0f}/s)")  # fmt: skip
    say(f"  stored {rows:,} rows in {stored_at - first:.1f} s from the first publish: {rate:,.0f} readings/s")
    drain = None
    if end_publish_rows is not None and rows - end_publish_rows > 1000:
        drain = (rows - end_publish_rows) / max(1e-9, stored_at - end_publish_at)
        say(f"  after the publishers stopped, the backlog of {rows - end_publish_rows:,} drained at {drain:,.0f}/s")
    counted = [ingester_counts(p) for p in ingesters]
    say(f"  exactly-once: rows {rows:,} == acknowledged publishes {acked:,}: {rows == acked}; "
        f"(meter, timestamp) stored twice: {doubled}; refusals on the error topic: {listener.codes or 0}; "
        f"ingester counts: {counted}")  # fmt: skip
    cpu.report(used, rows)
    return {"ingesters": ingesters_n, "rate": rate, "drain": drain, "rows": rows, "acked": acked, "cpu": used}


def latency(args, env, port, workdir, fleet, broker, rpc_port) -> None:
    import paho.mqtt.client as mqtt
    from django.core.management import call_command
    from django.db import connection
    from paho.mqtt.enums import CallbackAPIVersion

    from minting.services.control import auto_mint_set

    say(f"\n== publish -> confirmed mint: {args.rate} readings/s for {args.latency_duration} s, whole pipeline")
    empty_readings()
    auto_mint_set(enabled=True, actor="bench")
    localnet = start_localnet(rpc_port, workdir)
    worker = ingester = None
    try:
        call_command("chain_init", stdout=open(os.devnull, "w"))  # noqa: SIM115
        worker = start_worker(args, env, workdir)
        ingester = start_ingesters(1, env, port, workdir, mint=True, args=args)[0]
        serials = [meter.serial for meters in fleet.by_owner.values() for meter in meters]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", port)
        client.loop_start()
        cpu = CpuMeter(
            {
                "mosquitto": [broker.pid],
                "ingester": [ingester.pid],
                "celery worker": [worker.pid, *children(worker.pid)],
                "localnet": [localnet.pid],
                "postgres (their backends)": backends,
            }
        )
        cpu.start()
        base = datetime.now(UTC).replace(second=0, microsecond=0) - SLOT
        tick, per_tick = 0.1, max(1, round(args.rate * 0.1))
        published: dict[tuple[str, int], float] = {}
        started, sent = time.monotonic(), 0
        for index in range(int(args.latency_duration / tick)):
            time.sleep(max(0.0, started + index * tick - time.monotonic()))  # falls behind rather than bunching
            for _ in range(per_tick):
                serial = serials[sent % len(serials)]
                moment = base - SLOT * (sent // len(serials))
                body = f'{{"kwh": "{1 + sent % 9}.{sent % 1000:03d}", "timestamp": "{moment.isoformat()}"}}'
                published[(serial, int(moment.timestamp()))] = time.time()
                client.publish(f"gridtoken/meters/{serial}/readings", body, qos=1)
                sent += 1
            if index % int(5 / tick) == 0:
                broker_alive(broker, workdir)
                cpu.sample()
                c = counts()
                say(f"  t={time.monotonic() - started:5.1f}s published {sent}, stored {sum(c.values())}, "
                    f"minted {c.get('minted', 0)}")  # fmt: skip
        elapsed = time.monotonic() - started
        say(f"  published {sent} readings in {elapsed:.1f} s ({sent / elapsed:.0f}/s achieved)")
        deadline = time.monotonic() + 60
        while sum(counts().values()) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_all_minted(sent)
        used = cpu.stop()
        client.disconnect()
        client.loop_stop()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT m.serial, extract(epoch FROM r.reading_timestamp), extract(epoch FROM r.submitted_at),"
                " extract(epoch FROM b.settled_at) FROM meters_meterreading r JOIN meters_meter m ON m.id ="
                " r.meter_id JOIN minting_mintbatch b ON b.id = r.batch_id WHERE r.status = 'minted'"
            )
            rows = cursor.fetchall()
            cursor.execute("SELECT count(*), avg(reading_count) FROM minting_mintbatch")
            batches, per_tx = cursor.fetchone()
        total, stored, minted = [], [], []
        for serial, stamp, submitted, settled in rows:
            at = published.get((serial, int(stamp)))
            if at is not None:
                total.append(float(settled) - at)
                stored.append(float(submitted) - at)
                minted.append(float(settled) - float(submitted))
        say(f"  {len(total)} of {sent} published readings minted and matched to their publish time")
        for label, values in (("publish -> confirmed", total), ("publish -> stored", stored),
                              ("stored -> confirmed", minted)):  # fmt: skip
            values.sort()
            p = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.95, 0.99)]
            say(f"  {label:<21} p50 {p[0]:.3f} s, p95 {p[1]:.3f} s, p99 {p[2]:.3f} s, max {values[-1]:.3f} s")
        say(f"  {batches} transactions, {float(per_tx or 0):.1f} readings per transaction")
        say(f"  ingester counts: {ingester_counts(ingester) or '(written at exit)'}")
        cpu.report(used, sent)
        verify_exactly_once()
    finally:
        stop(ingester)
        stop(worker)
        stop(localnet)


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    rpc_port = free_port()
    env = prepare_environment(args, workdir, rpc_port)
    create_database(args.database_url)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # run the finally blocks

    broker = fresh_world(args.redis_url)

    mosquitto, port = start_mosquitto(workdir)
    try:
        fleet = Fleet(args.owners, args.meters)
        serials = [meter.serial for meters in fleet.by_owner.values() for meter in meters]
        say(f"mosquitto :{port}, {args.owners} owners, {args.meters} meters, MQTT_BATCH_MAX {args.batch_max}, "
            f"MQTT_BATCH_MS {args.batch_ms}, {os.cpu_count()} CPUs, logs in {workdir}")  # fmt: skip
        results = []
        if args.duration:
            for count in [int(n) for n in args.ingesters.split(",") if n.strip()]:
                results.append(sustained(args, env, port, workdir, serials, mosquitto, count))
        if args.latency_duration:
            # The sustained runs' triggers went to Redis with no worker to take them: start clean.
            broker.delete(*QUEUE_KEYS)
            latency(args, env, port, workdir, fleet, mosquitto, rpc_port)
        if results:
            say("\n== sustained ingest summary")
            for r in results:
                drain = f", backlog drained at {r['drain']:,.0f}/s" if r["drain"] else ""
                say(f"  {r['ingesters']} ingester(s): {r['rate']:,.0f} readings/s stored{drain}; "
                    f"exactly-once {r['rows'] == r['acked']}")  # fmt: skip
    finally:
        stop(mosquitto)


if __name__ == "__main__":
    main()
