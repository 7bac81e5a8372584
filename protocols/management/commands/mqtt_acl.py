"""``python manage.py mqtt_acl --passwords FILE --acl FILE``: Mosquitto's password and ACL files from the meters.

Point the broker at them (``password_file`` / ``acl_file``) and reload it (SIGHUP) after each run; see
docs/PROTOCOLS.md. The files are replaced atomically, mode 0640, owned by ``--owner``/``--group`` or by the
broker's user (``acl.file_owner``). ``--device-password SERIAL`` prints the password a meter connects with.
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
        parser.add_argument(
            "--owner",
            help=f"user (name or uid) that owns both files; default: {acl.BROKER_USER} where it exists and this runs "
            "as root, else the current owner of the file, else this user",
        )
        parser.add_argument("--group", help="group (name or gid) of both files; default: the owner's group")

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
        paths = (options["passwords"], options["acl"])
        try:
            owners = [acl.file_owner(path, user=options["owner"], group=options["group"]) for path in paths]
        except LookupError as error:
            raise CommandError(f"--owner/--group: {error}") from None
        layouts = topics.layouts(cfg.topics)
        users = [(cfg.username, cfg.password), *((s, acl.device_password(cfg.device_secret, s)) for s in serials)]
        texts = (
            acl.passwords_text(users),
            acl.acl_text(
                ingester=cfg.username, layouts=layouts, errors=topics.Layout("errors", cfg.error_topic), serials=serials
            ),
        )
        for path, text, owner in zip(paths, texts, owners, strict=True):
            try:
                acl.write_private(path, text, owner=owner)
            except PermissionError as error:
                raise CommandError(f"cannot write {path} owned by uid:gid {owner[0]}:{owner[1]}: {error}") from None
        for serial in skipped:
            self.stderr.write(f"skipped meter {serial!r}: not usable as a broker user and topic level")
        owned = ", ".join(f"{path} ({uid}:{gid}, 0640)" for path, (uid, gid) in zip(paths, owners, strict=True))
        self.stdout.write(f"{len(serials)} meters written to {owned}")
