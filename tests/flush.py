"""The flush after a transactional test, cheaper: only the tables the test wrote to.

Django's flush truncates every table and then runs ``post_migrate`` again, which re-creates the content types
and permissions it just truncated, one committed insert after another: 1-3 s per transactional test on a
loaded machine, most of it in those inserts. Here the tables that hold rows are found in one query and only
they are truncated (``CASCADE`` takes the empty tables that reference them along); the content types and
permissions stay as migrated, unless the test changed them (their rows' digest differs from the one taken
after the process's first, full flush), in which case they are truncated and re-created as Django does.
Every transactional test still starts from the same database: empty tables, the migrated content types and
permissions, sequences not reset (Django's flush does not reset them either).
"""

from django.core.management.sql import emit_post_migrate_signal
from django.db import connections
from django.test import TransactionTestCase

# What post_migrate creates, and what the migrations' state of it digests to per database (after a full flush).
POST_MIGRATE_TABLES = ("django_content_type", "auth_permission")
_migrated_digest: dict[str, str] = {}
_django_teardown = TransactionTestCase._fixture_teardown


def tables_with_rows(connection) -> set[str]:
    tables = sorted(connection.introspection.django_table_names(only_existing=True, include_views=False))
    quote = connection.ops.quote_name
    query = " UNION ALL ".join(f"SELECT %s WHERE EXISTS (SELECT FROM {quote(table)})" for table in tables)
    with connection.cursor() as cursor:
        cursor.execute(query, tables)
        return {row[0] for row in cursor.fetchall()}


def post_migrate_digest(connection) -> str:
    digests = " || ".join(
        f"(SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t.id)), '') FROM {table} t)"
        for table in POST_MIGRATE_TABLES
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {digests}")
        return cursor.fetchone()[0]


def flush(connection) -> None:
    """Empty what the test wrote; the content types and permissions as migrated."""
    alias = connection.alias
    if alias not in _migrated_digest:  # the process's first flush: Django's own, then remember its result
        _flush_all(alias)
        _migrated_digest[alias] = post_migrate_digest(connection)
        return
    changed = post_migrate_digest(connection) != _migrated_digest[alias]
    touched = tables_with_rows(connection) - (set() if changed else set(POST_MIGRATE_TABLES))
    if touched:
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(quote(table) for table in sorted(touched))} CASCADE")
    if changed:
        emit_post_migrate_signal(verbosity=0, interactive=False, db=alias)
        _migrated_digest[alias] = post_migrate_digest(connection)  # the same rows under new ids


def _flush_all(alias: str) -> None:
    from django.core.management import call_command

    call_command("flush", verbosity=0, interactive=False, database=alias, reset_sequences=False)


def _fixture_teardown(self) -> None:
    if self.available_apps is not None or self.serialized_rollback:
        return _django_teardown(self)  # Django's own rules for those (a subset of apps, restored rows)
    for alias in self._databases_names(include_mirrors=False):
        flush(connections[alias])


def install() -> None:
    """Every transactional test (pytest-django's ``transactional_db``, ``live_server``) flushes this way."""
    TransactionTestCase._fixture_teardown = _fixture_teardown
