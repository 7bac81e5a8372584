"""The flush after a transactional test, cheaper: only the tables the test wrote to.

Django's flush truncates every table and then runs ``post_migrate`` again, which re-creates the content types
and permissions it just truncated, one committed insert after another: 1-3 s per transactional test on a
loaded machine, most of it in those inserts. Here the tables that hold rows are found in one query and only
they are truncated (``CASCADE`` takes the empty tables that reference them along); the content types and
permissions stay as migrated, unless the test changed them (their rows' digest differs from the one taken
after the process's first, full flush), in which case they are emptied and re-created as Django does.

A table of a few rows is emptied by DELETE, with triggers and foreign-key checks off for it
(``session_replication_role = replica``, as TRUNCATE fires neither): TRUNCATE gives the table, each of its
indexes and every table its CASCADE reaches (the users' reaches 23, the readings' partitions among them) a new
file, 0.3-1 s for a test that wrote one user, against a few milliseconds. A table of many rows is still
truncated (a DELETE of thousands costs more, and leaves the planner its old row count).
Every transactional test still starts from the same database: empty tables, the migrated content types and
permissions, sequences not reset (Django's flush does not reset them either).
"""

from django.core.management.sql import emit_post_migrate_signal
from django.db import connections, transaction
from django.test import TransactionTestCase

# What post_migrate creates, and what the migrations' state of it digests to per database (after a full flush).
POST_MIGRATE_TABLES = ("django_content_type", "auth_permission")
_migrated_digest: dict[str, str] = {}
_django_teardown = TransactionTestCase._fixture_teardown
# Up to this many rows a table is emptied by DELETE, past it by TRUNCATE.
DELETE_UP_TO = 1000
# Per database: may this connection turn triggers off (a superuser's may), else every table is truncated.
_may_skip_triggers: dict[str, bool] = {}


def tables_with_rows(connection) -> dict[str, int]:
    """Each table that holds rows -> how many (counted up to DELETE_UP_TO + 1)."""
    tables = sorted(connection.introspection.django_table_names(only_existing=True, include_views=False))
    quote = connection.ops.quote_name
    query = " UNION ALL ".join(
        f"SELECT %s, (SELECT count(*) FROM (SELECT FROM {quote(table)} LIMIT {DELETE_UP_TO + 1}) AS r) "
        f"WHERE EXISTS (SELECT FROM {quote(table)})"
        for table in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(query, tables)
        return dict(cursor.fetchall())


def empty(connection, tables: dict[str, int]) -> None:
    """Empty ``tables`` (name -> rows) and, as TRUNCATE ... CASCADE does, the tables that reference them (the
    others that hold rows are among ``tables``)."""
    alias, quote = connection.alias, connection.ops.quote_name
    if alias not in _may_skip_triggers:
        with connection.cursor() as cursor:
            cursor.execute("SHOW is_superuser")
            _may_skip_triggers[alias] = cursor.fetchone()[0] == "on"
    few = sorted(t for t, rows in tables.items() if rows <= DELETE_UP_TO) if _may_skip_triggers[alias] else []
    many = sorted(set(tables) - set(few))
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if many:
            cursor.execute(f"TRUNCATE {', '.join(quote(table) for table in many)} CASCADE")
        if few:
            cursor.execute("SET LOCAL session_replication_role = replica")
            for table in few:
                cursor.execute(f"DELETE FROM {quote(table)}")


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
    touched = {
        table: rows
        for table, rows in tables_with_rows(connection).items()
        if changed or table not in POST_MIGRATE_TABLES
    }
    if touched:
        empty(connection, touched)
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
