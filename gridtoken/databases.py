"""The demo's own database, which the demo command creates and ``token_balance --demo`` reads."""

from __future__ import annotations

from contextlib import contextmanager

from django.core.management.base import CommandError
from django.db import connections

DEMO_SUFFIX = "_demo"
POSTGRES_NAME_MAX = 63


def demo_database_name(configured: str) -> str:
    """The demo's own database: the configured name + ``_demo`` (never the configured database itself)."""
    name = configured + DEMO_SUFFIX
    if len(name.encode()) > POSTGRES_NAME_MAX:
        raise CommandError(f"The demo database name {name!r} is longer than PostgreSQL's {POSTGRES_NAME_MAX} bytes.")
    return name


@contextmanager
def using_database(name: str):
    """This process's default connection on database ``name`` until the block ends (then back)."""
    connection = connections["default"]
    original = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        yield connection.settings_dict
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original
