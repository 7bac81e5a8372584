"""``/health``, ``/ready`` and ``/metrics``: plain Django views, no authentication (see docs/OPERATIONS.md); and
the front door, ``/`` with ``/favicon.ico``."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ops import health, metrics


@require_safe
def health_view(request):
    """The process is up and serving requests; nothing else is checked (a liveness probe)."""
    return JsonResponse({"status": "ok"})


@require_safe
def ready_view(request):
    """Every dependency answers (a readiness probe); 503 names the ones that do not.

    ``degraded`` (automatic minting paused, settlement waiting for the node) still answers 200: it is the
    workers' and the chain's trouble, which taking this pod out of rotation or restarting it cannot cure.
    """
    code, body = health.ready_answer()
    response = JsonResponse(body, status=code)
    if code != 200:  # health.py already logged each failure with its cause; skip Django's generic 5xx line
        response._has_been_logged = True
    return response


@require_safe
def metrics_view(request):
    return HttpResponse(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST)


FAVICON = settings.BASE_DIR / "gridtoken" / "static" / "gridtoken" / "favicon.ico"


@require_safe
def home_view(request):
    """What this service is, and the doors into it; it reads nothing, so it answers whatever else is down."""
    return render(request, "ops/home.html")


@require_safe
def favicon_view(request):
    """Browsers ask for /favicon.ico by themselves (the admin, the dashboard, JSON answers link no icon), and
    WhiteNoise serves only /static/: answered here, under every server the app runs under."""
    # Read whole (4 KB): a FileResponse streams through a sync iterator, which the ASGI handler warns about.
    response = HttpResponse(FAVICON.read_bytes(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
