"""Operator admin: users, meters (suspend/activate, issue a device key), readings, API keys (issue/revoke).

An API key's plaintext exists only at the moment it is issued: the admin shows it once in a message and
stores only its hash, exactly like the API does.

Readings are money records only services write: the admin never adds, edits or deletes one (no permission,
so no button, no form and no action, even for superusers), nor deletes a meter or user that has readings.
The foreign keys PROTECT them anyway; the admin refuses first because Django's confirmation page would load
and list every protected reading.

Held readings (a VEE rule holds them) are decided here with "Approve held readings" / "Reject held readings",
which call ``meters.services.holds``; each decision writes an audit line on the ``meters.admin`` logger.
"""

from __future__ import annotations

import logging
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Exists, OuterRef, Q
from django.db.models.lookups import Exact
from django.forms.fields import InvalidJSONInput
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from config.objects import VEE_ACTIONS, VEE_RULES
from gridtoken.admin import CheckedModelAdmin, EstimatedCountPaginator, RecordAdmin, plain_number
from gridtoken.exceptions import ApplicationError
from meters.archive.services import OPEN_STATUSES
from meters.models import READING_FLAGS, ApiKey, Meter, MeterReading, User
from meters.parsers import loads_exact
from meters.ratelimit import LoginRateLimitMixin
from meters.selectors import fleet_totals, meter_cache_clear
from meters.services.api_keys import api_key_create, api_key_revoke
from meters.services.holds import readings_approve, readings_reject
from meters.services.meters import meter_set_status

audit = logging.getLogger("meters.admin")


class AdminLoginForm(LoginRateLimitMixin, AdminAuthenticationForm):
    """The admin's sign-in counts against the same per-username budget as the token endpoint."""


admin.site.login_form = AdminLoginForm

# One admin action decides at most this many held readings (one transaction, one lock per meter).
HOLD_DECISIONS_PER_ACTION = 1000


def _show_plaintext(request, key: ApiKey, plaintext: str) -> None:
    messages.warning(
        request,
        format_html(
            "API key {} issued. Copy it now, it is not stored and will not be shown again: <code>{}</code>",
            key.prefix,
            plaintext,
        ),
    )


class KeepsReadingsAdmin(CheckedModelAdmin):
    """Deletes rows only while no reading refers to them through ``readings_field``."""

    readings_field: str

    def _has_readings(self, pk):
        return Exists(MeterReading.objects.filter(**{self.readings_field: pk}))

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and MeterReading.objects.filter(**{self.readings_field: obj.pk}).exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (self._delete_selected_without_readings, name, description)
        return actions

    @staticmethod
    def _delete_selected_without_readings(modeladmin, request, queryset):
        kept = [str(obj) for obj in queryset.filter(modeladmin._has_readings(OuterRef("pk")))[:11]]
        if kept:
            names = ", ".join(kept[:10]) + (" ..." if len(kept) > 10 else "")
            modeladmin.message_user(
                request, f"Nothing deleted: {names} have readings and cannot be deleted.", messages.ERROR
            )
            return None
        return delete_selected(modeladmin, request, queryset)


@admin.register(User)
class UserAdmin(KeepsReadingsAdmin, BaseUserAdmin):
    readings_field = "user"
    fieldsets = (*BaseUserAdmin.fieldsets, ("GridToken", {"fields": ("wallet_address",)}))
    list_display = ("username", "email", "wallet_address", "is_staff", "is_active")
    search_fields = ("username", "email", "wallet_address")


class StrictJSONField(forms.JSONField):
    """Django's JSON form field lets ``RecursionError`` out of deeply nested input, both when it cleans it and
    when it shows it again (a 500); here that, ``NaN`` and a repeated key are form errors, as they are 4xx on
    the API (``meters.parsers.loads_exact``)."""

    @staticmethod
    def _refusal(value) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return None
        try:
            loads_exact(value)
        except ValueError as error:
            return str(error)
        return None

    def to_python(self, value):
        if not self.disabled and (refusal := self._refusal(value)):
            raise forms.ValidationError(f"Not valid JSON: {refusal}", code="invalid")
        return super().to_python(value)

    def bound_data(self, data, initial):
        if not self.disabled and self._refusal(data):
            return InvalidJSONInput(data)
        return super().bound_data(data, initial)


class MeterForm(forms.ModelForm):
    vee_rules = StrictJSONField(required=False, help_text=Meter._meta.get_field("vee_rules").help_text)

    class Meta:
        model = Meter
        fields = "__all__"  # noqa: DJ007 (the admin decides the fields; this form only checks vee_rules)

    def clean_vee_rules(self):
        rules = self.cleaned_data.get("vee_rules") or {}
        if not isinstance(rules, dict):
            raise forms.ValidationError('A JSON object of rule: action, e.g. {"spike": "flag"}.')
        wrong = sorted(
            f"{rule}={action}" for rule, action in rules.items() if rule not in VEE_RULES or action not in VEE_ACTIONS
        )
        if wrong:
            raise forms.ValidationError(
                f"Unknown rule or action: {', '.join(wrong)}. Rules: {', '.join(VEE_RULES)}; "
                f"actions: {', '.join(VEE_ACTIONS)}."
            )
        return rules


@admin.register(Meter)
class MeterAdmin(KeepsReadingsAdmin):
    readings_field = "meter"
    form = MeterForm
    list_display = (
        "serial",
        "owner",
        "wallet_address",
        "status",
        "meter_type",
        "zone_id",
        "capacity_kw",
        "register_baseline_at",
        "has_public_key",
        "created_at",
    )
    list_filter = ("status", "meter_type")
    search_fields = ("serial", "wallet_address", "owner__username")
    raw_id_fields = ("owner",)
    # The baseline moves only through the "meter replaced" action, which also drops the cached meter.
    readonly_fields = ("id", "created_at", "register_baseline_at")
    actions = ("suspend", "activate", "issue_device_key", "start_register_baseline")

    @admin.display(boolean=True, description="Signs readings")
    def has_public_key(self, meter: Meter) -> bool:
        return bool(meter.public_key)

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        meter_cache_clear()  # capacity, register limits and VEE overrides apply to the next reading

    @admin.action(description="Suspend selected meters (their readings are refused)")
    def suspend(self, request, queryset):
        for meter in queryset:
            meter_set_status(meter=meter, status=Meter.Status.SUSPENDED)
        self.message_user(request, f"{queryset.count()} meter(s) suspended.")

    @admin.action(description="Activate selected meters")
    def activate(self, request, queryset):
        for meter in queryset:
            meter_set_status(meter=meter, status=Meter.Status.ACTIVE)
        self.message_user(request, f"{queryset.count()} meter(s) activated.")

    @admin.action(description="Issue a new device API key for each selected meter")
    def issue_device_key(self, request, queryset):
        for meter in queryset.select_related("owner"):
            key, plaintext = api_key_create(
                owner=meter.owner, scope=ApiKey.Scope.DEVICE, meter=meter, name=f"{meter.serial} (admin)"
            )
            _show_plaintext(request, key, plaintext)

    @admin.action(description="Meter replaced: start a new register baseline now")
    def start_register_baseline(self, request, queryset):
        now = timezone.now()
        serials = sorted(queryset.values_list("serial", flat=True))
        count = queryset.update(register_baseline_at=now)
        meter_cache_clear()
        audit.info(
            "register baseline started",
            extra={
                "audit": "meter_register_baseline",
                "actor": request.user.get_username(),
                "meters": serials,
                "baseline_at": now.isoformat(),
            },
        )
        self.message_user(
            request,
            f"{count} meter(s): register reads from {now.isoformat(timespec='seconds')} on start a new baseline.",
        )


class ReadingFlagFilter(admin.SimpleListFilter):
    title = "flag"
    parameter_name = "flag"

    def lookups(self, request, model_admin):
        return [(flag, flag) for flag in READING_FLAGS]

    def queryset(self, request, queryset):
        if self.value() in READING_FLAGS:
            # jsonb containment (flags @> '["spike"]'): a list containing the flag, whatever else it holds. The
            # "not empty" condition is reading_flagged_idx's predicate, so the flagged rows are read by index.
            return queryset.filter(flags__contains=[self.value()]).exclude(flags=[])
        return queryset


def _decide_held(modeladmin, request, queryset, *, approve: bool) -> None:
    actor = request.user.get_username()
    held = list(
        queryset.filter(status=MeterReading.Status.HELD).values_list("id", flat=True)[: HOLD_DECISIONS_PER_ACTION + 1]
    )
    more = len(held) > HOLD_DECISIONS_PER_ACTION
    held = held[:HOLD_DECISIONS_PER_ACTION]
    if not held:
        modeladmin.message_user(request, "None of the selected readings is held: nothing decided.", messages.WARNING)
        return
    if approve:
        decided = readings_approve(reading_ids=held)
    else:
        decided = readings_reject(reading_ids=held, reason=f"rejected by an operator ({actor}, admin)")
    verb = "approved" if approve else "rejected"
    audit.info(
        f"held readings {verb}",
        extra={
            "audit": f"readings_{verb}",
            "actor": actor,
            "requested": len(held),
            "decided": decided,
            "reading_ids": [str(pk) for pk in held],
        },
    )
    # Fewer decided than asked: another operator decided some of them meanwhile (they were no longer held).
    note = f" {len(held) - decided} were no longer held." if decided < len(held) else ""
    rest = f" More than {HOLD_DECISIONS_PER_ACTION} were selected: run the action again for the rest." if more else ""
    level = messages.SUCCESS if decided and not rest else messages.WARNING
    modeladmin.message_user(request, f"{decided} held reading(s) {verb}.{note}{rest}", level)


@admin.action(description="Approve held readings")
def approve_held(modeladmin, request, queryset) -> None:
    _decide_held(modeladmin, request, queryset, approve=True)


@admin.action(description="Reject held readings")
def reject_held(modeladmin, request, queryset) -> None:
    _decide_held(modeladmin, request, queryset, approve=False)


class ReadingCountPaginator(EstimatedCountPaginator):
    """Readings filtered by an open status alone are counted exactly from the fleet rollup (one row and the
    deltas not folded yet, whatever the history): retention never archives a partition that holds an open
    reading, so every reading the rollup counts under an open status is still stored. Any other filter: the
    capped count."""

    @cached_property
    def count(self) -> int:
        where = self.object_list.query.where
        lookup = where.children[0] if len(where.children) == 1 and not where.negated else None
        if (
            isinstance(lookup, Exact)
            and getattr(lookup.lhs, "target", None) == MeterReading._meta.get_field("status")
            and lookup.rhs in OPEN_STATUSES
        ):
            return fleet_totals()[lookup.rhs]
        return super().count


@admin.register(MeterReading)
class MeterReadingAdmin(RecordAdmin):
    list_display = (
        "short_id",
        "meter",
        "net_kwh",
        "mintable",
        "token_base_units",
        "flag_list",
        "read_at",
        "status",
        "tries",
        "submitted_at",
    )
    # Every filter and the search read by index (docs/ROLLUPS.md): no date hierarchy (it lists the distinct
    # years and months of every reading) and no meter filter listing the meters that have readings (a
    # DISTINCT over the table); a meter is found by searching its serial.
    # Source (interval, register, window) is a filter, not a column: at 1,400 px the list keeps one line a row.
    list_filter = (
        ("submitted_at", admin.DateFieldListFilter),
        "source",
        "status",
        ReadingFlagFilter,
        "minted",
    )
    search_fields = ("meter__serial",)
    search_help_text = "An exact meter serial, mint transaction signature or reading id."
    list_select_related = ("meter",)
    paginator = ReadingCountPaginator
    # Readings are what meters reported: operators look and act, the minting pipeline changes status.
    # minting/admin.py registers this admin's subclass with the token column and the mint actions.
    actions = (approve_held, reject_held)

    def get_search_results(self, request, queryset, search_term):
        """An exact serial, signature or id, each through its index (a substring search reads every row)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            by_id = Q(pk=uuid.UUID(term))
        except ValueError:
            by_id = Q(pk__in=[])
        meter = Meter.objects.filter(serial=term).values_list("pk", flat=True).first()
        if meter is not None:
            return queryset.filter(meter_id=meter), False
        beyond = self.search_beyond_meters(term)
        return queryset.filter(by_id if beyond is None else by_id | beyond), False

    def search_beyond_meters(self, term: str) -> Q | None:
        """What an app above meters finds for a term that is no meter serial (minting: a batch signature)."""
        return None

    @admin.display(description="net kWh", ordering="kwh_amount")
    def net_kwh(self, reading: MeterReading) -> str:
        return plain_number(reading.kwh_amount)

    @admin.display(description="mintable kWh", ordering="mintable_kwh")
    def mintable(self, reading: MeterReading) -> str:
        return plain_number(reading.mintable_kwh)

    @admin.display(description="tries", ordering="attempts")
    def tries(self, reading: MeterReading) -> int:
        """Mint attempts, under a title as narrow as its figures."""
        return reading.attempts

    @admin.display(description="read at", ordering="reading_timestamp")
    def read_at(self, reading: MeterReading):
        return reading.reading_timestamp

    @admin.display(description="base units", ordering="token_amount")
    def token_base_units(self, reading: MeterReading):
        return "-" if reading.token_amount is None else reading.token_amount

    @admin.display(description="flags")
    def flag_list(self, reading: MeterReading) -> str:
        return ", ".join(reading.flags or []) or "-"


class ApiKeyIssueForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("name", "scope", "owner", "meter")

    def clean(self):
        data = super().clean()
        scope, owner, meter = data.get("scope"), data.get("owner"), data.get("meter")
        if scope == ApiKey.Scope.DEVICE and meter is None:
            self.add_error("meter", "A device key belongs to one meter.")
        if scope == ApiKey.Scope.FLEET and meter is not None:
            self.add_error("meter", "A fleet key is not tied to a meter; leave it empty.")
        if meter is not None and owner is not None and meter.owner_id != owner.pk:
            self.add_error("owner", "The key's owner must own the meter.")
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(CheckedModelAdmin):
    list_display = ("prefix", "name", "scope", "owner", "meter", "created_at", "last_used_at", "is_active")
    list_filter = ("scope", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "owner__username", "meter__serial")
    raw_id_fields = ("owner", "meter")
    list_select_related = ("owner", "meter")
    actions = ("revoke",)

    @admin.display(boolean=True, description="Active")
    def is_active(self, key: ApiKey) -> bool:
        return key.is_active

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyIssueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "scope", "owner", "meter")
        return ("name", "prefix", "scope", "owner", "meter", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("prefix", "scope", "owner", "meter", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        try:
            key, plaintext = api_key_create(owner=obj.owner, scope=obj.scope, meter=obj.meter, name=obj.name)
        except ApplicationError as error:  # the form checks the same rules; this is a last resort
            raise forms.ValidationError(error.message) from error
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = key.pk, key.prefix, key.key_hash, key.created_at
        obj._state.adding = False
        _show_plaintext(request, key, plaintext)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"{queryset.count()} key(s) revoked.")


from meters import account_admin, dead_letter_admin  # noqa: E402, F401 (register GroupAdmin, DeadLetterAdmin)
from meters.archive import admin as archive_admin  # noqa: E402, F401 (registers ArchivedPartitionAdmin)
