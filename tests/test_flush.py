"""The cheaper flush after a transactional test (tests/flush.py) leaves the database as Django's own flush does."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection

from meters.models import DeadLetter
from tests import flush
from tests.factories import ReadingFactory, api_key_for

pytestmark = pytest.mark.django_db(transaction=True)


def state() -> tuple[dict[str, int], list, list]:
    """Every Django table's row count, the content types and the permissions (by name: a re-created row has a
    new id)."""
    tables = sorted(connection.introspection.django_table_names(only_existing=True, include_views=False))
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(f'SELECT count(*) FROM "{table}"' for table in tables))
        counts = dict(zip(tables, (row[0] for row in cursor.fetchall()), strict=True))
    content_types = sorted(ContentType.objects.values_list("app_label", "model"))
    permissions = sorted(Permission.objects.values_list("content_type__app_label", "content_type__model", "codename"))
    return counts, content_types, permissions


def write_rows() -> None:
    reading = ReadingFactory()
    api_key_for(meter=reading.meter)
    DeadLetter.objects.create(fingerprint="0" * 64, door="mqtt", topic="meters/x", payload=b"{}", error_type="test")
    Group.objects.create(name="operators").permissions.add(Permission.objects.first())


@pytest.fixture
def django_flushed():
    """The state Django's own flush leaves (content types and permissions re-created by post_migrate)."""
    call_command("flush", verbosity=0, interactive=False, reset_sequences=False)
    return state()


def test_the_tables_a_test_wrote_are_emptied_and_the_migrated_rows_kept(django_flushed):
    flush.flush(connection)  # from the state Django's flush left: its content types and permissions as migrated
    write_rows()
    assert state() != django_flushed

    flush.flush(connection)

    assert state() == django_flushed


def test_changed_content_types_and_permissions_are_restored_as_migrated(django_flushed):
    flush.flush(connection)
    write_rows()
    Permission.objects.filter(codename__startswith="delete_").delete()
    ContentType.objects.create(app_label="nowhere", model="nothing")
    assert state() != django_flushed

    flush.flush(connection)

    assert state() == django_flushed


@pytest.mark.parametrize("delete_up_to", [0, 1])
def test_tables_of_many_rows_are_truncated_and_the_rest_deleted_to_the_same_state(
    django_flushed, delete_up_to, monkeypatch
):
    """Past ``DELETE_UP_TO`` rows a table is truncated (all of them at 0; at 1 the ones that hold two rows or
    more, their referencing tables with them, the others deleted)."""
    monkeypatch.setattr(flush, "DELETE_UP_TO", delete_up_to)
    flush.flush(connection)
    write_rows()
    ReadingFactory()  # a second user, meter and reading
    assert state() != django_flushed

    flush.flush(connection)

    assert state() == django_flushed
