import uuid

from django.db import models
from django.utils import timezone


class TokenMint(models.Model):
    """The energy token mint that ``chain_init`` created or adopted; the newest row is the one in use."""

    address = models.CharField(max_length=44)
    decimals = models.PositiveSmallIntegerField()
    token_program = models.CharField(max_length=44)
    authority = models.CharField(max_length=44)
    rpc_url = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return self.address


class MintBatch(models.Model):
    """One signed mint transaction and the audit record of its life.

    The row (signature, raw bytes, last valid block height) is committed before the bytes are sent, so
    after any crash reconciliation can decide from the chain what happened.
    """

    class Status(models.TextChoices):
        SIGNED = "signed"  # committed, maybe sent: the chain decides
        CONFIRMED = "confirmed"  # landed; readings are minted
        FAILED = "failed"  # executed with an error on chain; readings released
        EXPIRED = "expired"  # blockhash expired without landing; readings released

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SIGNED)
    signature = models.CharField(max_length=88, unique=True)
    raw_transaction = models.BinaryField()
    last_valid_block_height = models.BigIntegerField()
    # The slot its blockhash was read at: a read deciding this batch must have seen at least that slot.
    context_slot = models.BigIntegerField(default=0)
    # Per instruction index, the wallet it mints to (null for budget and memo): pins an InstructionError.
    instruction_wallets = models.JSONField(default=list, blank=True)
    mint_address = models.CharField(max_length=44)
    reading_count = models.PositiveIntegerField(default=0)
    total_token_amount = models.DecimalField(max_digits=30, decimal_places=0, default=0)
    send_attempts = models.PositiveIntegerField(default=0)
    # What it costs (docs/CHAIN.md, "What a kWh costs"). At signing: the kWh its readings mint, its compute
    # budget and the priority fee that budget commits to (the hourly ceiling sums these). From the landed
    # transaction's meta (confirmed or failed; null until read): the fee charged (signatures + priority), the
    # rent of the accounts it created, the compute units it used.
    # (Database defaults too: processes of the previous release insert batches without these columns.)
    kwh = models.DecimalField(max_digits=30, decimal_places=9, default=0, db_default=0)
    compute_unit_limit = models.PositiveIntegerField(default=0, db_default=0)
    compute_unit_price = models.BigIntegerField(default=0, db_default=0)  # micro-lamports per compute unit
    priority_fee_lamports = models.BigIntegerField(default=0, db_default=0)
    fee_lamports = models.BigIntegerField(null=True, blank=True)
    rent_lamports = models.BigIntegerField(null=True, blank=True)
    compute_units_consumed = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "mint batches"
        indexes = [
            # The oldest in flight (reconciliation, /metrics) and the admin's status filter, newest first.
            models.Index(fields=["status", "created_at"], name="batch_status_created_idx"),
            # Recent batches for the dashboard, the status API and /metrics (the newest one, the last minute's
            # and hour's settlements) without reading every batch ever sent.
            models.Index(fields=["created_at"], name="batch_created_idx"),
            models.Index(fields=["settled_at"], name="batch_settled_idx"),
            # Landed batches whose costs are not read yet (reconciliation reads them), oldest first.
            models.Index(
                fields=["settled_at"],
                name="batch_costs_unread_idx",
                condition=models.Q(status__in=["confirmed", "failed"], fee_lamports__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.signature[:12]}… ({self.status})"


# Batch created (signed) to settled, seconds: gridtoken_mint_batch_duration_seconds' buckets, frozen in the batch
# rollup's columns by minting/migrations/0006_batch_rollup.py (a new bound needs a migration).
BATCH_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class BatchMeasures(models.Model):
    """What the batch rollup sums over mint batches of one status: how many, and the histogram of
    ``settled_at - created_at`` of those with ``settled_at`` set (``duration_le_<i>``: within
    BATCH_DURATION_BUCKETS[i]; the count and the sum in seconds, exact to the microsecond)."""

    batches = models.BigIntegerField(default=0)
    duration_le_0 = models.BigIntegerField(default=0)
    duration_le_1 = models.BigIntegerField(default=0)
    duration_le_2 = models.BigIntegerField(default=0)
    duration_le_3 = models.BigIntegerField(default=0)
    duration_le_4 = models.BigIntegerField(default=0)
    duration_le_5 = models.BigIntegerField(default=0)
    duration_le_6 = models.BigIntegerField(default=0)
    duration_le_7 = models.BigIntegerField(default=0)
    duration_le_8 = models.BigIntegerField(default=0)
    duration_le_9 = models.BigIntegerField(default=0)
    duration_le_10 = models.BigIntegerField(default=0)
    duration_count = models.BigIntegerField(default=0)
    duration_seconds = models.DecimalField(max_digits=30, decimal_places=6, default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.status}: {self.batches} batches"


class BatchDelta(BatchMeasures):
    """What one statement on the mint batches changed in the batch rollup, written by the batch table's
    triggers (migration 0006), folded with the readings' deltas (``rollups_fold_all``); reads add the rows not
    folded yet."""

    id = models.BigAutoField(primary_key=True)
    status = models.CharField(max_length=16)


class BatchRollup(BatchMeasures):
    """Mint batches of one status (one row per status), written only by the fold."""

    status = models.CharField(max_length=16, primary_key=True)


class ChainCostDay(models.Model):
    """What the chain cost on one UTC day (by the batches' settle time), added to as each landed batch's costs
    are read: the report's rollup, so no report reads the batches of every day."""

    day = models.DateField(primary_key=True)
    batches = models.BigIntegerField(default=0)  # landed (confirmed or failed: a failed one pays its fee too)
    readings = models.BigIntegerField(default=0)  # minted (confirmed batches only), likewise kwh
    kwh = models.DecimalField(max_digits=30, decimal_places=9, default=0)
    fee_lamports = models.BigIntegerField(default=0)  # signatures + priority
    priority_fee_lamports = models.BigIntegerField(default=0)
    rent_lamports = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.fee_lamports + self.rent_lamports} lamports for {self.kwh} kWh"


class MintingControl(models.Model):
    """Run-time switches every worker reads; one row, seeded from the environment on first use."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    auto_mint_enabled = models.BooleanField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True, default="")
    # Chain outage breaker: automatic minting pauses until chain_retry_at; an outage consumes no reading attempts.
    chain_failures = models.PositiveIntegerField(default=0)
    chain_retry_at = models.DateTimeField(null=True, blank=True)
    chain_error = models.TextField(blank=True, default="")
    chain_error_code = models.CharField(max_length=64, blank=True, default="")
    # Bumped when a mint finds a token account gone (closed by its owner): every process forgets its cache.
    accounts_epoch = models.PositiveIntegerField(default=0)
    fee_payer_lamports = models.BigIntegerField(null=True, blank=True)
    fee_payer_checked_at = models.DateTimeField(null=True, blank=True)
    # The last time a settlement decision had to wait because the node lagged or lacked history.
    decisions_blocked_at = models.DateTimeField(null=True, blank=True)
    decisions_blocked_reason = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"auto-mint {'on' if self.auto_mint_enabled else 'off'}"
