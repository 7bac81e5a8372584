"""Issue, list and revoke API keys from the shell, the way the operator API and the admin do.

    python manage.py api_key create --owner aggregator-1 --scope fleet --name "GridTokenX bridge"
    python manage.py api_key create --owner producer-1 --scope device --meter SM-0001
    python manage.py api_key list [--owner NAME] [--scope fleet|device] [--all]
    python manage.py api_key revoke gtk_AbCdEfGh      (a prefix as ``list`` shows it, or the key's id)

``create`` prints the key once on standard output, alone on its line (so ``KEY=$(... create ...)``
works); the confirmation goes to standard error. Only the key's sha256 is stored.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from gridtoken.exceptions import ApplicationError
from meters.models import ApiKey
from meters.services.api_keys import api_key_get, api_key_issue, api_key_list, api_key_revoke


def _moment(value) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else "-"


class Command(BaseCommand):
    help = "Issue (create), list or revoke device and fleet API keys."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Issue a key and print it once.")
        create.add_argument("--owner", required=True, help="username of the key's owner")
        create.add_argument("--scope", choices=ApiKey.Scope.values, default=ApiKey.Scope.FLEET)
        create.add_argument("--meter", help="serial of the meter (device keys only; the owner must own it)")
        create.add_argument("--name", default="", help="a label for the key")
        listing = actions.add_parser("list", help="List keys (never their plaintext).")
        listing.add_argument("--owner", help="only this username's keys")
        listing.add_argument("--scope", choices=ApiKey.Scope.values)
        listing.add_argument("--all", action="store_true", help="include revoked keys")
        listing.add_argument("--limit", type=int, default=100)
        revoke = actions.add_parser("revoke", help="Revoke a key by its prefix or id.")
        revoke.add_argument("key", help="the key's prefix (gtk_ and 8 characters) or its id")

    def handle(self, *args, action: str, **options) -> None:
        try:
            getattr(self, f"_{action}")(**options)
        except ApplicationError as error:
            raise CommandError(f"{error.code}: {error.message}") from error

    def _create(self, *, owner: str, scope: str, meter: str | None, name: str, **_) -> None:
        key, plaintext = api_key_issue(owner=owner, scope=scope, meter=meter, name=name)
        self.stdout.write(plaintext)
        meter_note = f", meter {key.meter.serial}" if key.meter else ""
        self.stderr.write(
            f"Issued {key.scope} key {key.prefix} (id {key.pk}) for {key.owner.username}{meter_note}. "
            "It is shown only this once: store it now."
        )

    def _list(self, *, owner: str | None, scope: str | None, all: bool, limit: int, **_) -> None:
        keys = api_key_list(owner=owner, scope=scope, active=None if all else True, limit=limit)
        self.stdout.write("prefix        scope   owner                meter            created               revoked")
        for key in keys:
            meter = key.meter.serial if key.meter else "-"
            self.stdout.write(
                f"{key.prefix:<13} {key.scope:<7} {key.owner.username:<20} {meter:<16} "
                f"{_moment(key.created_at):<21} {_moment(key.revoked_at)}  {key.name}".rstrip()
            )

    def _revoke(self, *, key: str, **_) -> None:
        found = api_key_get(ref=key)
        already = found.revoked_at is not None
        found = api_key_revoke(key=found)
        state = "was already revoked" if already else "revoked"
        owner = found.owner.username
        self.stdout.write(f"{found.prefix} ({found.scope}, {owner}) {state} at {_moment(found.revoked_at)}.")
