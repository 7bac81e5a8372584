"""Energy attribute certificates: production devices, issuances, bundles and their on-chain operations.

See docs/CERTIFICATES.md. PostgreSQL is the registry of record; the chain holds one certificate token per Wh
of every active bundle, in its holder's wallet.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from meters.models import KWH_DECIMAL_PLACES, KWH_MAX_DIGITS, Meter

# A Wh figure with kWh's nine decimal places: 1e-9 kWh = 1e-6 Wh.
WH_DECIMAL_PLACES = KWH_DECIMAL_PLACES - 3


class ProductionDevice(models.Model):
    """A meter registered as a production device (EnergyTag: device id, technology, capacity, location, ...).

    The rated capacity is the meter's ``capacity_kw`` (the VEE capacity check reads the same figure). The
    issuance cursor (``issued_through``), the exact sub-Wh carry and the next bundle id live here, under the
    row lock every issuance of the device takes.
    """

    class Technology(models.TextChoices):
        SOLAR_PV = "solar_pv", "Solar PV"
        WIND = "wind"
        HYDRO = "hydro"
        BIOMASS = "biomass"
        GEOTHERMAL = "geothermal"
        OTHER = "other"

    class Status(models.TextChoices):
        PENDING = "pending"  # registered, waiting for an operator's approval: nothing is issued
        APPROVED = "approved"
        SUSPENDED = "suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    meter = models.OneToOneField(Meter, on_delete=models.PROTECT, related_name="production_device")
    name = models.CharField(max_length=255)
    technology = models.CharField(max_length=32, choices=Technology.choices)
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    location = models.CharField(max_length=255, blank=True, default="", help_text="Address or site name")
    commissioning_date = models.DateField()
    grid_zone = models.CharField(max_length=64, help_text="Bidding/market zone, e.g. 10YDE-VE-------2")
    country = models.CharField(max_length=64)
    issuer = models.CharField(max_length=128, help_text="The issuing body / registry the device belongs to")
    is_storage = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    # Issuance state: every interval before issued_through has been decided; carry_wh is the exact energy
    # below one Wh not yet certified (0 <= carry < 1); bundle ids are contiguous per device from 1.
    issued_through = models.DateTimeField(null=True, blank=True)
    carry_wh = models.DecimalField(max_digits=12, decimal_places=WH_DECIMAL_PLACES, default=0)
    next_bundle_id = models.BigIntegerField(default=1)
    last_hash = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(carry_wh__gte=0) & Q(carry_wh__lt=1), name="device_carry_below_one_wh"),
            models.CheckConstraint(condition=Q(next_bundle_id__gte=1), name="device_bundle_ids_positive"),
        ]
        indexes = [models.Index(fields=["issued_through"], condition=Q(status="approved"), name="device_due_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.meter_id})"


class Issuance(models.Model):
    """One (device, interval) decided for certificates: exactly one row per pair, by the database.

    ``id`` is the issuance id, derived from the device and the interval (uuid5), so a retried or racing
    issuer computes the same one. A held interval (capacity check) has no bundle until an operator decides.
    """

    class Status(models.TextChoices):
        ISSUED = "issued"
        HELD = "held"  # the capacity check failed: an operator approves (issue) or rejects
        REJECTED = "rejected"

    id = models.UUIDField(primary_key=True, editable=False)
    device = models.ForeignKey(ProductionDevice, on_delete=models.PROTECT, related_name="issuances")
    interval_start = models.DateTimeField()
    interval_end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices)
    energy_kwh = models.DecimalField(max_digits=KWH_MAX_DIGITS, decimal_places=KWH_DECIMAL_PLACES)
    carry_in_wh = models.DecimalField(max_digits=12, decimal_places=WH_DECIMAL_PLACES, null=True, blank=True)
    carry_out_wh = models.DecimalField(max_digits=12, decimal_places=WH_DECIMAL_PLACES, null=True, blank=True)
    quantity_wh = models.BigIntegerField(null=True, blank=True)
    bundle_id_range_start = models.BigIntegerField(null=True, blank=True)
    bundle_id_range_end = models.BigIntegerField(null=True, blank=True)
    reading_count = models.PositiveIntegerField()
    readings_hash = models.CharField(max_length=64, help_text="sha256 over the interval's readings")
    previous_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="", help_text="sha256 chaining issuance and readings")
    device_attributes = models.JSONField(default=dict)
    wallet_address = models.CharField(max_length=44)
    hold_reason = models.TextField(blank=True, default="")
    decided_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    issued_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["interval_start"]
        constraints = [
            models.UniqueConstraint(fields=["device", "interval_start"], name="issuance_once_per_device_interval"),
            models.UniqueConstraint(
                fields=["device", "bundle_id_range_start"], name="issuance_bundle_start_unique_per_device"
            ),
            models.CheckConstraint(
                condition=~Q(status="issued")
                | (
                    Q(quantity_wh__gte=1)
                    & Q(bundle_id_range_start__gte=1)
                    & Q(bundle_id_range_end=F("bundle_id_range_start") + F("quantity_wh") - 1)
                ),
                name="issuance_issued_has_range",
            ),
        ]
        indexes = [
            models.Index(fields=["status"], condition=Q(status="held"), name="issuance_held_idx"),
            models.Index(fields=["interval_start"], name="issuance_interval_idx"),  # the admin list, newest first
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class CertificateBundle(models.Model):
    """A contiguous id range of one issuance's Wh certificates, held by one account.

    Transfers and splits retire the bundle (``split``) and create children with ``parent`` set: the leaf
    bundles of an issuance always cover its range exactly once. A claimed, withdrawn or expired range is final.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        SPLIT = "split"  # retired by a transfer or split: its children carry the range on
        CLAIMED = "claimed"  # cancelled for a beneficiary: burnt, never transferred or claimed again
        WITHDRAWN = "withdrawn"  # revoked by an operator
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    issuance = models.ForeignKey(Issuance, on_delete=models.PROTECT, related_name="bundles")
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    range_start = models.BigIntegerField()
    range_end = models.BigIntegerField()
    holder = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="certificate_bundles")
    holder_wallet = models.CharField(max_length=44)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    beneficiary = models.CharField(max_length=255, blank=True, default="")
    consumption_start = models.DateTimeField(null=True, blank=True)
    consumption_end = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="", help_text="Why it was withdrawn")
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["issuance_id", "range_start"]
        constraints = [
            models.CheckConstraint(condition=Q(range_end__gte=F("range_start")), name="bundle_range_ordered"),
            # Two live bundles of an issuance can never start at the same id (a double split or transfer).
            models.UniqueConstraint(
                fields=["issuance", "range_start"], condition=~Q(status="split"), name="bundle_live_range_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["holder_wallet"], condition=Q(status="active"), name="bundle_active_idx"),
            # The admin's status filter in the list's order (a rare status otherwise walks every bundle).
            models.Index(fields=["status", "issuance", "range_start"], name="bundle_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.issuance_id}[{self.range_start}..{self.range_end}] ({self.status})"

    @property
    def quantity_wh(self) -> int:
        return self.range_end - self.range_start + 1


class ChainOperation(models.Model):
    """What the chain must do for one registry action: mint (issue), burn (claim, withdraw, expire), or
    burn from one wallet and mint to another (transfer). Sent through the minting pipeline's batches
    (``minting.MintBatch``): one transaction per operation, its memo naming the issuance id.

    Operations of one issuance are applied in ``created_at`` order (a burn must not land before the mint).
    """

    class Kind(models.TextChoices):
        ISSUE = "issue"
        TRANSFER = "transfer"
        BURN = "burn"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"  # linked to a signed batch: the chain decides
        CONFIRMED = "confirmed"
        FAILED = "failed"  # out of attempts: an operator looks

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    issuance = models.ForeignKey(Issuance, on_delete=models.PROTECT, related_name="operations")
    bundle = models.ForeignKey(CertificateBundle, on_delete=models.PROTECT, related_name="operations")
    amount_wh = models.BigIntegerField()
    burn_from = models.CharField(max_length=44, blank=True, default="")
    mint_to = models.CharField(max_length=44, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    batch = models.ForeignKey(
        "minting.MintBatch", on_delete=models.PROTECT, null=True, blank=True, related_name="certificate_operations"
    )
    signature = models.CharField(max_length=88, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_wh__gte=1), name="operation_amount_positive"),
            models.CheckConstraint(condition=~Q(burn_from="") | ~Q(mint_to=""), name="operation_does_something"),
            models.CheckConstraint(
                condition=~Q(status="sending") | Q(batch__isnull=False), name="operation_sending_has_batch"
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="operation_pending_idx"),
            # The admin list newest first, and its status and kind filters in that order.
            models.Index(fields=["created_at"], name="operation_created_idx"),
            models.Index(fields=["status", "created_at"], name="operation_status_idx"),
            models.Index(fields=["kind", "created_at"], name="operation_kind_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_wh} Wh ({self.status})"


class CertificateMint(models.Model):
    """The certificate token mint (Token-2022, 0 decimals: 1 base unit = 1 Wh); the newest row is in use."""

    address = models.CharField(max_length=44)
    token_program = models.CharField(max_length=44)
    authority = models.CharField(max_length=44)
    rpc_url = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.address
