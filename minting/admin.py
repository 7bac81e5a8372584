"""Django admin: mint batches (read-only audit), the run-time control row, and reading actions.

``mint_now`` and ``retry_failed`` are plain admin actions; the readings admin lists them in its
``actions``.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Q
from django.utils.html import format_html

from gridtoken.admin import CheckedModelAdmin, RecordAdmin, abbreviated, plain_number
from gridtoken.exceptions import ApplicationError
from meters.admin import MeterReadingAdmin
from meters.models import MeterReading
from minting import selectors
from minting.models import MintBatch, MintingControl, TokenMint
from minting.services.control import auto_mint_set, control_get
from minting.services.operator import MAX_READINGS_PER_REQUEST, readings_mint_now, readings_retry


def explorer_url(signature: str) -> str:
    """The signature on explorer.solana.com for the configured cluster (localnet: a custom RPC URL)."""
    base = f"https://explorer.solana.com/tx/{signature}"
    cluster = settings.CHAIN.cluster
    if cluster == "mainnet-beta":
        return base
    if cluster == "localnet":
        return f"{base}?cluster=custom&customUrl={quote(settings.CHAIN.rpc_url, safe='')}"
    return f"{base}?cluster={cluster}"


def tokens(raw, *, trimmed: bool = False) -> str:
    """Integer base units as tokens, exactly (the token's decimals, no float); ``trimmed``: without trailing zeros."""
    if raw is None:
        return "-"
    amount = Decimal(int(raw)).scaleb(-settings.TOKENIZATION.decimals)
    return plain_number(amount) if trimmed else format(amount, "f")


def signature_link(signature: str | None):
    if not signature:
        return "-"
    return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', explorer_url(signature), signature)


@admin.action(description="Mint selected readings now")
def mint_now(modeladmin, request, queryset) -> None:
    ids = list(queryset.values_list("id", flat=True)[:MAX_READINGS_PER_REQUEST])
    try:
        results = readings_mint_now(reading_ids=ids, actor=request.user.get_username())
    except ApplicationError as exc:
        modeladmin.message_user(request, f"Nothing minted: {exc.message}", messages.ERROR)
        return
    minted = sum(result.success for result in results)
    level = messages.SUCCESS if minted == len(results) else messages.WARNING
    problems = sorted({result.error for result in results if result.error})
    detail = f" Not minted: {'; '.join(problems)}." if problems else ""
    modeladmin.message_user(request, f"{minted} of {len(results)} reading(s) minted.{detail}", level)


@admin.action(description="Retry selected failed readings")
def retry_failed(modeladmin, request, queryset) -> None:
    ids = list(queryset.filter(status=MeterReading.Status.FAILED).values_list("id", flat=True))
    count = readings_retry(reading_ids=ids, actor=request.user.get_username()) if ids else 0
    modeladmin.message_user(request, f"{count} failed reading(s) queued for minting.", messages.SUCCESS)


class BatchReadingInline(admin.TabularInline):
    model = MeterReading
    fk_name = "batch"
    fields = (
        "id",
        "meter",
        "wallet_address",
        "kwh_amount",
        "tokens",
        "base_units",
        "status",
        "attempts",
        "last_error",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="tokens")
    def tokens(self, reading: MeterReading) -> str:
        return tokens(reading.token_amount)

    @admin.display(description="base units")
    def base_units(self, reading: MeterReading):
        return "-" if reading.token_amount is None else reading.token_amount


@admin.register(MintBatch)
class MintBatchAdmin(RecordAdmin):
    list_display = (
        "created_at",
        "status",
        "signature_short",
        "reading_count",
        "total_tokens",
        "total_base_units",
        "sends",
        "sent_at",
        "settled_at",
        "settle_seconds",
    )
    # By index (batch_created_idx, batch_status_created_idx): no date hierarchy, which lists the distinct
    # years and months of every batch.
    list_filter = (("created_at", admin.DateFieldListFilter), "status")
    search_fields = ("signature", "id")
    fields = (
        "id",
        "status",
        "explorer",
        "reading_count",
        "total_tokens",
        "total_base_units",
        "mint_address",
        "last_valid_block_height",
        "send_attempts",
        "created_at",
        "sent_at",
        "settled_at",
        "settle_seconds",
        "error",
    )
    readonly_fields = fields
    inlines = [BatchReadingInline]

    @admin.display(description="tokens", ordering="total_token_amount")
    def total_tokens(self, obj: MintBatch) -> str:
        return tokens(obj.total_token_amount, trimmed=True)

    @admin.display(description="sends", ordering="send_attempts")
    def sends(self, obj: MintBatch) -> int:
        """Send attempts, under a title as narrow as its figures."""
        return obj.send_attempts

    @admin.display(description="base units", ordering="total_token_amount")
    def total_base_units(self, obj: MintBatch) -> int:
        return int(obj.total_token_amount)

    @admin.display(description="signature")
    def signature_short(self, obj: MintBatch):
        return abbreviated(obj.signature, keep=12, href=explorer_url(obj.signature))

    @admin.display(description="signature (explorer)")
    def explorer(self, obj: MintBatch):
        return signature_link(obj.signature)

    @admin.display(description="created → settled (s)")
    def settle_seconds(self, obj: MintBatch):
        if obj.settled_at is None:
            return "-"
        return f"{(obj.settled_at - obj.created_at).total_seconds():.2f}"


@admin.register(MintingControl)
class MintingControlAdmin(CheckedModelAdmin):
    """The switch is the only editable field; everything else is what the workers record (``accounts_epoch``
    is an internal cache generation, not shown)."""

    list_display = (
        "auto_mint_enabled",
        "updated_at",
        "updated_by",
        "paused",
        "chain_error_code",
        "chain_failures",
        "chain_retry_at",
        "fee_payer_sol",
        "decisions_blocked_at",
    )
    fieldsets = (
        (None, {"fields": ("auto_mint_enabled", "updated_at", "updated_by")}),
        (
            "Outage breaker",
            {"fields": ("paused", "chain_error_code", "chain_error", "chain_failures", "chain_retry_at")},
        ),
        ("Fee payer", {"fields": ("fee_payer_address", "fee_payer_sol", "fee_payer_lamports", "fee_payer_checked_at")}),
        ("Settlement decisions", {"fields": ("decisions_blocked", "decisions_blocked_at", "decisions_blocked_reason")}),
    )
    readonly_fields = (
        "updated_at",
        "updated_by",
        "paused",
        "chain_error_code",
        "chain_error",
        "chain_failures",
        "chain_retry_at",
        "fee_payer_address",
        "fee_payer_sol",
        "fee_payer_lamports",
        "fee_payer_checked_at",
        "decisions_blocked",
        "decisions_blocked_at",
        "decisions_blocked_reason",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="paused now", boolean=True)
    def paused(self, obj: MintingControl) -> bool:
        return selectors.chain_state(control=obj)["paused"]

    @admin.display(description="fee payer (SOL)")
    def fee_payer_sol(self, obj: MintingControl) -> str:
        return selectors.lamports_as_sol(obj.fee_payer_lamports) or "-"

    @admin.display(description="fee payer address")
    def fee_payer_address(self, obj: MintingControl) -> str:
        return selectors.fee_payer_address() or "-"

    @admin.display(description=f"decisions blocked (last {selectors.DECISIONS_BLOCKED_RECENT.seconds} s)", boolean=True)
    def decisions_blocked(self, obj: MintingControl) -> bool:
        return selectors.chain_state(control=obj)["decisions_blocked"]

    def changelist_view(self, request, extra_context=None):
        control_get()  # seed the row so there is always one to edit
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        if "auto_mint_enabled" in form.changed_data:
            auto_mint_set(enabled=obj.auto_mint_enabled, actor=request.user.get_username())
            return
        super().save_model(request, obj, form, change)


@admin.register(TokenMint)
class TokenMintAdmin(RecordAdmin):
    list_display = ("address", "decimals", "token_program", "authority", "rpc_url", "created_at")


# The token column goes right after the mintable energy it was minted from.
_BEFORE_TOKENS = MeterReadingAdmin.list_display[: MeterReadingAdmin.list_display.index("mintable") + 1]


class MintingReadingAdmin(MeterReadingAdmin):
    """The readings admin with minting's token column, mint actions and search by batch signature (meters' own
    admin cannot name minting, the app above it)."""

    list_display = (*_BEFORE_TOKENS, "tokens_minted", *MeterReadingAdmin.list_display[len(_BEFORE_TOKENS) :])
    actions = (mint_now, retry_failed, *MeterReadingAdmin.actions)

    def search_beyond_meters(self, term: str) -> Q | None:
        batch = MintBatch.objects.filter(signature=term).values_list("pk", flat=True).first()
        return Q(batch_id=batch) if batch else None

    @admin.display(description="tokens", ordering="token_amount")
    def tokens_minted(self, reading: MeterReading) -> str:
        return tokens(reading.token_amount, trimmed=True)


admin.site.unregister(MeterReading)
admin.site.register(MeterReading, MintingReadingAdmin)
