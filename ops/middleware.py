"""Probes ahead of host validation, one access log line per request, and the count of rejected readings.

The middleware sits just inside ``RequestIdMiddleware``, so each line carries the request id.

``/health``, ``/ready`` and ``/metrics`` are answered here, before ``CommonMiddleware`` checks the Host
header against ``ALLOWED_HOSTS``: orchestrator probes and Prometheus address a pod or container by IP, and
a probe refused with 400 DisallowedHost would take a healthy server out of rotation. These views build no
URLs from the Host header, so skipping the check is safe; the routes stay in ``ops/urls.py``
for ``reverse()``. Probe and
scrape paths log at DEBUG (a probe every few seconds would drown the log). Query strings are never logged:
WebSocket and dashboard URLs may carry a token there.

Rejections are counted here, from the response, rather than in each ingestion view: one place sees every
way a reading is refused (validation, duplicates, auth, rate limits) with its stable error code, and the
views stay free of metrics code. A whole-request refusal counts once; a batch counts each rejected item.
"""

from __future__ import annotations

import json
import logging
import re
import time

from gridtoken import observability
from ops import views

logger = logging.getLogger("gridtoken.access")

PROBES = {"/health": views.health_view, "/ready": views.ready_view, "/metrics": views.metrics_view}
# Every path that accepts readings (issue 2): legacy, per-meter v1 and the two batch paths.
READING_PATHS = re.compile(r"^/api/(meters/submit-reading|v1/(public/)?meters/[^/]+/readings)$")


def _json(response) -> object | None:
    if response.streaming or not response.get("Content-Type", "").startswith("application/json"):
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def rejection_reasons(request, response) -> list[str]:
    """Error codes of the readings this response refused (empty when none or not a reading post)."""
    if request.method != "POST" or not READING_PATHS.match(request.path):
        return []
    status = response.status_code
    if 400 <= status < 500:
        body = _json(response)
        error = body.get("error") if isinstance(body, dict) else None
        return [error.get("code") if isinstance(error, dict) else None]
    if status < 300 and not response.streaming and b'"rejected"' in response.content:
        body = _json(response)
        results = body.get("results") if isinstance(body, dict) else None
        return [
            _item_code(item) for item in results or () if isinstance(item, dict) and item.get("status") == "rejected"
        ]
    return []


def _item_code(item: dict) -> str | None:
    error = item.get("error")
    if isinstance(error, dict):
        return error.get("code")
    return item.get("code") or error


class OpsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        probe = PROBES.get(request.path_info)
        response = probe(request) if probe is not None else self.get_response(request)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        reasons = rejection_reasons(request, response)
        if reasons:
            observability.readings_rejected(reasons)
        level = logging.DEBUG if probe is not None else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": elapsed_ms,
                    "remote_addr": request.META.get("REMOTE_ADDR"),
                    "bytes": None if response.streaming else len(response.content),
                },
            )
        return response
