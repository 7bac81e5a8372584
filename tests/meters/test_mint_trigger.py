"""A committed reading asks the pipeline to mint soon: one debounced task per burst, none for refusals."""

import dataclasses
from datetime import timedelta

import pytest

from tests.conftest import queued_tasks
from tests.meters.conftest import rfc3339

SUBMIT = "/api/meters/submit-reading"
BATCH = "/api/v1/meters/batch/readings"
MINT_TASK = "minting.tasks.mint_due_readings"
pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(settings, broker):
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, trigger_debounce_ms=2000)
    return lambda: queued_tasks(broker)


def test_a_stored_reading_enqueues_a_mint(post, meter, device_key, recent, queued):
    body = {"kwh_amount": "1.5", "reading_timestamp": rfc3339(recent)}
    assert post(SUBMIT, body, key=device_key).status_code == 201
    assert queued() == [MINT_TASK]


def test_a_burst_of_readings_enqueues_one_mint(post, meter, device_key, recent, queued):
    for step in range(5):
        body = {"kwh_amount": "1", "reading_timestamp": rfc3339(recent + timedelta(minutes=15 * step))}
        assert post(SUBMIT, body, key=device_key).status_code == 201
    assert queued() == [MINT_TASK]


def test_a_batch_enqueues_one_mint(post, meter, fleet_key, recent, queued):
    items = [
        {"meter_serial": meter.serial, "kwh": "2", "timestamp": rfc3339(recent - timedelta(minutes=15 * i))}
        for i in range(10)
    ]
    response = post(BATCH, {"readings": items}, key=fleet_key)
    assert response.json()["success_count"] == 10
    assert queued() == [MINT_TASK]


def test_replays_and_refusals_enqueue_nothing(post, meter, device_key, fleet_key, recent, queued, broker):
    body = {"kwh_amount": "1.5", "reading_timestamp": rfc3339(recent)}
    post(SUBMIT, body, key=device_key)
    broker.flushdb()

    assert post(SUBMIT, body, key=device_key).json()["duplicate"] is True
    assert post(SUBMIT, {**body, "kwh_amount": "1000"}, key=device_key).status_code == 400
    batch = {"readings": [{"meter_serial": meter.serial, "kwh": "1.5", "timestamp": rfc3339(recent)}]}
    assert post(BATCH, batch, key=fleet_key).json()["results"][0]["status"] == "duplicate"
    assert queued() == []
