"""While PostgreSQL is unreachable, writes answer 503 ``database_unavailable`` with Retry-After, not a 500.

bench/soak.py found it: during a PostgreSQL restart every reading post was a 500 ``server_error``, which a
client cannot tell from a bug. The database cannot be taken away from under one test's connection, so the
ingestion service is replaced by one that raises what Django raises then (``OperationalError`` when a
connection cannot be opened or breaks mid-query, ``InterfaceError`` on a connection already closed).
"""

import pytest
from django.db import InterfaceError, OperationalError

from meters.models import MeterReading
from tests.meters.conftest import rfc3339

pytestmark = pytest.mark.django_db

LOST = [
    OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
    OperationalError("server closed the connection unexpectedly"),
    InterfaceError("connection already closed"),
]


def fail_with(error):
    def service(**kwargs):
        raise error

    return service


@pytest.mark.parametrize("error", LOST, ids=["refused", "closed_mid_query", "already_closed"])
def test_a_reading_posted_while_the_database_is_down_is_503_database_unavailable(
    post, monkeypatch, meter, device_key, recent, error
):
    monkeypatch.setattr("meters.apis.readings.reading_submit", fail_with(error))

    response = post(f"/api/v1/meters/{meter.serial}/readings", {"kwh": "1.5", "timestamp": rfc3339(recent)},
                    key=device_key)  # fmt: skip

    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == "database_unavailable"
    assert "retry" in body["error"]["message"]
    assert int(response["Retry-After"]) >= 1
    assert not MeterReading.objects.exists()


def test_a_batch_posted_while_the_database_is_down_is_503_database_unavailable(
    post, monkeypatch, meter, fleet_key, recent
):
    monkeypatch.setattr("meters.apis.readings.readings_submit_batch", fail_with(LOST[1]))
    item = {"meter_serial": meter.serial, "kwh": "1.5", "timestamp": rfc3339(recent)}

    response = post("/api/v1/meters/batch/readings", {"readings": [item]}, key=fleet_key)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert not MeterReading.objects.exists()
