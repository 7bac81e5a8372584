"""No message stops the MQTT ingester, against a real Mosquitto and the real database: a message that meets a bug
is a dead letter and the others are stored; one that kills the process is quarantined after
MQTT_POISON_MAX_DELIVERIES deliveries while the fleet's other messages keep flowing.

No real payload triggers an unknown bug or kills the process on purpose, so the tests plant one: the GridToken
format parser (or the batch call) raises, or SIGKILLs its own process, for payloads carrying a marker, and
every other message goes through the real code."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from decimal import Decimal

from meters import formats
from meters.models import DeadLetter, MessageAttempt, MeterReading
from protocols.mqtt import ingester as ingester_module
from tests.conftest import wait_until
from tests.factories import MeterFactory
from tests.protocols.conftest import forget_session
from tests.protocols.test_mqtt import _ingest_process, drive, recent

LAYOUT = (("gridtoken", "gridtoken/meters/{serial}/readings"),)
# Runs ``manage.py`` after making the GridToken format SIGKILL its process on a KILL-ME payload: the stand-in for
# the OOM killer or a crash in C. Loaded only by this test's command line; the product has no such switch.
KILLER_HOOK = """
import os, signal
import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
django.setup()
from meters import formats

real = formats.PARSERS["gridtoken"]


def killing(payload, **kwargs):
    if b"KILL-ME" in payload:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(payload, **kwargs)


formats.PARSERS["gridtoken"] = killing
"""


class PlantedBug(RuntimeError):
    """The stand-in for a bug no input can provoke on purpose."""


def topic(meter) -> str:
    return f"gridtoken/meters/{meter.serial}/readings"


def reading(moment, kwh="1.5", **extra) -> str:
    return json.dumps({"kwh": kwh, "timestamp": moment.isoformat(), **extra})


def test_a_message_that_meets_a_bug_is_a_dead_letter_answered_and_acknowledged_and_the_ingester_goes_on(
    db, ingester, peer, monkeypatch
):
    real = formats.PARSERS["gridtoken"]

    def planted(payload, **kwargs):
        if b"POISON" in payload:
            raise PlantedBug("planted in the gridtoken format")
        return real(payload, **kwargs)

    monkeypatch.setitem(formats.PARSERS, "gridtoken", planted)
    good, poisoned, later = MeterFactory(), MeterFactory(), MeterFactory()
    run = ingester(topics=LAYOUT)
    listener = peer(subscribe=["gridtoken/meters/+/errors"])
    sender, moment = peer(), recent()
    poison = reading(moment, note="POISON")
    sender.publish(topic(good), reading(moment))
    sender.publish(topic(poisoned), poison)
    sender.publish(topic(good), reading(moment + timedelta(minutes=15)))
    drive(run, lambda: sum(run.counts.values()) >= 3)
    sender.publish(topic(later), reading(moment))
    drive(run, lambda: run.counts["accepted"] == 3)
    wait_until(lambda: len(listener.received) >= 1, timeout=10)

    assert run.counts["rejected:internal_error"] == 1 and run.counts["rejected"] == 1
    assert sorted(MeterReading.objects.values_list("meter__serial", "kwh_amount")) == sorted(
        [(good.serial, Decimal("1.5")), (good.serial, Decimal("1.5")), (later.serial, Decimal("1.5"))]
    )
    letter = DeadLetter.objects.get()
    assert (letter.door, letter.topic, letter.meter_serial, letter.status) == (
        "mqtt", topic(poisoned), poisoned.serial, "pending"
    )  # fmt: skip
    assert bytes(letter.payload) == poison.encode() and "planted in the gridtoken format" in letter.error_traceback
    ((answered_on, answer),) = listener.received
    answer = json.loads(answer)
    assert answered_on == f"gridtoken/meters/{poisoned.serial}/errors" and answer["request_id"] == letter.request_id
    assert answer["error"]["code"] == "internal_error" and answer["error"]["details"]["dead_letter_id"] == letter.pk
    assert not MessageAttempt.objects.exists()  # every record deleted before the PUBACKs

    # Acknowledged: the session, resumed by another client, is not sent the poison again.
    run.stop()
    run.close()
    resumed = ingester_module.Ingester(run.cfg)
    resumed.start()
    assert resumed.subscribed.wait(30)
    time.sleep(0.5)
    resumed.step()
    resumed.stop()
    resumed.close()
    assert sum(resumed.counts.values()) == 0 and DeadLetter.objects.get().deliveries == 1


def test_a_batch_call_that_fails_as_a_whole_is_bisected_down_to_the_failing_message(db, ingester, peer, monkeypatch):
    real = ingester_module.readings_submit_batch

    def planted(*, readings, **kwargs):
        if any("POISON" in body for body in readings):
            raise PlantedBug("planted in the batch call")
        return real(readings=readings, **kwargs)

    monkeypatch.setattr(ingester_module, "readings_submit_batch", planted)
    meters = [MeterFactory() for _ in range(5)]
    run, sender, moment = ingester(topics=LAYOUT), peer(), recent()
    for n, meter in enumerate(meters):
        sender.publish(topic(meter), reading(moment, POISON=True) if n == 3 else reading(moment))
    wait_until(lambda: run.queue.qsize() == 5, timeout=10)
    run.step()

    assert run.counts["accepted"] == 4 and run.counts["rejected:internal_error"] == 1
    assert sorted(MeterReading.objects.values_list("meter__serial", flat=True)) == sorted(
        m.serial for n, m in enumerate(meters) if n != 3
    )
    letter = DeadLetter.objects.get()
    assert letter.meter_serial == meters[3].serial and letter.error_type.endswith("PlantedBug")


def test_a_message_that_kills_the_ingester_is_quarantined_and_the_others_keep_flowing(
    transactional_db, mqtt_broker, peer, tmp_path
):
    (tmp_path / "killer_hook.py").write_text(KILLER_HOOK)
    launcher = ("-c", f"import runpy, sys; sys.path.insert(0, {str(tmp_path)!r}); import killer_hook; "
                "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip
    meters = [MeterFactory() for _ in range(4)]
    start = recent(hours=12)
    before = [(meters[n % 4], start + timedelta(minutes=15 * n)) for n in range(12)]
    after = [(meters[n % 4], start + timedelta(minutes=15 * (n + 12))) for n in range(8)]
    client_id, group, log = f"poison-{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}", tmp_path / "ingest.log"

    def started() -> subprocess.Popen:
        process = _ingest_process(mqtt_broker, log, client_id, group, launcher=launcher, MQTT_POISON_MAX_DELIVERIES="2")
        mark = log.read_bytes().count(b"mqtt subscribed") if log.exists() else 0
        wait_until(lambda: log.read_bytes().count(b"mqtt subscribed") > mark or process.poll() is not None, timeout=30)
        return process

    listener = peer(subscribe=["gridtoken/meters/+/errors"])
    process, deaths = started(), 0
    try:
        sender = peer()
        for n, (meter, moment) in enumerate(before):
            sender.publish(topic(meter), reading(moment))
            if n == 5:
                sender.publish(topic(meters[1]), reading(start - timedelta(hours=1), note="KILL-ME"))
        deadline = time.monotonic() + 60
        while not DeadLetter.objects.filter(status="quarantined").exists():  # a supervisor restarting the ingester
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            if process.poll() is not None:
                assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
                deaths += 1
                process = started()
            time.sleep(0.05)
        for meter, moment in after:
            sender.publish(topic(meter), reading(moment))
        wait_until(lambda: MeterReading.objects.count() >= len(before) + len(after), timeout=30)
        time.sleep(0.5)  # a doubled row would show up now
        assert process.poll() is None, "the ingester runs on after the quarantine"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()[-3000:]
        forget_session(mqtt_broker, client_id)

    assert deaths == 2  # killed on its first and second delivery, set aside on the third
    rows = list(MeterReading.objects.values_list("meter__serial", "reading_timestamp"))
    assert sorted(rows) == sorted((meter.serial, moment) for meter, moment in before + after)
    letter = DeadLetter.objects.get()
    assert (letter.door, letter.status, letter.deliveries, letter.meter_serial) == (
        "mqtt", "quarantined", 3, meters[1].serial
    )  # fmt: skip
    assert b"KILL-ME" in bytes(letter.payload) and letter.error_type.endswith("PoisonMessage")
    assert not MessageAttempt.objects.exists()
    wait_until(lambda: len(listener.received) >= 1, timeout=10)
    assert json.loads(listener.received[0][1])["error"]["details"] == {"dead_letter_id": letter.pk}
