"""The MQTT door against a real Mosquitto and the real database: presets, refusals, duplicates, a SIGKILL
mid-stream, and the broker files ``mqtt_acl`` writes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from meters.models import MeterReading
from protocols.mqtt import acl, topics
from protocols.mqtt.ingester import Ingester
from tests.conftest import database_url, wait_until
from tests.factories import MeterFactory
from tests.meters import fleet_payloads as fleet
from tests.protocols.conftest import Mosquitto, Peer, forget_session

ROOT = Path(__file__).resolve().parents[2]


def drive(ingester: Ingester, until, *, timeout: float = 60.0) -> None:
    """Run the ingester's store loop in this thread (and this test's transaction) until ``until()``."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"not reached; counts {dict(ingester.counts)}"
        ingester.step()


def recent(hours: int = 1) -> datetime:
    return datetime.now(UTC).replace(microsecond=0, second=0) - timedelta(hours=hours)


def test_each_topic_preset_stores_its_reading_field_for_field(db, ingester, peer):
    meters = {name: MeterFactory() for name in ("gridtoken", "tasmota", "shelly", "rpc")}
    run = ingester(tasmota_timezone="Asia/Bangkok")
    moment = recent()
    simulator = json.loads(fleet.SIMULATOR_READING_JSON) | {"timestamp": moment.isoformat()}
    simulator.pop("meter_serial")
    tasmota = json.loads(fleet.TASMOTA_SML_SENSOR_JSON)
    tasmota["Time"] = moment.astimezone(ZoneInfo("Asia/Bangkok")).replace(tzinfo=None).isoformat()  # no offset
    rpc = json.loads(fleet.SHELLY_NOTIFY_STATUS_JSON)
    rpc["params"]["ts"] = moment.timestamp() + 0.42
    rpc_power_only = {"method": "NotifyStatus", "params": {"ts": moment.timestamp(), "em:0": {"total_act_power": 9}}}
    sender = peer()
    sender.publish(f"gridtoken/meters/{meters['gridtoken'].serial}/readings", json.dumps(simulator))
    sender.publish(f"tele/{meters['tasmota'].serial}/SENSOR", json.dumps(tasmota))
    sender.publish(f"{meters['shelly'].serial}/status/emdata:0", fleet.wire_bytes(fleet.SHELLY_EMDATA_STATUS_JSON))
    sender.publish(f"{meters['rpc'].serial}/events/rpc", json.dumps(rpc_power_only))
    sender.publish(f"{meters['rpc'].serial}/events/rpc", json.dumps(rpc))
    before_shelly = datetime.now(UTC)
    drive(run, lambda: sum(run.counts.values()) >= 5)

    rows = {row.meter_id: row for row in MeterReading.objects.all()}
    assert len(rows) == 4 and run.counts["accepted"] == 4 and run.counts["ignored"] == 1
    row = rows[meters["gridtoken"].id]
    assert (row.source, row.kwh_amount, row.reading_timestamp) == ("interval", Decimal("0.85"), moment)
    assert (row.generated_kwh, row.consumed_kwh, row.interval_secs) == (Decimal("1.25"), Decimal("0.4"), 900)
    assert row.wallet_address == meters["gridtoken"].wallet_address and row.user_id == meters["gridtoken"].owner_id
    assert row.telemetry["voltage"] == 231.42 and row.telemetry["reading_id"] == "MTR-0042-17"
    assert row.status == MeterReading.Status.RECORDED or row.mintable_kwh == Decimal("0.85")
    row = rows[meters["tasmota"].id]
    assert (row.source, row.reading_timestamp) == ("register", moment)  # Bangkok local time read as UTC+7
    assert (row.import_register_kwh, row.export_register_kwh) == (Decimal("12345.6789"), Decimal("2345.0123"))
    row = rows[meters["shelly"].id]
    assert (row.import_register_kwh, row.export_register_kwh) == (Decimal("12.41946"), Decimal("2.6982"))
    assert before_shelly - timedelta(seconds=5) < row.reading_timestamp <= datetime.now(UTC)  # no time: receipt
    row = rows[meters["rpc"].id]
    assert row.reading_timestamp == moment + timedelta(milliseconds=420)
    assert (row.import_register_kwh, row.export_register_kwh) == (Decimal("12.41946"), Decimal("2.6982"))


def test_unknown_meter_and_foreign_body_are_answered_on_the_error_topic_and_acknowledged(
    db, mqtt_broker, ingester, peer
):
    meter, other = MeterFactory(), MeterFactory()
    run = ingester(topics=(("gridtoken", "gridtoken/meters/{serial}/readings"),))
    listener = peer(subscribe=["gridtoken/meters/+/errors"])
    body = {"kwh": 1.5, "timestamp": recent().isoformat()}
    sender = peer()
    sender.publish("gridtoken/meters/NO-SUCH-METER/readings", json.dumps(body))
    sender.publish(f"gridtoken/meters/{meter.serial}/readings", json.dumps(body | {"meter_serial": other.serial}))
    sender.publish(f"gridtoken/meters/{meter.serial}/readings", json.dumps({"kwh": 1.5}))  # no time of its own
    wait_until(lambda: (run.step() or True) and len(listener.received) >= 3, timeout=60, interval=0)

    answers = {topic: json.loads(payload) for topic, payload in listener.received}
    assert answers["gridtoken/meters/NO-SUCH-METER/errors"]["error"]["code"] == "meter_not_found"  # REST's 404 code
    refused = [json.loads(payload)["error"] for topic, payload in listener.received if meter.serial in topic]
    assert [error["code"] for error in refused] == ["forbidden", "validation_error"]
    assert refused[1]["field"] == "timestamp"
    assert run.counts["rejected"] == 3 and run.counts["rejected:meter_not_found"] == 1
    assert not MeterReading.objects.exists()

    # Acknowledged: the same session, resumed by another client, is not sent these messages again.
    run.stop()
    run.close()
    resumed = Ingester(run.cfg)
    resumed.start()
    assert resumed.subscribed.wait(30)
    time.sleep(0.5)
    resumed.step()
    resumed.stop()
    resumed.close()
    assert sum(resumed.counts.values()) == 0 and len(listener.received) == 3


def test_the_same_message_published_twice_is_stored_once(db, ingester, peer):
    meter = MeterFactory()
    run = ingester()
    message = json.dumps({"kwh": 2.25, "timestamp": recent().isoformat()})
    sender = peer()
    sender.publish(f"gridtoken/meters/{meter.serial}/readings", message)
    drive(run, lambda: run.counts["accepted"] == 1)
    sender.publish(f"gridtoken/meters/{meter.serial}/readings", message)
    sender.publish(f"gridtoken/meters/{meter.serial}/readings", message)  # and once more, in one batch
    drive(run, lambda: run.counts["duplicate"] == 2)
    assert list(MeterReading.objects.values_list("kwh_amount", flat=True)) == [Decimal("2.25")]
    assert run.counts["rejected"] == 0


def test_one_batch_of_several_owners_meters_is_stored_in_one_call_each_row_its_owners(db, ingester, peer):
    meters = [MeterFactory() for _ in range(3)]
    assert len({meter.owner_id for meter in meters}) == 3
    run, sender = ingester(), peer()
    for meter in meters:
        sender.publish(
            f"gridtoken/meters/{meter.serial}/readings", json.dumps({"kwh": 1, "timestamp": recent().isoformat()})
        )
    wait_until(lambda: run.queue.qsize() == 3, timeout=10)
    with CaptureQueriesContext(connection) as queries:
        run.step()

    assert run.counts["accepted"] == 3
    stored = {row.meter_id: row for row in MeterReading.objects.all()}
    assert [(stored[m.id].user_id, stored[m.id].wallet_address) for m in meters] == [
        (m.owner_id, m.wallet_address) for m in meters
    ]
    # One readings_submit_batch call (one meter-lock statement), not one per owner.
    assert sum("pg_advisory_xact_lock" in query["sql"] for query in queries.captured_queries) == 1


def test_the_broker_holds_what_exceeds_the_receive_maximum_while_nothing_is_stored(db, ingester, peer):
    meters = [MeterFactory() for _ in range(4)]
    run = ingester(queue_max=5, batch_max=5)  # Receive Maximum 10: the broker sends 10, keeps the other 30
    start, sender = recent(hours=6), peer()
    for n in range(10):
        for meter in meters:
            moment = (start + timedelta(minutes=15 * n)).isoformat()
            sender.publish(f"gridtoken/meters/{meter.serial}/readings", json.dumps({"kwh": 1, "timestamp": moment}))
    time.sleep(0.3)  # nothing is being stored: the broker stops at 10 unacknowledged, the queue holds them
    assert run.queue.qsize() == 10 and run.queue.maxsize == 10
    drive(run, lambda: run.counts["accepted"] == 40)
    assert MeterReading.objects.count() == 40 and run.queue.qsize() == 0


def _ingest_process(
    broker: Mosquitto, log: Path, client_id: str, group: str, *, launcher: tuple = (), **extra_env: str
) -> subprocess.Popen:
    """``manage.py ingest_mqtt`` on the test database; ``launcher``: Python options before ``manage.py``."""
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.CELERY_BROKER_URL,
        "MQTT_URL": broker.url,
        "MQTT_SHARE_GROUP": group,
        "MQTT_TOPICS": "gridtoken",
        "MQTT_BATCH_MAX": "10",
        "MQTT_BATCH_MS": "5",
        "TOKENIZATION_AUTO_MINT_ENABLED": "false",
        **extra_env,
    }
    handle = open(log, "ab")  # noqa: SIM115 (kept open for the subprocess' lifetime)
    command = [sys.executable, *launcher, "manage.py", "ingest_mqtt", "--client-id", client_id]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return process


def test_an_ingester_killed_mid_stream_and_restarted_stores_every_message_exactly_once(
    transactional_db, mqtt_broker, peer, tmp_path
):
    meters = [MeterFactory() for _ in range(10)]
    start = recent(hours=12)
    messages = [
        (f"gridtoken/meters/{meter.serial}/readings", {"kwh": 0.5, "timestamp": (start + timedelta(minutes=15 * n))})
        for n in range(30)
        for meter in meters
    ]
    client_id, group, log = f"crash-{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}", tmp_path / "ingest.log"
    first = _ingest_process(mqtt_broker, log, client_id, group)
    try:
        wait_until(lambda: b"mqtt subscribed" in log.read_bytes() or first.poll() is not None, timeout=30)
        assert first.poll() is None, log.read_text()
        sender = peer()
        for topic, body in messages:
            sender.publish(topic, json.dumps(body, default=str))
        wait_until(lambda: MeterReading.objects.count() >= 40, timeout=30, interval=0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stored_at_kill = MeterReading.objects.count()
        assert stored_at_kill < len(messages), "killed after the stream had ended: not a mid-stream kill"

        second = _ingest_process(mqtt_broker, log, client_id, group)
        try:
            wait_until(lambda: MeterReading.objects.count() >= len(messages), timeout=30)
            time.sleep(0.5)  # a doubled row would show up now
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
        forget_session(mqtt_broker, client_id)

    rows = list(MeterReading.objects.values_list("meter__serial", "reading_timestamp"))
    assert len(rows) == len(messages) and len(set(rows)) == len(messages)
    assert set(rows) == {(topic.split("/")[2], body["timestamp"]) for topic, body in messages}
    assert "mqtt ingester stopped" in log.read_text()


def test_the_generated_password_and_acl_files_let_a_meter_publish_only_on_its_own_topics(db, settings, tmp_path):
    own, other = MeterFactory(), MeterFactory()
    settings.MQTT = dataclasses.replace(settings.MQTT, username="ingester", password="ingest-pw-1")
    passwords, acl_file = tmp_path / "passwords", tmp_path / "acl"
    call_command("mqtt_acl", passwords=passwords, acl=acl_file, stdout=open(os.devnull, "w"))  # noqa: SIM115
    secret = settings.MQTT.device_secret
    broker = Mosquitto(
        tmp_path, ("allow_anonymous false", f"password_file {passwords}", f"acl_file {acl_file}")
    ).start()
    try:
        ingester = Peer(
            broker.port, username="ingester", password="ingest-pw-1",
            subscribe=["$share/g/gridtoken/meters/+/readings", "tele/+/SENSOR"],
        )  # fmt: skip
        password = acl.device_password(secret, own.serial)
        # QoS 0: Mosquitto answers a denied QoS 1 publish with PUBACK "not authorized", on which paho 2.1 drops
        # the connection. The refused ones go over a connection of their own, closed (its packets sent) before
        # the device's next connection publishes: a broker that also drops the connection after a refused QoS 0
        # publish (seen once in a parallel run) then fails nothing this test is about.
        intruder = Peer(broker.port, username=own.serial, password=password)
        intruder.publish(f"gridtoken/meters/{other.serial}/readings", "not mine", qos=0)
        intruder.publish(f"tele/{other.serial}/SENSOR", "not mine either", qos=0)
        intruder.close()
        device = Peer(broker.port, username=own.serial, password=password)
        device.publish(f"gridtoken/meters/{own.serial}/readings", "mine")
        device.publish(f"tele/{own.serial}/SENSOR", "mine too")
        wait_until(lambda: len(ingester.received) >= 2, timeout=30, interval=0.05)
        time.sleep(0.3)  # (the refused ones were handled first: nothing more can be on its way)
        assert sorted(ingester.received) == [
            (f"gridtoken/meters/{own.serial}/readings", b"mine"),
            (f"tele/{own.serial}/SENSOR", b"mine too"),
        ]
        wrong = Peer(broker.port, username=own.serial, password="wrong", reconnect_on_failure=False)
        assert wrong.connack.is_failure
        for client in (ingester, device, wrong):
            client.close()
    finally:
        broker.stop()


def test_the_ingester_reports_itself_and_its_counts_to_ready_and_metrics(db, ingester, peer):
    from ops import health
    from protocols import status

    meter = MeterFactory()
    run = ingester()
    before = status.ingester_totals()
    peer().publish(
        f"gridtoken/meters/{meter.serial}/readings", json.dumps({"kwh": 1, "timestamp": recent().isoformat()})
    )
    peer().publish("gridtoken/meters/NO-SUCH-METER/readings", json.dumps({"kwh": 1, "timestamp": recent().isoformat()}))
    drive(run, lambda: run.counts["accepted"] == 1 and run.counts["rejected"] == 1)
    run.heartbeat()

    live = {one["name"]: one for one in status.ingesters_status()}
    assert live[run.client_id]["connected"] is True and live[run.client_id]["lag_seconds"] is not None
    after = status.ingester_totals()
    assert after["stored"] - before.get("stored", 0) == 1
    assert after["refused"]["meter_not_found"] - before.get("refused", {}).get("meter_not_found", 0) == 1
    _, body = health.ready_answer()
    assert run.client_id in [one["name"] for one in body["mqtt"]["ingesters"]]
    run.close()
    assert run.client_id not in {one["name"] for one in status.ingesters_status()}


@pytest.mark.parametrize(
    ("template", "topic", "serial"),
    [
        ("gridtoken/meters/{serial}/readings", "gridtoken/meters/M-1/readings", "M-1"),
        ("gridtoken/meters/{serial}/readings", "gridtoken/meters/readings", None),  # no serial level
        ("gridtoken/meters/{serial}/readings", "gridtoken/meters//readings", None),  # an empty one
        ("gridtoken/meters/{serial}/readings", "gridtoken/meters/a/b/readings", None),  # two levels
        ("gridtoken/meters/{serial}/readings", "site/gridtoken/meters/M-1/readings", None),
        ("gridtoken/meters/{serial}/readings", "gridtoken/meters/M-1/errors", None),
        ("{serial}/status/emdata:0", "shelly-1/status/emdata:0", "shelly-1"),
        ("{serial}/status/emdata:0", "x/shelly-1/status/emdata:0", None),
        ("tele/{serial}", "tele/T-1", "T-1"),
        ("tele/{serial}", "tele/T-1/SENSOR", None),
    ],
)
def test_a_topic_names_a_serial_only_in_its_layouts_serial_level(template, topic, serial):
    assert topics.Layout("gridtoken", template).serial(topic) == serial
