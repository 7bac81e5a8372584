"""The archive manifests in the admin: read-only, kept forever (only ``readings_archive`` writes them)."""

from django.contrib import admin

from gridtoken.admin import RecordAdmin
from meters.archive.models import ArchivedPartition


@admin.register(ArchivedPartition)
class ArchivedPartitionAdmin(RecordAdmin):
    list_display = ("partition", "status", "rows", "meters", "kwh_sum", "bytes", "exported_at", "dropped_at")
    list_filter = ("status",)
    search_fields = ("partition",)
    date_hierarchy = "lower"
    readonly_fields = [field.name for field in ArchivedPartition._meta.fields]
