"""The soak's clients (bench/soak.py): meters posting through REST, aggregators posting batches, and
WebSocket listeners. Each runs in its own process and writes what it saw to a JSON file at the end.

Clients behave as well-written field devices do: a 5xx, a 429 or a broken connection is retried with the
same body after a back-off (the service answers a replay of a stored reading with that reading's id), any
other 4xx is final. Every attempt's outcome is counted, so the report can say how many 5xx there were and
when, not only whether the reading got in in the end.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import zlib
from datetime import datetime, timedelta
from pathlib import Path

SLOT = timedelta(minutes=15)
GIVE_UP_AFTER_STOP_SECS = 120  # a request still failing this long after the load stopped is abandoned
# Counter slots in each client process's shared array (bench/soak.py sums them for progress).
ACCEPTED, REQUESTS, SERVER_ERRORS, CONNECTION_ERRORS, RATE_LIMITED, REJECTED, ABANDONED = range(7)
COUNTERS = 7


def kwh_of(serial: str, slot: int) -> str:
    """A meter's reading for one 15-minute slot: 0.001-4.000 kWh, the same text every time it is asked for
    (a retry must be a byte-identical replay, or the service calls it a conflict)."""
    wh = zlib.crc32(f"{serial}/{slot}".encode()) % 4000 + 1
    return f"{wh // 1000}.{wh % 1000:03d}"


def stamp(base: datetime, slot: int) -> str:
    return (base + SLOT * slot).isoformat().replace("+00:00", "Z")


class Poster:
    """Sends one request until it has a final answer; counts every attempt in ``counters``."""

    def __init__(self, host: str, port: int, counters, lock: threading.Lock, stop_at: float, log: list) -> None:
        self.host, self.port, self.counters, self.lock = host, port, counters, lock
        self.stop_at, self.log = stop_at, log

    def count(self, slot: int, by: int = 1) -> None:
        with self.lock:
            self.counters[slot] += by

    def send(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes] | None:
        delay = 0.25
        while True:
            self.count(REQUESTS)
            status = None
            try:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    status, content = response.status, response.read()
                finally:
                    connection.close()
            except (OSError, http.client.HTTPException) as error:
                self.count(CONNECTION_ERRORS)
                kind = type(error).__name__
            if status is not None:
                if status < 500 and status != 429:
                    return status, content
                self.count(SERVER_ERRORS if status >= 500 else RATE_LIMITED)
                kind = str(status)
                if status >= 500:
                    with self.lock:
                        self.log.append([time.time(), status, path, content[:300].decode(errors="replace")])
            if time.time() > self.stop_at + GIVE_UP_AFTER_STOP_SECS:
                self.count(ABANDONED)
                with self.lock:
                    self.log.append([time.time(), "abandoned", path, kind])
                return None
            time.sleep(delay)
            delay = min(delay * 2, 4.0)


def meter_loop(poster: Poster, meters: list, base: datetime, t0: float, interval: float, out: list) -> None:
    """One device thread: its meters post one reading each per slot, each at its own offset in the slot."""
    slot = 0
    while True:
        for serial, key, offset in meters:
            due = t0 + slot * interval + offset
            if due >= poster.stop_at:
                return
            time.sleep(max(0.0, due - time.time()))
            kwh = kwh_of(serial, slot)
            body = json.dumps({"kwh": kwh, "timestamp": stamp(base, slot)}).encode()
            headers = {"Content-Type": "application/json", "X-API-Key": key}
            answer = poster.send(f"/api/v1/meters/{serial}/readings", body, headers)
            if answer is None:
                continue
            status, content = answer
            if status in (200, 201):
                poster.count(ACCEPTED)
                out.append([json.loads(content)["id"], serial, slot, kwh])
            else:
                poster.count(REJECTED)
                with poster.lock:
                    poster.log.append([time.time(), status, serial, content[:300].decode(errors="replace")])
        slot += 1


def aggregator_loop(poster: Poster, fleet: dict, base: datetime, t0: float, interval: float, out: list) -> None:
    """One aggregator: every slot, one batch with a reading for each of its meters."""
    slot = 0
    serials = fleet["serials"]
    while True:
        due = t0 + slot * interval + fleet["offset"]
        if due >= poster.stop_at:
            return
        time.sleep(max(0.0, due - time.time()))
        items = [{"meter_serial": s, "kwh": kwh_of(s, slot), "timestamp": stamp(base, slot)} for s in serials]
        headers = {"Content-Type": "application/json", "X-API-Key": fleet["key"]}
        answer = poster.send("/api/v1/meters/batch/readings", json.dumps({"readings": items}).encode(), headers)
        slot += 1
        if answer is None:
            continue
        status, content = answer
        if status != 200:
            poster.count(REJECTED, len(items))
            with poster.lock:
                poster.log.append([time.time(), status, "batch", content[:300].decode(errors="replace")])
            continue
        for result in json.loads(content)["results"]:
            item = items[result["index"]]
            if result["status"] in ("accepted", "duplicate") and result.get("id"):
                poster.count(ACCEPTED)
                out.append([result["id"], item["meter_serial"], slot - 1, item["kwh"]])
            else:
                poster.count(REJECTED)
                with poster.lock:
                    poster.log.append([time.time(), "item", item["meter_serial"], json.dumps(result)[:300]])


def rest_process(plan: dict, counters, result_path: str) -> None:
    """A client process: ``plan`` has host, port, base (ISO), t0, interval, stop_at, and either ``threads``
    (lists of [serial, device key, offset]) or ``fleets`` (dicts of key, serials, offset)."""
    lock = threading.Lock()
    log: list = []
    out: list = []
    poster = Poster(plan["host"], plan["port"], counters, lock, plan["stop_at"], log)
    base = datetime.fromisoformat(plan["base"])
    threads = [
        threading.Thread(target=meter_loop, args=(poster, meters, base, plan["t0"], plan["interval"], out))
        for meters in plan.get("threads", [])
    ] + [
        threading.Thread(target=aggregator_loop, args=(poster, fleet, base, plan["t0"], plan["interval"], out))
        for fleet in plan.get("fleets", [])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Path(result_path).write_text(json.dumps({"accepted": out, "log": log}))


# --- WebSocket listeners ---------------------------------------------------------------------------------


async def listen(url: str, user_id: str, token: str, stop: asyncio.Event, record: dict, sink) -> None:
    """One producer's dashboard: stays connected, reconnects after a drop, and notes when it was connected
    (from its greeting to the moment the connection ended) and every reading event it received."""
    from websockets.asyncio.client import connect

    delay = 0.5
    while not stop.is_set():
        opened = None
        try:
            async with connect(
                url, subprotocols=["token", token], proxy=None, open_timeout=10, ping_interval=10,
                ping_timeout=10, max_queue=None, close_timeout=2,
            ) as ws:  # fmt: skip
                greeting = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                if greeting.get("type") != "connected":
                    raise RuntimeError(f"no greeting: {greeting}")
                opened = time.time()
                record["open"] = True
                delay = 0.5
                reader = asyncio.ensure_future(ws.recv())
                stopper = asyncio.ensure_future(stop.wait())
                while True:
                    done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if stopper in done:
                        reader.cancel()
                        break
                    event = json.loads(reader.result())
                    if event.get("reading_id") and event.get("type") in ("meter_reading_received", "tokens_minted"):
                        sink.write(f"{user_id} {event['type'][0]} {event['reading_id']}\n")
                        record["events"] += 1
                    reader = asyncio.ensure_future(ws.recv())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            record["drops"] += 1
            record["last_error"] = repr(error)[:200]
        finally:
            record["open"] = False
            if opened is not None:
                record["intervals"].append([opened, time.time()])
        if not stop.is_set():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def ws_process(url: str, users: list, connected, events, stop_file: str, result_path: str) -> None:
    """``users``: [user id, token]; ``connected`` / ``events``: shared values for progress; the listeners
    stop when ``stop_file`` exists."""

    async def main() -> None:
        stop = asyncio.Event()
        records = {u: {"intervals": [], "events": 0, "drops": 0, "last_error": None, "open": False} for u, _ in users}
        with open(Path(result_path).with_suffix(".events"), "w", buffering=1 << 20) as sink:
            tasks = [
                asyncio.create_task(listen(url, user_id, token, stop, records[user_id], sink))
                for user_id, token in users
            ]
            while not Path(stop_file).exists():
                connected.value = sum(1 for r in records.values() if r["open"])
                events.value = sum(r["events"] for r in records.values())
                await asyncio.sleep(0.5)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        Path(result_path).write_text(json.dumps(records))

    asyncio.run(main())
