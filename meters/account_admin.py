"""Django's group admin (imported by ``meters.admin``), registered again with the checked action selection every
admin here has (``gridtoken.admin.CheckedSelectionMixin``). DRF's token admin offers no actions."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.models import Group

from gridtoken.admin import CheckedSelectionMixin

admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(CheckedSelectionMixin, BaseGroupAdmin):
    pass
