"""What every app's admin shares: actions that check their selection, and the read-only admin of records only
services write.

Not an installed app's ``admin`` module (``gridtoken`` is the project package), so nothing registers here.
"""

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator

TAMPERED_SELECTION = "The selection names no record of this list (a stale or altered form): nothing was done."


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


class CheckedModelAdmin(CheckedSelectionMixin, admin.ModelAdmin):
    """The ModelAdmin every app's admin derives from."""


class RecordAdmin(CheckedModelAdmin):
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
