"""``python manage.py mqtt_acl --passwords FILE --acl FILE``: Mosquitto's password and ACL files from the meters.

Point the broker at them (``password_file`` / ``acl_file``) and reload it (SIGHUP) after each run; see
docs/PROTOCOLS.md. ``--device-password SERIAL`` prints the password a meter connects with.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from meters.models import Meter
from protocols.mqtt import acl, topics


class Command(BaseCommand):
    help = "Write the Mosquitto password and ACL files for the MQTT door from the meter registry."

    def add_arguments(self, parser):
        parser.add_argument("--passwords", type=Path, help="password file to write (mosquitto password_file)")
        parser.add_argument("--acl", type=Path, help="ACL file to write (mosquitto acl_file)")
        parser.add_argument("--device-password", metavar="SERIAL", help="print the password of one meter and exit")

    def handle(self, *args, **options):
        cfg = settings.MQTT
        if cfg.device_secret is None:
            raise CommandError("MQTT_DEVICE_SECRET is not set: it derives every meter's broker password.")
        if options["device_password"]:
            self.stdout.write(acl.device_password(cfg.device_secret, options["device_password"]))
            return
        if options["passwords"] is None or options["acl"] is None:
            raise CommandError("--passwords FILE and --acl FILE are both required.")
        if not cfg.username or not cfg.password:
            raise CommandError("MQTT_URL names no user and password: the ingester's broker account (mqtt://u:p@host).")
        serials, skipped = [], []
        for serial in (
            Meter.objects.filter(status=Meter.Status.ACTIVE).order_by("serial").values_list("serial", flat=True)
        ):
            (serials if topics.usable_serial(serial) and serial != cfg.username else skipped).append(serial)
        layouts = topics.layouts(cfg.topics)
        users = [(cfg.username, cfg.password), *((s, acl.device_password(cfg.device_secret, s)) for s in serials)]
        acl.write_private(options["passwords"], acl.passwords_text(users))
        acl.write_private(
            options["acl"],
            acl.acl_text(
                ingester=cfg.username, layouts=layouts, errors=topics.Layout("errors", cfg.error_topic), serials=serials
            ),
        )
        for serial in skipped:
            self.stderr.write(f"skipped meter {serial!r}: not usable as a broker user and topic level")
        self.stdout.write(f"{len(serials)} meters written to {options['passwords']} and {options['acl']}")
