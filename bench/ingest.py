"""Ingestion throughput: single-reading posts and 1,000-item batch posts against a real server.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/gt_ingest REDIS_URL=redis://127.0.0.1:6379/3
    python bench/ingest.py                       # starts gunicorn itself (sync workers), runs both modes
    python bench/ingest.py --mode batch --duration 20 --clients 3 --workers 3
    python bench/ingest.py --url http://127.0.0.1:8000   # against a server you started (rate limits off!)
    python bench/ingest.py --readings register           # cumulative register reads instead of kwh intervals
    python bench/ingest.py --mint-basis window           # the server runs with TOKENIZATION_MINT_BASIS=window

Without ``--url`` the script starts ``gunicorn gridtoken.wsgi -k sync`` on a free port with DEBUG=false,
rate limits off and LOG_LEVEL=WARNING (``--log-level INFO`` keeps the per-request access log), and stops it
at the end. It creates its own user, meters and API keys in the database named by DATABASE_URL (the
server must use the same one), drives ``--clients`` processes for ``--duration`` seconds per mode,
prints progress every two seconds, then readings/s and latency percentiles, and checks that the rows in
the database match what the server accepted. It deletes what it created unless ``--keep``.

Single mode: each client posts ``/api/v1/meters/{serial}/readings`` with its meters' device keys, one
reading per meter per 15-minute interval (so no request is a duplicate or a conflict). Batch mode: each
client posts ``/api/v1/meters/batch/readings`` with a fleet key, one reading for each of ``--batch-size``
meters per request, the next interval in the next request.

``--readings register`` sends register reads instead (``"registers": {"1.8.0": ..., "2.8.0": ...}``, no
``kwh``): each meter starts from its own totals and every 15-minute step adds 0.25 kWh import and 1.0-1.75 kWh
export, so the server derives a net of 0.75-1.5 kWh per step (a meter's first read is its baseline).
``--mint-basis window`` starts the server with ``TOKENIZATION_MINT_BASIS=window`` (readings are stored
``awaiting_window``; nothing settles them during the run, as no Celery worker runs). Both take the ingestion
path that loads the meter's neighbouring readings under its lock. Rejected items and non-2xx answers are
counted and the first few error bodies printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = timedelta(minutes=15)
# Register reads: Wh added per 15-minute step (export varies with the step so the series is not flat).
IMPORT_STEP_WH = 250
EXPORT_STEP_WH = (1000, 1250, 1500, 1750)
ERROR_SAMPLES = 5


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    workers: int, log_level: str, no_events: bool, mint_basis: str | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ)
    if no_events:
        env["DJANGO_SETTINGS_MODULE"] = "bench.settings_no_events"
    env.update(
        DEBUG="false",
        SECRET_KEY=env.get("SECRET_KEY") or "bench-" + uuid.uuid4().hex * 2,
        SOLANA_KEYPAIR_PATH=env.get("SOLANA_KEYPAIR_PATH") or str(ROOT / ".secrets" / "authority.json"),
        RATE_LIMIT_KEY_PER_MIN="0",
        RATE_LIMIT_USER_PER_MIN="0",
        LOG_LEVEL=log_level,
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    if mint_basis is not None:
        env["TOKENIZATION_MINT_BASIS"] = mint_basis
    command = [
        sys.executable, "-m", "gunicorn", "gridtoken.wsgi:application", "-k", "sync", "-w", str(workers),
        "-b", f"127.0.0.1:{port}", "--log-level", "warning", "--backlog", "2048",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, _ = request("127.0.0.1", port, "GET", "/api/meters/stats", None, {})
            if status == 401:
                return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not answer within 30 s")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(server: subprocess.Popen | None) -> dict[str, list[int]]:
    """The gunicorn workers (children of the master) and this database's other backends."""
    from django.db import connection

    workers = []
    if server is not None:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == server.pid:
                    workers.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        backends = [row[0] for row in cursor.fetchall()]
    return {"gunicorn": workers, "postgres": backends}


def cpu_snapshot(server) -> dict[str, dict[int, float]]:
    return {kind: {pid: process_cpu(pid) for pid in pids} for kind, pids in server_pids(server).items()}


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    return {
        kind: sum(max(0.0, cpu - before.get(kind, {}).get(pid, 0.0)) for pid, cpu in after[kind].items())
        for kind in after
    }


def request(host: str, port: int, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def create_fixtures(run: str, clients: int, meters_per_client: int, fleet: bool) -> dict:
    """A user, ``clients * meters_per_client`` meters and their keys, written in bulk."""
    from meters.models import ApiKey, Meter, User
    from meters.services.api_keys import KEY_PREFIX, hash_key
    from tests.factories import new_wallet

    owner = User.objects.create(username=f"bench-{run}", wallet_address=new_wallet())
    meters, keys, plan = [], [], []
    for client in range(clients):
        mine = []
        for index in range(meters_per_client):
            meter = Meter(serial=f"B{run}-{client}-{index}", owner=owner, wallet_address=owner.wallet_address)
            raw = f"{KEY_PREFIX}{uuid.uuid4().hex}{uuid.uuid4().hex}"
            meters.append(meter)
            keys.append(ApiKey(owner=owner, scope="device", meter=meter, prefix=raw[:12], key_hash=hash_key(raw)))
            mine.append((meter.serial, raw))
        plan.append(mine)
    Meter.objects.bulk_create(meters, batch_size=2000)
    ApiKey.objects.bulk_create(keys, batch_size=2000)
    fleet_key = None
    if fleet:
        fleet_key = f"{KEY_PREFIX}{uuid.uuid4().hex}{uuid.uuid4().hex}"
        ApiKey.objects.create(owner=owner, scope="fleet", prefix=fleet_key[:12], key_hash=hash_key(fleet_key))
    return {"owner_id": str(owner.pk), "plan": plan, "fleet_key": fleet_key}


def cleanup(owner_id: str) -> None:
    from django.db import connection

    from meters.models import ApiKey, Meter, MeterReading, User

    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {MeterReading._meta.db_table} WHERE user_id = %s", [owner_id])
    ApiKey.objects.filter(owner_id=owner_id).delete()
    Meter.objects.filter(owner_id=owner_id).delete()
    User.objects.filter(pk=owner_id).delete()
    # Deleted rows stay behind as dead tuples; without autovacuum the next run would scan them.
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {MeterReading._meta.db_table}")


def kwh_text(wh: int) -> str:
    return f"{wh // 1000}.{wh % 1000:03d}"


def register_totals(client: int, index: int, imported_wh: int, exported_wh: int) -> dict[str, str]:
    """A meter's OBIS totals: its own starting point plus what every meter has counted since the first step."""
    start_wh = 1_000_000 * (1 + client) + 10_000 * index  # 1,000 kWh and more: a meter that has run for years
    return {"1.8.0": kwh_text(start_wh + imported_wh), "2.8.0": kwh_text(start_wh // 2 + exported_wh)}


def client_loop(
    mode, kind, url, client, meters, fleet_key, batch_size, start_at, stop_at, base, progress, results
) -> None:
    host, port = url.split("//")[1].split(":")
    port = int(port)
    latencies, statuses, accepted, rejected, errors = [], {}, 0, 0, []
    interval = 0
    imported_wh = exported_wh = 0  # register reads: counted since each meter's first (baseline) read
    cpu_start = time.process_time()
    while time.time() < start_at:
        time.sleep(0.01)
    while time.time() < stop_at:
        moment = (base + interval * INTERVAL).isoformat().replace("+00:00", "Z")
        if mode == "single":
            for index, (serial, key) in enumerate(meters):
                if time.time() >= stop_at:
                    break
                if kind == "register":
                    totals = register_totals(client, index, imported_wh, exported_wh)
                    body = json.dumps({"timestamp": moment, "registers": totals, "voltage": 230.1}).encode()
                else:
                    body = json.dumps({"kwh": "1.234", "timestamp": moment, "voltage": 230.1}).encode()
                headers = {"Content-Type": "application/json", "X-API-Key": key}
                begin = time.perf_counter()
                status, content = request(host, port, "POST", f"/api/v1/meters/{serial}/readings", body, headers)
                latencies.append(time.perf_counter() - begin)
                statuses[status] = statuses.get(status, 0) + 1
                accepted += status == 201
                if status >= 300 and len(errors) < ERROR_SAMPLES:
                    errors.append(f"{status} {serial} {moment}: {content.decode(errors='replace')[:500]}")
                progress.value += 1
        else:
            chosen = meters[:batch_size]
            if kind == "register":
                readings = [
                    {
                        "meter_serial": serial,
                        "timestamp": moment,
                        "registers": register_totals(client, index, imported_wh, exported_wh),
                    }
                    for index, (serial, _) in enumerate(chosen)
                ]
            else:
                readings = [{"meter_serial": serial, "kwh": "0.25", "timestamp": moment} for serial, _ in chosen]
            body = json.dumps({"readings": readings}).encode()
            headers = {"Content-Type": "application/json", "X-API-Key": fleet_key}
            begin = time.perf_counter()
            status, content = request(host, port, "POST", "/api/v1/meters/batch/readings", body, headers)
            latencies.append(time.perf_counter() - begin)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                done = json.loads(content)
                accepted += sum(1 for result in done["results"] if result["status"] == "accepted")
                progress.value += done["success_count"]
                for result in done["results"]:
                    if result["status"] != "accepted":  # rejected, or a duplicate, which no run here should send
                        rejected += 1
                        if len(errors) < ERROR_SAMPLES:
                            item = readings[result["index"]]
                            errors.append(f"item {item['meter_serial']} {moment}: {json.dumps(result)[:500]}")
            elif len(errors) < ERROR_SAMPLES:
                errors.append(f"{status} batch {moment}: {content.decode(errors='replace')[:500]}")
        interval += 1
        imported_wh += IMPORT_STEP_WH
        exported_wh += EXPORT_STEP_WH[interval % len(EXPORT_STEP_WH)]
    results.put(
        {
            "latencies": latencies,
            "statuses": statuses,
            "accepted": accepted,
            "rejected": rejected,
            "errors": errors,
            "cpu": time.process_time() - cpu_start,
        }
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def run_mode(mode: str, args, url: str, run: str, server=None) -> dict:
    """One mode's run; its label names the reading kind and mint basis when they are not the defaults."""
    from meters.models import MeterReading

    per_client = args.batch_size if mode == "batch" else args.meters_per_client
    fixtures = create_fixtures(f"{run}{mode[0]}", args.clients, per_client, fleet=mode == "batch")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7) + timedelta(minutes=10)
    progress = [multiprocessing.Value("q", 0, lock=False) for _ in range(args.clients)]
    results = multiprocessing.Queue()
    start_at = time.time() + 1.0
    stop_at = start_at + args.duration
    processes = [
        multiprocessing.Process(
            target=client_loop,
            args=(mode, args.readings, url, i, fixtures["plan"][i], fixtures["fleet_key"], args.batch_size, start_at,
                  stop_at, base, progress[i], results),
        )
        for i in range(args.clients)
    ]  # fmt: skip
    for process in processes:
        process.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = cpu_snapshot(server)
    last, last_at = 0, start_at
    while time.time() < stop_at:
        time.sleep(2.0)
        now, total = time.time(), sum(p.value for p in progress)
        print(f"  [{mode}] t={now - start_at:5.1f}s readings={total:>9,} ({(total - last) / (now - last_at):>9,.0f}/s)")
        last, last_at = total, now
    outcomes = [results.get(timeout=120) for _ in processes]
    cpu = cpu_used(cpu_before, cpu_snapshot(server))
    for process in processes:
        process.join()
    latencies = [value for outcome in outcomes for value in outcome["latencies"]]
    statuses: dict[int, int] = {}
    for outcome in outcomes:
        for status, count in outcome["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    accepted = sum(outcome["accepted"] for outcome in outcomes)
    rejected = sum(outcome["rejected"] for outcome in outcomes)
    errors = [error for outcome in outcomes for error in outcome["errors"]]
    stored = MeterReading.objects.filter(user_id=fixtures["owner_id"]).count()
    label = mode + (" register reads" if args.readings == "register" else "")
    label += f", mint basis {args.mint_basis}" if args.mint_basis else ""
    summary = {
        "mode": mode,
        "kind": args.readings,
        "mint_basis": args.mint_basis or "server default",
        "requests": len(latencies),
        "requests_per_s": len(latencies) / args.duration,
        "readings": accepted,
        "readings_per_s": accepted / args.duration,
        "statuses": statuses,
        "items_not_accepted": rejected,
        "error_samples": errors,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "rows_match": stored == accepted,
        "cpu_ms_per_request": {
            "gunicorn": cpu["gunicorn"] * 1000 / max(1, len(latencies)),
            "postgres": cpu["postgres"] * 1000 / max(1, len(latencies)),
            "clients": sum(outcome["cpu"] for outcome in outcomes) * 1000 / max(1, len(latencies)),
        },
    }
    per_request = summary["cpu_ms_per_request"]
    total_ms = sum(per_request.values())
    per_reading = accepted / max(1, len(latencies))
    projected = os.cpu_count() * 1000 / total_ms * per_reading if total_ms else 0.0
    summary["projected_readings_per_s_on_idle_cores"] = projected
    print(
        f"== {label}: {summary['readings']:,} readings in {args.duration}s = "
        f"{summary['readings_per_s']:,.0f} readings/s "
        f"({summary['requests_per_s']:,.0f} requests/s); latency p50 {summary['p50_ms']:.1f} ms, "
        f"p90 {summary['p90_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, max {summary['max_ms']:.1f} ms; "
        f"statuses {statuses}; rows in DB match accepted: {summary['rows_match']} ({stored:,})"
    )
    print(
        f"   CPU per request: gunicorn {per_request['gunicorn']:.2f} ms, postgres backends "
        f"{per_request['postgres']:.2f} ms, bench clients {per_request['clients']:.2f} ms -> "
        f"{summary['projected_readings_per_s_on_idle_cores']:,.0f} readings/s if all {os.cpu_count()} cores "
        "were ours (PostgreSQL background writers and Redis not counted)"
    )
    if rejected or errors:
        print(f"   NOT ACCEPTED: {rejected:,} batch items; first error bodies (up to {ERROR_SAMPLES} per client):")
        for error in errors:
            print(f"     {error}")
    if not args.keep:
        cleanup(fixtures["owner_id"])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("single", "batch", "both"), default="both")
    parser.add_argument("--url", help="a running server (default: start gunicorn here)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (when started here)")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--duration", type=int, default=15, help="seconds per mode")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--meters-per-client", type=int, default=100, help="single mode")
    parser.add_argument(
        "--readings",
        choices=("interval", "register"),
        default="interval",
        help="interval: kwh per 15 min (default); register: cumulative OBIS 1.8.0/2.8.0 totals per 15 min",
    )
    parser.add_argument(
        "--mint-basis",
        choices=("reading", "export", "window"),
        help="TOKENIZATION_MINT_BASIS for the server started here (default: the server's own default, reading)",
    )
    parser.add_argument("--log-level", default="WARNING", help="server LOG_LEVEL (INFO logs every request)")
    parser.add_argument("--keep", action="store_true", help="keep the rows the run created")
    parser.add_argument(
        "--no-events", action="store_true", help="diagnostic: run the server without a channel layer (no live events)"
    )
    args = parser.parse_args()
    if args.url and args.mint_basis:
        parser.error("--mint-basis sets the environment of the server started here; with --url set it on yours")
    setup_django()
    server = None
    url = args.url
    if url is None:
        server, url = start_server(args.workers, args.log_level, args.no_events, args.mint_basis)
    run = uuid.uuid4().hex[:6]
    print(
        f"ingest bench {run}: {url}, {args.clients} clients, {args.duration}s per mode, "
        f"{os.cpu_count()} CPUs, {'gunicorn sync x' + str(args.workers) if server else 'external server'}"
        f"{', NO live events (diagnostic)' if args.no_events else ''}, {args.readings} readings"
        f"{', TOKENIZATION_MINT_BASIS=' + args.mint_basis if args.mint_basis else ''}"
    )
    try:
        modes = ("single", "batch") if args.mode == "both" else (args.mode,)
        summaries = [run_mode(mode, args, url, run, server) for mode in modes]
        print(json.dumps(summaries, default=str))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
