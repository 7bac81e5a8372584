"""What every app's admin shares: actions that check their selection, and the read-only admin of records only
services write.

Not an installed app's ``admin`` module (``gridtoken`` is the project package), so nothing registers here.
"""

from decimal import Decimal
from functools import reduce
from operator import or_

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.core.validators import ProhibitNullCharactersValidator
from django.db import connection
from django.db.models import Q
from django.utils.functional import cached_property
from django.utils.html import format_html

from gridtoken.exceptions import ApplicationError

TAMPERED_SELECTION = "The selection names no record of this list (a stale or altered form): nothing was done."
# A filtered admin list counts its rows up to this many; pages past it are reached by number.
COUNT_CAP = 10_000
# Related rows a search term may name (a serial names one meter; a username one user).
SEARCH_CAP = 100


class EstimatedCountPaginator(Paginator):
    """The admin's page count without counting a large table: the planner's row estimate when nothing is
    filtered, otherwise the matching rows counted up to COUNT_CAP (the pages past it are reached by number)."""

    @cached_property
    def count(self) -> int:
        if not self.object_list.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    # A partitioned table's own estimate is never kept up to date: sum its partitions' (a plain
                    # table is its own only leaf).
                    "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_partition_tree(%s::regclass) t"
                    " JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf",
                    [self.object_list.model._meta.db_table],
                )
                estimate = cursor.fetchone()[0]
            if estimate >= COUNT_CAP:
                return estimate
        return self.object_list[:COUNT_CAP].count()


def exact_match(model, path: str, term: str) -> Q | None:
    """Rows of ``model`` whose ``path`` (a field, or a relation's field: ``device__meter__serial``) equals
    ``term``; None when ``term`` cannot be a value of that field. A relation's rows are looked up first, so
    the condition left is on this table's own column (``device_id IN (...)``), which its index serves."""
    name, _, rest = path.partition("__")
    field = model._meta.get_field(name)
    if rest:
        related = field.related_model
        inner = exact_match(related, rest, term)
        if inner is None:
            return None
        keys = list(related._default_manager.filter(inner).values_list("pk", flat=True)[:SEARCH_CAP])
        return Q(**{f"{name}__in": keys}) if keys else None
    try:
        value = field.to_python(term)
        field.run_validators(value)  # lengths, integer ranges: a term no row can hold is no query
    except ValidationError:
        return None
    return Q(**{field.attname if field.is_relation else name: value})


class BoundedDateChangeList(ChangeList):
    """Django validates only the first day of a ``date_hierarchy`` drill-down: a year past 9999 or beyond a C
    long raises ``OverflowError``/``ValueError`` outside its check, a 500. Both are a bad query string."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error


class CheckedSelectionMixin:
    """In every ModelAdmin here (through ``CheckedModelAdmin``; Django's group admin is registered again with it in
    ``meters.account_admin``).

    Django filters an action's rows with ``pk__in`` the posted ``_selected_action`` values as they come: a value
    that is no primary key of the model (an altered form) fails the key field's conversion, or reaches
    PostgreSQL with a NUL byte, inside the action: a 500. Each value is converted first; a selection with one
    that cannot be a key of this model runs no action and says so."""

    def response_action(self, request, queryset):
        key, no_nul = self.model._meta.pk, ProhibitNullCharactersValidator()
        try:
            for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
                no_nul(value)
                key.to_python(value)
        except ValidationError:
            self.message_user(request, TAMPERED_SELECTION, messages.ERROR)
            return None
        return super().response_action(request, queryset)


def plain_number(value: Decimal | None) -> str:
    """An exact amount (kWh, tokens) without its column's trailing zeros: 40.25, not 40.250000000."""
    return "-" if value is None else format(value.normalize(), "f")


def each_row(modeladmin, request, rows, act, done: str) -> None:
    """An admin action's ``act`` on every selected row through a service: one message with how many succeeded,
    one warning per row a service refused (its ApplicationError's message)."""
    succeeded, refused = 0, []
    for row in rows:
        try:
            act(row)
            succeeded += 1
        except ApplicationError as error:
            refused.append(f"{row}: {error.message}")
    modeladmin.message_user(request, f"{done}: {succeeded}", messages.SUCCESS)
    for line in refused:
        modeladmin.message_user(request, line, messages.WARNING)


def abbreviated(value: str | None, *, keep: int = 8, href: str | None = None):
    """A long identifier (a signature, a wallet, an id) as its first ``keep`` characters, whole in its tooltip,
    with a button that copies it whole (static/gridtoken/admin.js); ``href`` links the short text."""
    if not value:
        return "-"
    short = value if len(value) <= keep + 1 else f"{value[:keep]}…"
    if href:
        text = format_html('<a href="{}" title="{}" target="_blank" rel="noopener">{}</a>', href, value, short)
    else:
        text = format_html('<span title="{}">{}</span>', value, short)
    return format_html(
        '<span class="gt-abbr">{}<button type="button" class="gt-copy" data-copy="{}">copy</button></span>',
        text,
        value,
    )


class CheckedModelAdmin(CheckedSelectionMixin, admin.ModelAdmin):
    """The ModelAdmin every app's admin derives from: its lists keep one line per row (static/gridtoken)."""

    class Media:
        css = {"all": ("gridtoken/admin.css",)}
        js = ("gridtoken/admin.js",)

    @admin.display(description="id", ordering="pk")
    def short_id(self, obj) -> str:
        """The change link's text in a list: a UUID's last eight digits, whole in the tooltip. Not its first:
        a time-ordered id (UUIDv7, the readings') starts with the time, the same for a minute's rows."""
        return format_html('<span class="gt-abbr" title="{}">{}</span>', obj.pk, str(obj.pk)[-8:])


class RecordAdmin(CheckedModelAdmin):
    """A record only services write (readings, batches, mints, the certificate registry): operators see it
    and act on it through admin actions that call the services; nobody adds, edits or deletes one by hand,
    not even a superuser (no permission, so no button, no form and no ``delete_selected``).

    These tables grow with history, so a list page never counts one in full (an estimate, or a capped count
    of what a filter matches) and the search compares each of ``search_fields`` exactly, each through an
    index (a substring search reads every row); list orderings and filters follow the tables' indexes."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator
    search_help_text = "An exact value of one of the searched fields (an id, a signature, a serial ...)."

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if "\x00" in term:
            return queryset.none(), False
        fields = (path.lstrip("=^@") for path in self.search_fields)
        matches = [match for path in fields if (match := exact_match(self.model, path, term)) is not None]
        return (queryset.filter(reduce(or_, matches)) if matches else queryset.none()), False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_changelist(self, request, **kwargs):
        return BoundedDateChangeList
