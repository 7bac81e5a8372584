"""``python manage.py ingest_mqtt``: the supervised MQTT door (protocols/mqtt/ingester.py, docs/PROTOCOLS.md).

Runs until SIGTERM or SIGINT, then stores and acknowledges what it has queued and exits 0. Run it under a
supervisor that restarts it; several with the same ``MQTT_SHARE_GROUP`` (and distinct ``MQTT_CLIENT_ID``)
share one fleet's traffic.
"""

from __future__ import annotations

import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from protocols.mqtt.ingester import Ingester


class Command(BaseCommand):
    help = "Subscribe to the MQTT broker (MQTT_URL) and store the readings meters publish."

    def add_arguments(self, parser):
        parser.add_argument("--client-id", help="MQTT client id (default MQTT_CLIENT_ID); keep it stable per ingester")

    def handle(self, *args, **options):
        ingester = Ingester(settings.MQTT, client_id=options["client_id"])

        def stop(signum, frame):
            ingester.stop()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            ingester.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
