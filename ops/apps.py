from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: metrics, health probes, the access log, process supervision and ``manage.py demo``; no models."""

    name = "ops"
