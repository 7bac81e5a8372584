"""What every app's admin shares: the read-only admin of records only services write.

Not an installed app's ``admin`` module (``gridtoken`` is the project package), so nothing registers here.
"""

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList


class BoundedDateChangeList(ChangeList):
    """Django validates only the first day of a ``date_hierarchy`` drill-down: a year past 9999 or beyond a C
    long raises ``OverflowError``/``ValueError`` outside its check, a 500. Both are a bad query string."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error


class RecordAdmin(admin.ModelAdmin):
    """A record only services write (readings, batches, mints, the certificate registry): operators see it
    and act on it through admin actions that call the services; nobody adds, edits or deletes one by hand,
    not even a superuser (no permission, so no button, no form and no ``delete_selected``)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_changelist(self, request, **kwargs):
        return BoundedDateChangeList
