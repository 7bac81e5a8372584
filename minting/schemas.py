"""OpenAPI descriptions of the operator endpoints' answers (drf-spectacular). The views build these bodies from
services' results (``minting.selectors.tokenization_status``, ``ReconcileResult.as_dict`` ...), so the shapes are
declared here for the schema only; nothing in this module serialises a response."""

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

from minting.models import MintBatch

_COUNT = serializers.IntegerField

MINT_FROM_READING = inline_serializer(
    "OperatorMintResult",
    {
        "message": serializers.CharField(),
        "reading_id": serializers.UUIDField(),
        "transaction_signature": serializers.CharField(allow_null=True, help_text="Confirmed, or in flight (202)"),
        "kwh_amount": serializers.CharField(help_text="Exact decimal string"),
        "token_amount": serializers.IntegerField(allow_null=True, help_text="Base units"),
        "wallet_address": serializers.CharField(),
        "status": serializers.CharField(),
    },
)
MINT_FROM_READING_RESPONSES = {
    200: OpenApiResponse(MINT_FROM_READING, description="Minted and confirmed."),
    202: OpenApiResponse(MINT_FROM_READING, description="Sent; the reconciler settles it."),
}

RETRIED = inline_serializer("OperatorRetryResult", {"message": serializers.CharField(), "retried": _COUNT()})

AUTO_MINT = inline_serializer(
    "AutoMintSwitch", {"message": serializers.CharField(), "auto_mint_enabled": serializers.BooleanField()}
)

TRIGGERED = inline_serializer(
    "BatchTriggerResult",
    {
        "message": serializers.CharField(),
        "total_readings": _COUNT(help_text="Claimed"),
        "successful_mints": _COUNT(),
        "failed_mints": _COUNT(),
        "in_flight_batches": _COUNT(help_text="Left for the reconciler"),
        "transaction_signatures": serializers.ListField(child=serializers.CharField()),
    },
)

RECONCILED = inline_serializer(
    "ReconcileResult",
    {
        **{name: _COUNT() for name in ("examined", "confirmed", "failed", "expired", "resent", "minted")},
        "error": serializers.CharField(help_text="Empty, or why the chain could not be asked"),
    },
)

_CHAIN = inline_serializer(
    "ChainState",
    {
        "paused": serializers.BooleanField(help_text="The outage breaker holds automatic minting"),
        "reason_code": serializers.CharField(allow_null=True),
        "failures": _COUNT(),
        "paused_until": serializers.DateTimeField(allow_null=True),
        "last_error": serializers.CharField(),
        "last_error_code": serializers.CharField(allow_null=True),
        "fee_payer_lamports": serializers.IntegerField(allow_null=True),
        "fee_payer_sol": serializers.CharField(allow_null=True, help_text="Exact decimal SOL"),
        "fee_payer_checked_at": serializers.DateTimeField(allow_null=True),
        "decisions_blocked": serializers.BooleanField(),
        "decisions_blocked_at": serializers.DateTimeField(allow_null=True),
        "decisions_blocked_reason": serializers.CharField(),
        "decisions_blocked_code": serializers.CharField(allow_null=True),
        "fee_payer_address": serializers.CharField(allow_null=True, help_text="The mint authority in use"),
    },
)

STATUS = inline_serializer(
    "TokenizationStatus",
    {
        "auto_mint_enabled": serializers.BooleanField(),
        "auto_mint_percentage": serializers.IntegerField(min_value=0, max_value=100),
        "polling_interval_secs": _COUNT(),
        "batch_size": _COUNT(),
        "unminted_readings_count": _COUNT(),
        "readings_by_status": inline_serializer(
            "ReadingStatusCounts", {name: _COUNT() for name in ("pending", "minting", "failed")}
        ),
        "recent_batch_stats": inline_serializer(
            "RecentBatchStats",
            {
                "window_hours": _COUNT(),
                "batches": inline_serializer("BatchStatusCounts", {name: _COUNT() for name in MintBatch.Status.values}),
                "readings_minted": _COUNT(),
                "tokens_minted": _COUNT(help_text="Base units"),
                "last_confirmed_at": serializers.DateTimeField(allow_null=True),
                "in_flight_batches": _COUNT(),
            },
        ),
        "chain": _CHAIN,
        "updated_by": serializers.CharField(help_text="Who last switched auto-mint"),
    },
)

# What a mint can answer when the chain will not: 502 (it refused or failed), 503 (unreachable).
MINT_ERRORS = (502, 503)
