import logging

import pytest
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.test import RequestFactory

from gridtoken import observability
from gridtoken.middleware import RequestIdLogFilter
from ops.middleware import rejection_reasons

pytestmark = pytest.mark.django_db


@pytest.fixture
def access_log(caplog):
    with_request_id = RequestIdLogFilter()
    caplog.handler.addFilter(with_request_id)
    caplog.set_level(logging.DEBUG, logger="gridtoken.access")
    yield lambda: [r for r in caplog.records if r.name == "gridtoken.access"]
    caplog.handler.removeFilter(with_request_id)


def test_each_request_gets_one_access_line_with_its_request_id(client, access_log):
    response = client.get("/api/nothing-here?token=secret-token", HTTP_X_REQUEST_ID="req-123")
    (line,) = access_log()
    assert (line.levelname, line.method, line.path, line.status) == ("INFO", "GET", "/api/nothing-here", 404)
    assert line.request_id == "req-123" == response["X-Request-ID"]
    assert line.duration_ms >= 0 and line.bytes == len(response.content)
    assert "secret-token" not in line.getMessage() + line.path


def test_probe_requests_log_at_debug(client, access_log):
    client.get("/health")
    (line,) = access_log()
    assert (line.levelname, line.path, line.status) == ("DEBUG", "/health", 200)


def test_a_refused_reading_post_is_counted_under_its_error_code(client):
    response = client.post("/api/v1/meters/NO-SUCH-METER/readings", {"kwh": "1.0"}, content_type="application/json")
    assert 400 <= response.status_code < 500
    code = response.json()["error"]["code"]
    assert observability.rejected_counts() == {code: 1}


def test_reads_and_other_paths_are_not_counted_as_rejections(client):
    client.get("/api/v1/meters/NO-SUCH-METER/readings")
    client.post("/api/not-a-reading-path", {}, content_type="application/json")
    assert observability.rejected_counts() == {}


request = RequestFactory()


def reasons(path: str, response) -> list:
    return rejection_reasons(request.post(path), response)


def test_each_rejected_item_of_a_batch_counts_with_its_code():
    body = {
        "success_count": 2,
        "failed_count": 3,
        "results": [
            {"index": 0, "status": "accepted", "id": "a"},
            {"index": 1, "status": "rejected", "error": {"code": "kwh_out_of_range", "message": "too big"}},
            {"index": 2, "status": "duplicate", "id": "b"},
            {"index": 3, "status": "rejected", "error": "Meter is suspended."},
            {"index": 4, "status": "rejected", "code": "meter_not_found", "error": "no such meter"},
        ],
    }
    found = reasons("/api/v1/meters/batch/readings", JsonResponse(body))
    assert [observability.reason_label(code) for code in found] == ["kwh_out_of_range", "other", "meter_not_found"]
    assert reasons("/api/v1/public/meters/batch/readings", JsonResponse({**body, "results": body["results"][:1]})) == []


def test_whole_request_refusals_count_once_and_odd_bodies_count_as_unknown():
    error = {"error": {"code": "rate_limited", "message": "slow down"}, "request_id": None}
    assert reasons("/api/meters/submit-reading", JsonResponse(error, status=429)) == ["rate_limited"]
    assert reasons("/api/meters/submit-reading", HttpResponse("<html>", status=400)) == [None]
    assert reasons(
        "/api/meters/submit-reading", HttpResponse("{not json", status=400, content_type="application/json")
    ) == [None]
    assert reasons("/api/meters/submit-reading", StreamingHttpResponse(iter([b"x"]), status=400)) == [None]
    assert reasons("/api/meters/submit-reading", JsonResponse({"detail": "x"}, status=500)) == []
    assert reasons("/api/v1/meters/batch/readings", JsonResponse({"note": "rejected"})) == []
