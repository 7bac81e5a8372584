"""Django admin: devices (approve, suspend), held intervals (issue, reject), bundles (withdraw), operations.

Registry rows are records only services write (``gridtoken.admin.RecordAdmin``): the admin shows them and its
actions call the same services the API calls (each writes its audit line and events). A device's description
is the one thing edited by hand.
"""

from django.contrib import admin, messages

from certificates.models import CertificateBundle, CertificateMint, ChainOperation, Issuance, ProductionDevice
from certificates.services.chain import operations_retry
from certificates.services.devices import device_set_status
from certificates.services.issuance import issuance_decide_held
from certificates.services.lifecycle import bundle_withdraw
from gridtoken.admin import CheckedModelAdmin, RecordAdmin, abbreviated, each_row


@admin.register(ProductionDevice)
class ProductionDeviceAdmin(CheckedModelAdmin):
    """A device's description stays editable; it is registered through ``device_register`` (the API), its
    status moves only through the approve and suspend actions, and the issuance state only by issuance."""

    list_display = ("name", "meter", "technology", "grid_zone", "issuer", "status", "issued_through", "carry_wh")
    list_filter = ("status", "technology", "issuer")
    search_fields = ("name", "meter__serial")
    readonly_fields = ("meter", "status", "issued_through", "carry_wh", "next_bundle_id", "last_hash", "approved_at",
                       "approved_by", "created_at")  # fmt: skip
    actions = ("approve", "suspend")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Approve selected devices (issuance starts)")
    def approve(self, request, queryset):
        each_row(self, request, queryset, lambda d: device_set_status(device_id=d.id, status="approved",
              actor=request.user.get_username()), "approved")  # fmt: skip

    @admin.action(description="Suspend selected devices (issuance stops)")
    def suspend(self, request, queryset):
        each_row(self, request, queryset, lambda d: device_set_status(device_id=d.id, status="suspended",
              actor=request.user.get_username()), "suspended")  # fmt: skip


class BundleInline(admin.TabularInline):
    model = CertificateBundle
    fields = ("range_start", "range_end", "status", "holder_wallet", "beneficiary", "parent")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Issuance)
class IssuanceAdmin(RecordAdmin):
    list_display = ("short_id", "device", "interval_start", "status", "energy_kwh", "quantity_wh",
                    "bundle_id_range_start", "bundle_id_range_end")  # fmt: skip
    list_filter = ("status",)
    search_fields = ("id", "device__name", "device__meter__serial")
    ordering = ("-interval_start",)  # issuance_interval_idx
    inlines = [BundleInline]
    actions = ("issue_held", "reject_held")

    @admin.action(description="Issue selected held intervals")
    def issue_held(self, request, queryset):
        each_row(self, request, queryset, lambda i: issuance_decide_held(issuance_id=i.id, approve=True,
              actor=request.user.get_username()), "issued")  # fmt: skip

    @admin.action(description="Reject selected held intervals")
    def reject_held(self, request, queryset):
        each_row(self, request, queryset, lambda i: issuance_decide_held(issuance_id=i.id, approve=False,
              actor=request.user.get_username()), "rejected")  # fmt: skip


@admin.register(CertificateBundle)
class CertificateBundleAdmin(RecordAdmin):
    list_display = (
        "short_id",
        "issuance_short",
        "range_start",
        "range_end",
        "status",
        "holder",
        "wallet",
        "beneficiary",
    )
    list_filter = ("status",)
    # Exact, by index: a wallet's bundles through their holder (holder_wallet is indexed for active ones only).
    search_fields = ("id", "issuance__id", "holder__username", "holder__wallet_address")
    actions = ("withdraw",)

    @admin.display(description="issuance", ordering="issuance_id")
    def issuance_short(self, bundle: CertificateBundle):
        return abbreviated(str(bundle.issuance_id))

    @admin.display(description="holder wallet", ordering="holder_wallet")
    def wallet(self, bundle: CertificateBundle):
        return abbreviated(bundle.holder_wallet)

    @admin.action(description="Withdraw selected bundles (reason: revoked by an operator in the admin)")
    def withdraw(self, request, queryset):
        reason = f"revoked by {request.user.get_username()} in the admin"
        each_row(self, request, queryset, lambda b: bundle_withdraw(bundle_id=b.id, actor=request.user.get_username(),
              reason=reason), "withdrawn")  # fmt: skip


@admin.register(ChainOperation)
class ChainOperationAdmin(RecordAdmin):
    list_display = ("short_id", "kind", "issuance_short", "amount_wh", "status", "attempts", "signature_short",
                    "created_at")  # fmt: skip
    list_filter = ("status", "kind")
    # Exact, by index: a signature through its batch (minting_mintbatch.signature is unique).
    search_fields = ("id", "issuance__id", "batch__signature")
    ordering = ("-created_at",)  # operation_created_idx
    actions = ("retry",)

    @admin.display(description="issuance", ordering="issuance_id")
    def issuance_short(self, operation: ChainOperation):
        return abbreviated(str(operation.issuance_id))

    @admin.display(description="signature")
    def signature_short(self, operation: ChainOperation):
        return abbreviated(operation.signature, keep=12)

    @admin.action(description="Retry selected failed operations (fresh attempts)")
    def retry(self, request, queryset):
        count = operations_retry(operation_ids=list(queryset.values_list("id", flat=True)),
                                 actor=request.user.get_username())  # fmt: skip
        self.message_user(request, f"released for another try: {count}", messages.SUCCESS)


@admin.register(CertificateMint)
class CertificateMintAdmin(RecordAdmin):
    list_display = ("address", "token_program", "authority", "created_at")
