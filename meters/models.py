import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from gridtoken.ids import uuid7
from meters.columns import KWH_DECIMAL_PLACES, KWH_MAX_DIGITS, REGISTER_MAX_DIGITS, SUM_KWH_DIGITS, SUM_UNITS_DIGITS

# Every flag ingestion and VEE set on a reading (meters/validation.py, registers.py, services/energy.py,
# services/holds.py; docs/METER_DATA.md), for the admin's filter and the flagged-readings metric.
READING_FLAGS = (
    "wallet_mismatch",
    "wallet_invalid",
    "energy_generated_unusable",
    "energy_consumed_unusable",
    "interval_unusable",
    "register_baseline",
    "register_reset",
    "register_rollover",
    "registers_overlaid",
    "late_register_read",
    "late_settled_window",
    "above_maximum",
    "capacity",
    "spike",
    "frozen",
    "gap",
    "clock_drift",
    "meter_quality",
    "unsigned_timestamp",
    "unsigned_kwh",
    "unsigned_import",
    "unsigned_export",
    "local_time_ambiguous",
    "local_time_nonexistent",
)
# Upper bounds (seconds) of the submit-to-mint latency histogram the rollups keep (gridtoken_submit_to_mint_...).
# Fixed by migration 0007: changing them needs a migration that rebuilds the fleet rollup.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet_address = models.CharField(max_length=44, unique=True, null=True, blank=True)


class Meter(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    serial = models.CharField(max_length=64, unique=True)
    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="meters")
    wallet_address = models.CharField(max_length=44)
    public_key = models.CharField(max_length=44, blank=True, default="", help_text="Ed25519 public key, base58")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    meter_type = models.CharField(max_length=64, blank=True, default="")
    location = models.CharField(max_length=255, blank=True, default="")
    zone_id = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Meter data (docs/METER_DATA.md): what VEE checks against, and how the meter's registers behave.
    capacity_kw = models.DecimalField(
        max_digits=12, decimal_places=3, null=True, blank=True, help_text="Rated capacity; VEE's capacity check"
    )
    register_max_kwh = models.DecimalField(
        max_digits=REGISTER_MAX_DIGITS,
        decimal_places=KWH_DECIMAL_PLACES,
        null=True,
        blank=True,
        help_text="Where the energy registers roll over to 0 (e.g. 1000000 for six kWh digits); empty: never",
    )
    register_baseline_at = models.DateTimeField(
        null=True, blank=True, help_text="Register reads from here on start a new baseline (meter replaced)"
    )
    vee_rules = models.JSONField(
        default=dict, blank=True, help_text='Per-rule action overrides, e.g. {"spike": "flag", "capacity": "reject"}'
    )

    class Meta:
        ordering = ["serial"]

    def __str__(self) -> str:
        return self.serial


class MeterReading(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        MINTING = "minting"
        MINTED = "minted"
        FAILED = "failed"
        REJECTED = "rejected"
        RECORDED = "recorded"  # stored and shown, nothing to mint (zero, negative, or counted in a window)
        HELD = "held"  # a VEE rule holds it for an operator; never minted until approved
        AWAITING_WINDOW = "awaiting_window"  # window basis: waits for its settlement window to complete

    class Source(models.TextChoices):
        INTERVAL = "interval"  # the energy of an interval, as sent
        REGISTER = "register"  # a cumulative register read; the interval's energy is derived from the previous
        WINDOW = "window"  # derived: the net of one meter's settlement window (window basis)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No single-column FK indexes: reading_user_submitted_idx and the (meter, reading_timestamp) unique
    # index lead with these columns, and two fewer indexes make every ingested row cheaper.
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="readings", db_index=False)
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="readings", db_index=False)
    wallet_address = models.CharField(max_length=44)
    # Signed net kWh of the interval: export/generation minus import/consumption, as the meter sent it.
    kwh_amount = models.DecimalField(max_digits=KWH_MAX_DIGITS, decimal_places=KWH_DECIMAL_PLACES)
    reading_timestamp = models.DateTimeField()
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.INTERVAL)
    generated_kwh = models.DecimalField(
        max_digits=KWH_MAX_DIGITS, decimal_places=KWH_DECIMAL_PLACES, null=True, blank=True
    )
    consumed_kwh = models.DecimalField(
        max_digits=KWH_MAX_DIGITS, decimal_places=KWH_DECIMAL_PLACES, null=True, blank=True
    )
    interval_secs = models.PositiveIntegerField(null=True, blank=True)
    import_register_kwh = models.DecimalField(
        max_digits=REGISTER_MAX_DIGITS, decimal_places=KWH_DECIMAL_PLACES, null=True, blank=True
    )
    export_register_kwh = models.DecimalField(
        max_digits=REGISTER_MAX_DIGITS, decimal_places=KWH_DECIMAL_PLACES, null=True, blank=True
    )
    # What the pipeline mints (TOKENIZATION_MINT_BASIS decides it when the reading is stored); 0 for none.
    mintable_kwh = models.DecimalField(max_digits=KWH_MAX_DIGITS, decimal_places=KWH_DECIMAL_PLACES, default=0)
    flags = models.JSONField(default=list, blank=True, help_text="Quality and VEE flags (docs/METER_DATA.md)")
    window_start = models.DateTimeField(null=True, blank=True, help_text="Window basis: its settlement window")
    submitted_at = models.DateTimeField(default=timezone.now)
    minted = models.BooleanField(default=False)
    # NULL, not "", as in the gateway's schema: its clients read null for "not minted" / "unsigned".
    mint_tx_signature = models.CharField(max_length=88, null=True, blank=True)  # noqa: DJ001
    meter_signature = models.TextField(null=True, blank=True)  # noqa: DJ001
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    token_amount = models.BigIntegerField(null=True, blank=True, help_text="Exact base units minted")
    # The conversion the amount was priced with, fixed at the first claim and kept across retries and re-signs.
    token_ratio = models.DecimalField(max_digits=40, decimal_places=20, null=True, blank=True)
    token_decimals = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True, default="")
    telemetry = models.JSONField(default=dict, blank=True)
    batch = models.ForeignKey(
        "minting.MintBatch", on_delete=models.PROTECT, null=True, blank=True, related_name="readings"
    )

    class Meta:
        ordering = ["-submitted_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["meter", "reading_timestamp"],
                condition=~Q(source="window"),
                name="reading_unique_meter_timestamp",
            ),
            # One mint per (meter, settlement window), whatever races or crashes. A unique index of the
            # partitioned table includes its partition key (docs/PARTITIONS.md); a window row is stored at its
            # window's start (reading_window_at_its_start), so this is as unique as (meter, window_start).
            models.UniqueConstraint(
                fields=["meter", "window_start", "reading_timestamp"],
                condition=Q(source="window"),
                name="reading_one_per_window",
            ),
            models.CheckConstraint(
                condition=~Q(source="window") | Q(reading_timestamp=F("window_start")),
                name="reading_window_at_its_start",
            ),
            models.CheckConstraint(condition=Q(mintable_kwh__gte=0), name="reading_mintable_not_negative"),
            models.CheckConstraint(
                condition=Q(mintable_kwh__gt=0) | Q(status__in=["recorded", "held", "awaiting_window", "rejected"]),
                name="reading_minted_only_if_mintable",
            ),
            models.CheckConstraint(
                condition=Q(minted=False) | Q(status="minted", mint_tx_signature__isnull=False),
                name="reading_minted_has_signature",
            ),
        ]
        indexes = [
            # Serves the sweep: WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="reading_pending_due_idx"),
            # Each index here serves a named query (docs/ROLLUPS.md, "Indexes"; EXPLAIN in tests/meters/test_plans.py).
            # my-readings and the dashboard's recent readings: a user's newest first, keyset by (submitted_at, id).
            models.Index(fields=["user", "-submitted_at"], name="reading_user_submitted_idx"),
            # my-readings of one meter, the admin's meter filter.
            models.Index(fields=["meter", "submitted_at"], name="reading_meter_submitted_idx"),
            # The admin list (newest first) and its date filter, the demo's readings since it started.
            models.Index(fields=["submitted_at"], name="reading_submitted_idx"),
            # Serves window settlement: the readings still waiting for their window, per meter.
            models.Index(
                fields=["meter", "window_start"], condition=Q(status="awaiting_window"), name="reading_awaiting_idx"
            ),
            # The readings still open or refused (few): held counts and ages, the admin's status filter.
            models.Index(
                fields=["status", "submitted_at"],
                condition=~Q(status__in=["minted", "recorded"]),
                name="reading_open_status_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.meter_id} @ {self.reading_timestamp.isoformat()}: {self.kwh_amount} kWh"


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        DEVICE = "device", "Device (one meter)"
        FLEET = "fleet", "Fleet (an aggregator's meters)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, help_text="The key's first characters, to recognise it")
    key_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the key; the key is never stored")
    scope = models.CharField(max_length=16, choices=Scope.choices)
    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(scope="device") & Q(meter__isnull=False)) | (Q(scope="fleet") & Q(meter__isnull=True)),
                name="apikey_scope_matches_meter",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.scope})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class DeadLetter(models.Model):
    """A message a door could not handle because of a bug (``internal_error``), or one quarantined after it
    killed its consumer too often: kept as received so an operator can replay it after a fix
    (``meters.services.dead_letters``). One row per fingerprint; a repeat raises ``deliveries``."""

    class Door(models.TextChoices):
        REST_BATCH = "rest_batch"
        BRIDGE = "bridge"
        MQTT = "mqtt"

    class Status(models.TextChoices):
        PENDING = "pending"  # failed with an internal error; waiting for an operator
        QUARANTINED = "quarantined"  # never processed: its consumer died with it MQTT_POISON_MAX_DELIVERIES times
        REPLAYED = "replayed"  # replayed through its door after a fix; replay_result says what became of it
        DISCARDED = "discarded"  # an operator decided it is not to be stored

    id = models.BigAutoField(primary_key=True)
    fingerprint = models.CharField(max_length=64, unique=True, help_text="sha256 of door, topic and payload")
    door = models.CharField(max_length=16, choices=Door.choices)
    topic = models.CharField(max_length=1024, help_text="The MQTT topic or the request path")
    meter_serial = models.CharField(max_length=64, blank=True, default="")
    payload = models.BinaryField(help_text="The message's bytes as received (an item's JSON for a REST batch)")
    caller = models.JSONField(default=dict, blank=True, help_text="Who sent it (API key scope and ids), for replay")
    error_type = models.CharField(max_length=255)
    error_message = models.TextField(blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")
    request_id = models.CharField(max_length=128, blank=True, default="")
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    deliveries = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    replay_result = models.JSONField(null=True, blank=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["door", "status", "-id"], name="deadletter_door_status_idx"),
            models.Index(fields=["status", "-id"], name="deadletter_status_idx"),
            # The admin's search: an exact meter serial, request id or fingerprint (unique, indexed already).
            models.Index(fields=["meter_serial"], name="deadletter_serial_idx"),
            models.Index(fields=["request_id"], name="deadletter_request_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.door} {self.topic} ({self.status})"


class MessageAttempt(models.Model):
    """A message an ingester has taken on and not yet finished (MQTT): written before the batch is processed,
    deleted before it is acknowledged. A row that is still here when the broker redelivers the message means
    its consumer died while handling it; ``attempts`` then counts up to the quarantine."""

    fingerprint = models.CharField(primary_key=True, max_length=64)
    attempts = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.fingerprint[:12]}: {self.attempts} attempt(s)"


def _kwh_sum():
    return models.DecimalField(max_digits=SUM_KWH_DIGITS, decimal_places=KWH_DECIMAL_PLACES, default=0)


def _units_sum():
    return models.DecimalField(max_digits=SUM_UNITS_DIGITS, decimal_places=0, default=0)


class RollupMeasures(models.Model):
    """What every rollup sums over its readings (docs/ROLLUPS.md). Rows of every source and status count in
    the status counts; ``readings`` and the energy sums leave derived window rows out (they repeat their
    readings), and generated/consumed/mintable leave rejected readings out, as the reads they serve do."""

    readings = models.BigIntegerField(default=0, help_text="Measured readings (not derived window rows)")
    pending = models.BigIntegerField(default=0)
    minting = models.BigIntegerField(default=0)
    minted = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    recorded = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    awaiting_window = models.BigIntegerField(default=0)
    flagged = models.BigIntegerField(default=0, help_text="Rows carrying at least one flag")
    net_kwh = _kwh_sum()
    generated_kwh = _kwh_sum()
    consumed_kwh = _kwh_sum()
    mintable_kwh = _kwh_sum()
    minted_kwh = _kwh_sum()
    minted_units = _units_sum()
    minting_units = _units_sum()
    last_submitted_at = models.DateTimeField(null=True, blank=True)
    mint_slot = models.BigIntegerField(default=0, help_text="Newest context slot of a batch that minted here")

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.pk}: {self.readings} readings, {self.net_kwh} kWh net"


class LatencyHistogram(models.Model):
    """Minted readings by submit-to-mint latency: ``latency_le_<i>`` counts those within LATENCY_BUCKETS[i]."""

    latency_le_0 = models.BigIntegerField(default=0)
    latency_le_1 = models.BigIntegerField(default=0)
    latency_le_2 = models.BigIntegerField(default=0)
    latency_le_3 = models.BigIntegerField(default=0)
    latency_le_4 = models.BigIntegerField(default=0)
    latency_le_5 = models.BigIntegerField(default=0)
    latency_le_6 = models.BigIntegerField(default=0)
    latency_le_7 = models.BigIntegerField(default=0)
    latency_le_8 = models.BigIntegerField(default=0)
    latency_le_9 = models.BigIntegerField(default=0)
    latency_le_10 = models.BigIntegerField(default=0)
    latency_le_11 = models.BigIntegerField(default=0)
    latency_count = models.BigIntegerField(default=0)
    latency_seconds = models.DecimalField(max_digits=SUM_KWH_DIGITS, decimal_places=6, default=0)

    class Meta:
        abstract = True


class ReadingDelta(RollupMeasures, LatencyHistogram):
    """What one statement changed in the readings' rollups, written by the readings table's triggers
    (migration 0007) and folded into the rollup tables by ``rollups_fold``. Reads add the rows not folded yet,
    so a rollup read is exact at every moment. No foreign keys: the triggers insert these on every write."""

    id = models.BigAutoField(primary_key=True)
    meter_id = models.UUIDField()
    user_id = models.UUIDField()
    wallet_address = models.CharField(max_length=44)
    mint_address = models.CharField(max_length=44, blank=True, default="")  # "" unless the rows are minted
    hour = models.DateTimeField()

    __str__ = RollupMeasures.__str__


class MeterHourRollup(RollupMeasures):
    """One meter's readings in one UTC hour of ``reading_timestamp``."""

    meter_id = models.UUIDField()
    hour = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["meter_id", "hour"], name="meterhour_unique")]

    __str__ = RollupMeasures.__str__


class MeterRollup(RollupMeasures):
    """All of one meter's readings."""

    meter_id = models.UUIDField(primary_key=True)

    __str__ = RollupMeasures.__str__


class OwnerRollup(RollupMeasures):
    """All of one owner's readings (``MeterReading.user``): what stats and my-readings' totals read, one row
    whatever the history (the day rollup below holds one row per day of it)."""

    user_id = models.UUIDField(primary_key=True)

    __str__ = RollupMeasures.__str__


class OwnerDayRollup(RollupMeasures):
    """One owner's readings (``MeterReading.user``) in one UTC day of ``reading_timestamp``."""

    user_id = models.UUIDField()
    day = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user_id", "day"], name="ownerday_unique")]

    __str__ = RollupMeasures.__str__


class WalletRollup(RollupMeasures):
    """One wallet's readings per mint they were minted on ("" for those not minted)."""

    wallet_address = models.CharField(max_length=44)
    mint_address = models.CharField(max_length=44, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["wallet_address", "mint_address"], name="wallet_unique")]

    __str__ = RollupMeasures.__str__


class FleetRollup(RollupMeasures, LatencyHistogram):
    """Every reading: one row (id 1), written only by the fold, never by ingestion."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)

    __str__ = RollupMeasures.__str__


class FlagCount(models.Model):
    """Readings carrying ``flag`` submitted in one UTC hour (a flag that is no flag code counts as "other")."""

    hour = models.DateTimeField()
    flag = models.CharField(max_length=40)
    readings = models.BigIntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.flag} @ {self.hour.isoformat()}: {self.readings}"


class FlagHourRollup(FlagCount):
    """Fleet-wide, per hour and flag: /metrics' flagged readings of the last 24 hours read 25 hours of rows at
    most. Kept like the others: the readings' triggers append ``FlagDelta`` rows (migration 0013), a fold adds
    them."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hour", "flag"], name="flaghour_unique")]


class FlagDelta(FlagCount):
    """What one statement changed in ``FlagHourRollup``; reads add the rows not folded yet."""

    id = models.BigAutoField(primary_key=True)


# The archive's manifests live in their own module (meters/archive/); imported here so Django registers them.
from meters.archive.models import ArchivedPartition  # noqa: E402, F401

# The fleet's minute-by-minute figures for the operator's charts (meters/history.py).
from meters.history import FleetMinute  # noqa: E402, F401
