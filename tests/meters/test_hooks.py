"""meters starts minting through the hook minting registers at start-up, never by importing it."""

import pytest

from meters import hooks
from minting.triggers import mint_soon
from tests.meters.conftest import rfc3339

SUBMIT = "/api/meters/submit-reading"
BATCH = "/api/v1/meters/batch/readings"


def test_minting_registers_its_trigger_at_start_up():
    assert hooks._readings_stored == [mint_soon]


@pytest.mark.django_db
def test_hooks_run_once_each_and_only_after_the_commit(monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(hooks, "_readings_stored", [])
    calls = []
    first, second = (lambda: calls.append("first")), (lambda: calls.append("second"))
    for hook in (first, second, first):
        hooks.on_readings_stored(hook)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        hooks.readings_stored()
    assert calls == []
    for callback in callbacks:
        callback()
    assert calls == ["first", "second"]


@pytest.mark.django_db
def test_replays_and_refusals_run_no_hook(monkeypatch, post, meter, device_key, fleet_key, recent):
    """What the mint trigger's debounce cannot show: no refused or replayed reading asks for a mint at all."""
    calls = []
    monkeypatch.setattr(hooks, "_readings_stored", [lambda: calls.append("stored")])
    body = {"kwh_amount": "1.5", "reading_timestamp": rfc3339(recent)}
    assert post(SUBMIT, body, key=device_key).status_code == 201
    assert calls == ["stored"]

    assert post(SUBMIT, body, key=device_key).json()["duplicate"] is True
    assert post(SUBMIT, {**body, "kwh_amount": "1000"}, key=device_key).status_code == 400
    batch = {"readings": [{"meter_serial": meter.serial, "kwh": "1.5", "timestamp": rfc3339(recent)}]}
    assert post(BATCH, batch, key=fleet_key).json()["results"][0]["status"] == "duplicate"
    assert calls == ["stored"]
