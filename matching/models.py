"""Hourly matching of consumers' demand with certificates of the same hour and grid zone (docs/MATCHING.md).

Every row here is a record written by ``matching.services``; nothing edits them by hand. A zone's hours are
matched in order from its cursor (``GridZone.matched_through``) under the zone's row lock; ``MatchHour``
(zone, hour), ``ConsumerHour`` (consumer, hour), ``SupplyHour`` (device, hour) and ``Match.bundle`` are unique
in the database, so no hour is matched twice and no claimed bundle backs two matches, whatever races or crashes.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from certificates.models import WH_DECIMAL_PLACES, CertificateBundle, ProductionDevice
from meters.models import Meter

# Wh with kWh's nine decimal places (1e-9 kWh = 1e-6 Wh); 20 digits hold a zone-hour of a large fleet.
WH_DIGITS = 20


def _wh(**options):
    return models.DecimalField(max_digits=WH_DIGITS, decimal_places=WH_DECIMAL_PLACES, **options)


class GridZone(models.Model):
    """A grid (bidding) zone with consumers: the unit matching walks, hour by hour, under this row's lock."""

    code = models.CharField(primary_key=True, max_length=64, help_text="e.g. 10YDE-VE-------2, as devices name it")
    # Every hour before matched_through is decided (matched, or left with nothing to match).
    matched_through = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Consumer(models.Model):
    """A consumer (EnergyTag: the beneficiary of cancelled certificates) with a demand of one or more meters."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"  # not matched from the next unmatched hour on

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="consumers")
    name = models.CharField(max_length=255, help_text="The beneficiary named in every claim")
    zone = models.ForeignKey(GridZone, on_delete=models.PROTECT, related_name="consumers", db_column="grid_zone")
    # Operator's flag: may this consumer be matched with supply of other zones (after its own zone's)?
    cross_zone = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    match_from = models.DateTimeField(help_text="The first hour matched for this consumer (UTC, whole hour)")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["zone", "status"], name="consumer_zone_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.zone_id})"


class ConsumerMeter(models.Model):
    """A meter counted in a consumer's demand: its consumption (import) is the consumer's. One consumer per meter."""

    consumer = models.ForeignKey(Consumer, on_delete=models.PROTECT, related_name="demand_meters")
    meter = models.OneToOneField(Meter, on_delete=models.PROTECT, related_name="consumer_link")
    added_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.consumer_id} <- {self.meter_id}"


class Allocation(models.Model):
    """Supply offered for matching: a device's certificates of each hour, held by ``holder``.

    Bilateral (a PPA): to one named consumer. Pool: to any consumer of the device's zone (and of other zones
    whose consumers carry the cross-zone flag). Each hour it offers ``share`` of the device's certificates
    issued for that hour (floored to whole Wh), or ``quantity_wh`` of them, whichever is set.
    """

    class Kind(models.TextChoices):
        BILATERAL = "bilateral"
        POOL = "pool"

    class Status(models.TextChoices):
        ACTIVE = "active"
        ENDED = "ended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    device = models.ForeignKey(ProductionDevice, on_delete=models.PROTECT, related_name="allocations")
    holder = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="allocations")
    consumer = models.ForeignKey(Consumer, on_delete=models.PROTECT, null=True, blank=True, related_name="allocations")
    share = models.DecimalField(max_digits=7, decimal_places=6, null=True, blank=True)
    quantity_wh = models.BigIntegerField(null=True, blank=True, help_text="Wh per hour at most")
    valid_from = models.DateTimeField(help_text="First hour it applies to (whole hour)")
    valid_until = models.DateTimeField(null=True, blank=True, help_text="First hour it no longer applies to")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="bilateral") & Q(consumer__isnull=False))
                | (Q(kind="pool") & Q(consumer__isnull=True)),
                name="allocation_bilateral_names_consumer",
            ),
            models.CheckConstraint(
                condition=(Q(share__isnull=False) & Q(share__gt=0) & Q(share__lte=1) & Q(quantity_wh__isnull=True))
                | (Q(share__isnull=True) & Q(quantity_wh__gte=1)),
                name="allocation_share_or_quantity",
            ),
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True) | Q(valid_until__gte=F("valid_from")),
                name="allocation_validity_ordered",
            ),
        ]
        indexes = [
            models.Index(fields=["device", "created_at"], condition=Q(status="active"), name="allocation_device_idx"),
            models.Index(fields=["consumer", "created_at"], name="allocation_consumer_idx"),
        ]

    def __str__(self) -> str:
        amount = f"{self.share:%}" if self.share is not None else f"{self.quantity_wh} Wh"
        return f"{self.kind} {amount} of {self.device_id}"


class MatchHour(models.Model):
    """One (zone, hour) decided by matching: exactly one row per pair, by the database."""

    id = models.UUIDField(primary_key=True, editable=False)  # uuid5(zone, hour): the same for any matcher
    zone = models.ForeignKey(GridZone, on_delete=models.PROTECT, related_name="hours", db_column="grid_zone")
    hour = models.DateTimeField()
    consumers = models.PositiveIntegerField(help_text="Consumers with demand in the hour")
    demand_wh = _wh()
    matched_wh = models.BigIntegerField()
    supply_wh = models.BigIntegerField(help_text="Certificates of the zone's devices issued for the hour")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["hour", "zone"]
        constraints = [models.UniqueConstraint(fields=["zone", "hour"], name="match_hour_once_per_zone")]
        indexes = [models.Index(fields=["hour"], name="match_hour_hour_idx")]

    def __str__(self) -> str:
        return f"{self.zone_id} {self.hour.isoformat()}"


class ConsumerHour(models.Model):
    """One consumer's demand in one hour and what matched it: the unmatched demand is recorded here.

    ``demand_wh`` is the demand when the hour was matched and never changes; a later correction of the
    readings adds an ``Adjustment`` and moves ``current_demand_wh``. ``matched_wh`` never changes (claims are
    final).
    """

    id = models.UUIDField(primary_key=True, editable=False)  # uuid5(consumer, hour)
    consumer = models.ForeignKey(Consumer, on_delete=models.PROTECT, related_name="hours")
    match_hour = models.ForeignKey(MatchHour, on_delete=models.PROTECT, related_name="consumer_hours")
    hour = models.DateTimeField()
    demand_wh = _wh()
    current_demand_wh = _wh()
    matched_wh = models.BigIntegerField()
    bilateral_wh = models.BigIntegerField()
    pool_wh = models.BigIntegerField()
    unmatched_wh = _wh(help_text="demand_wh - matched_wh, when matched")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["hour"]
        constraints = [
            models.UniqueConstraint(fields=["consumer", "hour"], name="consumer_hour_once"),
            models.CheckConstraint(
                condition=Q(matched_wh__gte=0) & Q(matched_wh__lte=F("demand_wh")), name="consumer_hour_within_demand"
            ),
            models.CheckConstraint(
                condition=Q(matched_wh=F("bilateral_wh") + F("pool_wh")), name="consumer_hour_matched_parts"
            ),
            models.CheckConstraint(
                condition=Q(unmatched_wh=F("demand_wh") - F("matched_wh")), name="consumer_hour_unmatched"
            ),
        ]
        indexes = [models.Index(fields=["hour"], name="consumer_hour_hour_idx")]  # the admin list, newest first

    def __str__(self) -> str:
        return f"{self.consumer_id} {self.hour.isoformat()}: {self.matched_wh}/{self.demand_wh} Wh"


class Match(models.Model):
    """Certificates claimed for a consumer's hour: one claimed bundle, from one allocation."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    consumer_hour = models.ForeignKey(ConsumerHour, on_delete=models.PROTECT, related_name="matches")
    allocation = models.ForeignKey(Allocation, on_delete=models.PROTECT, related_name="matches")
    kind = models.CharField(max_length=16, choices=Allocation.Kind.choices)
    device = models.ForeignKey(ProductionDevice, on_delete=models.PROTECT, related_name="matches")
    # The bundle the claim left (status claimed, beneficiary and hour set): it backs this match only.
    bundle = models.OneToOneField(CertificateBundle, on_delete=models.PROTECT, related_name="match")
    quantity_wh = models.BigIntegerField()
    hour = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["hour", "created_at"]
        constraints = [models.CheckConstraint(condition=Q(quantity_wh__gte=1), name="match_quantity_positive")]
        indexes = [
            models.Index(fields=["allocation", "hour"], name="match_allocation_hour_idx"),
            models.Index(fields=["hour"], name="match_hour_idx"),  # the admin list, newest first
        ]

    def __str__(self) -> str:
        return f"{self.quantity_wh} Wh {self.kind} -> {self.consumer_hour_id}"


class SupplyHour(models.Model):
    """One device's certificates of one hour when its zone's hour was matched: issued, matched, the rest
    unallocated. ``matched_wh <= issued_wh`` in the database."""

    device = models.ForeignKey(ProductionDevice, on_delete=models.PROTECT, related_name="supply_hours")
    grid_zone = models.CharField(max_length=64, help_text="The device's zone (it may have no consumers)")
    hour = models.DateTimeField()
    issued_wh = models.BigIntegerField()
    matched_wh = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["hour", "device"]
        constraints = [
            models.UniqueConstraint(fields=["device", "hour"], name="supply_hour_once"),
            models.CheckConstraint(
                condition=Q(matched_wh__gte=0) & Q(matched_wh__lte=F("issued_wh")), name="supply_hour_within_issued"
            ),
        ]
        indexes = [
            models.Index(fields=["grid_zone", "hour"], name="supply_hour_zone_idx"),
            models.Index(fields=["hour"], name="supply_hour_hour_idx"),  # the admin list, newest first
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.hour.isoformat()}: {self.matched_wh}/{self.issued_wh} Wh"

    @property
    def unallocated_wh(self) -> int:
        return self.issued_wh - self.matched_wh


class Adjustment(models.Model):
    """A matched hour's demand changed afterwards (a late or corrected reading): recorded, never silent."""

    id = models.BigAutoField(primary_key=True)
    consumer_hour = models.ForeignKey(ConsumerHour, on_delete=models.PROTECT, related_name="adjustments")
    demand_before_wh = _wh()
    demand_after_wh = _wh()
    detected_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["detected_at", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(demand_after_wh=F("demand_before_wh")), name="adjustment_changes")
        ]

    def __str__(self) -> str:
        return f"{self.consumer_hour_id}: {self.demand_before_wh} -> {self.demand_after_wh} Wh"

    @property
    def delta_wh(self):
        return self.demand_after_wh - self.demand_before_wh
