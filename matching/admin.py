"""Django admin: consumers (cross-zone flag, suspend), allocations (end), and matching's records.

Every row is a record only services write (``gridtoken.admin.RecordAdmin``): the admin shows them and its
actions call the services (each writes its audit line). Lists are ordered along an index, newest first.
"""

from django.contrib import admin

from gridtoken.admin import RecordAdmin, each_row
from matching.models import (
    Adjustment,
    Allocation,
    Consumer,
    ConsumerHour,
    ConsumerMeter,
    GridZone,
    Match,
    MatchHour,
    SupplyHour,
)
from matching.services.consumers import allocation_end, consumer_set_cross_zone, consumer_set_status


@admin.register(GridZone)
class GridZoneAdmin(RecordAdmin):
    list_display = ("code", "matched_through", "created_at")
    search_fields = ("code",)


class ConsumerMeterInline(admin.TabularInline):
    model = ConsumerMeter
    fields = ("meter", "added_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Consumer)
class ConsumerAdmin(RecordAdmin):
    list_display = ("name", "user", "zone", "cross_zone", "status", "match_from", "created_at")
    list_filter = ("status", "cross_zone")
    search_fields = ("id", "user__username")
    inlines = [ConsumerMeterInline]
    actions = ("allow_cross_zone", "refuse_cross_zone", "suspend", "activate")

    def _set(self, request, queryset, done: str, **change) -> None:
        actor = request.user.get_username()
        if "allowed" in change:
            act = lambda c: consumer_set_cross_zone(consumer_id=c.id, allowed=change["allowed"], actor=actor)  # noqa: E731
        else:
            act = lambda c: consumer_set_status(consumer_id=c.id, status=change["status"], actor=actor)  # noqa: E731
        each_row(self, request, queryset, act, done)

    @admin.action(description="Allow supply of other zones (after the consumer's own)")
    def allow_cross_zone(self, request, queryset):
        self._set(request, queryset, "cross-zone allowed", allowed=True)

    @admin.action(description="Match with the consumer's own zone only")
    def refuse_cross_zone(self, request, queryset):
        self._set(request, queryset, "own zone only", allowed=False)

    @admin.action(description="Suspend selected consumers (not matched from the next hour)")
    def suspend(self, request, queryset):
        self._set(request, queryset, "suspended", status=Consumer.Status.SUSPENDED)

    @admin.action(description="Activate selected consumers")
    def activate(self, request, queryset):
        self._set(request, queryset, "activated", status=Consumer.Status.ACTIVE)


@admin.register(Allocation)
class AllocationAdmin(RecordAdmin):
    list_display = ("short_id", "kind", "device", "consumer", "share", "quantity_wh", "valid_from", "valid_until",
                    "status")  # fmt: skip
    list_filter = ("kind", "status")
    search_fields = ("id", "device__meter__serial")
    actions = ("end",)

    @admin.action(description="End selected allocations from the next hour")
    def end(self, request, queryset):
        each_row(self, request, queryset, lambda a: allocation_end(allocation_id=a.id,
              actor=request.user.get_username()), "ended")  # fmt: skip


@admin.register(MatchHour)
class MatchHourAdmin(RecordAdmin):
    list_display = ("zone", "hour", "consumers", "demand_wh", "matched_wh", "supply_wh")
    search_fields = ("id",)
    ordering = ("-hour",)  # match_hour_hour_idx


class MatchInline(admin.TabularInline):
    model = Match
    fields = ("kind", "device", "allocation", "bundle", "quantity_wh")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ConsumerHour)
class ConsumerHourAdmin(RecordAdmin):
    list_display = ("consumer", "hour", "demand_wh", "current_demand_wh", "matched_wh", "bilateral_wh", "pool_wh",
                    "unmatched_wh")  # fmt: skip
    search_fields = ("id", "consumer__id")
    ordering = ("-hour",)  # consumer_hour_hour_idx
    inlines = [MatchInline]


@admin.register(Match)
class MatchAdmin(RecordAdmin):
    list_display = ("short_id", "hour", "consumer_hour", "kind", "device", "bundle", "quantity_wh")
    list_filter = ("kind",)
    search_fields = ("id", "bundle__id")
    ordering = ("-hour",)  # match_hour_idx


@admin.register(SupplyHour)
class SupplyHourAdmin(RecordAdmin):
    list_display = ("device", "grid_zone", "hour", "issued_wh", "matched_wh", "unallocated_wh")
    search_fields = ("grid_zone",)
    ordering = ("-hour",)  # supply_hour_hour_idx


@admin.register(Adjustment)
class AdjustmentAdmin(RecordAdmin):
    list_display = ("id", "consumer_hour_short", "demand_before_wh", "demand_after_wh", "detected_at")
    ordering = ("-id",)

    @admin.display(description="consumer hour", ordering="consumer_hour_id")
    def consumer_hour_short(self, adjustment: Adjustment) -> str:
        return str(adjustment.consumer_hour_id)  # no join: the list reads the newest adjustments alone
