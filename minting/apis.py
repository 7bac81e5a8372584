"""Operator endpoints (``is_staff`` only): mint now, retry, status, the auto-mint switch, trigger, reconcile.

Device and fleet API keys never reach these views: only user tokens and admin sessions authenticate here.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from meters.apis.base import StrictBooleanField, StrictUUIDField
from meters.apis.operator import OPERATOR_BODY_ERRORS, OPERATOR_ERRORS, OperatorApi, operator_errors
from minting import schemas, selectors
from minting.schemas import MINT_ERRORS
from minting.services.control import auto_mint_set
from minting.services.operator import (
    MAX_READINGS_PER_REQUEST,
    batch_trigger,
    reading_mint_now,
    readings_mint_now,
    readings_retry,
)
from minting.services.reconciliation import batches_reconcile


@extend_schema_serializer(component_name="UnmintedReading")
class ReadingOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    user_id = serializers.UUIDField()
    meter_id = serializers.UUIDField()
    meter_serial = serializers.CharField(source="meter.serial")
    wallet_address = serializers.CharField()
    kwh_amount = serializers.DecimalField(max_digits=18, decimal_places=9)
    reading_timestamp = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField()
    minted = serializers.BooleanField()
    mint_tx_signature = serializers.CharField(allow_null=True)
    token_amount = serializers.IntegerField(allow_null=True)
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    last_error = serializers.CharField()


class ReadingMintFromReadingApi(OperatorApi):
    @extend_schema_serializer(component_name="OperatorMintInput")
    class InputSerializer(serializers.Serializer):
        reading_id = StrictUUIDField()

    @extend_schema(
        summary="Mint one reading now",
        request=InputSerializer,
        responses={
            **schemas.MINT_FROM_READING_RESPONSES,
            **operator_errors(
                *OPERATOR_BODY_ERRORS,
                404,
                409,
                *MINT_ERRORS,
                described={
                    400: "validation_error, already_minted, reading_rejected.",
                    404: "reading_not_found.",
                    409: "mint_in_progress: a mint of this reading is already in flight.",
                },
            ),
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reading, confirmed = reading_mint_now(reading_id=data.validated_data["reading_id"], actor=self.actor())
        in_flight = reading.batch.signature if reading.status == "minting" and reading.batch_id else None
        body = {
            "message": "Tokens minted." if confirmed else "Transaction sent; confirmation pending.",
            "reading_id": str(reading.id),
            "transaction_signature": reading.mint_tx_signature or in_flight,
            "kwh_amount": format(reading.kwh_amount, "f"),
            "token_amount": reading.token_amount,
            "wallet_address": reading.wallet_address,
            "status": reading.status,
        }
        return Response(body, status=status.HTTP_200_OK if confirmed else status.HTTP_202_ACCEPTED)


class ReadingMintBatchApi(OperatorApi):
    @extend_schema_serializer(component_name="OperatorMintBatchInput")
    class InputSerializer(serializers.Serializer):
        reading_ids = serializers.ListField(
            child=StrictUUIDField(), allow_empty=False, max_length=MAX_READINGS_PER_REQUEST
        )

    @extend_schema_serializer(component_name="OperatorMintBatchItem")
    class ResultSerializer(serializers.Serializer):
        reading_id = serializers.UUIDField()
        success = serializers.BooleanField()
        status = serializers.CharField(allow_null=True)
        transaction_signature = serializers.CharField(allow_null=True)
        token_amount = serializers.IntegerField(allow_null=True)
        error = serializers.CharField(allow_null=True)

    @extend_schema(
        summary="Mint pending readings now, in one batch",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "OperatorMintBatchResult",
                {
                    "total_readings": serializers.IntegerField(),
                    "successful_mints": serializers.IntegerField(),
                    "failed_mints": serializers.IntegerField(),
                    "results": ResultSerializer(many=True),
                },
            ),
            **operator_errors(*OPERATOR_BODY_ERRORS, *MINT_ERRORS),
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        results = readings_mint_now(reading_ids=data.validated_data["reading_ids"], actor=self.actor())
        successful = sum(result.success for result in results)
        return Response(
            {
                "total_readings": len(results),
                "successful_mints": successful,
                "failed_mints": len(results) - successful,
                "results": self.ResultSerializer(results, many=True).data,
            }
        )


class ReadingUnmintedListApi(OperatorApi):
    class FilterSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=50)

    @extend_schema(
        summary="Pending, in-flight and failed readings, oldest first",
        parameters=[FilterSerializer],
        responses={200: ReadingOutputSerializer(many=True), **operator_errors(400, *OPERATOR_ERRORS)},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params.dict())  # "?limit=" is a bad limit, not none
        filters.is_valid(raise_exception=True)
        readings = selectors.unminted_reading_list(limit=filters.validated_data["limit"])
        return Response(ReadingOutputSerializer(readings, many=True).data)


class ReadingRetryFailedApi(OperatorApi):
    @extend_schema_serializer(component_name="OperatorRetryInput")
    class InputSerializer(serializers.Serializer):
        reading_ids = serializers.ListField(
            child=StrictUUIDField(), required=False, allow_empty=False, max_length=MAX_READINGS_PER_REQUEST
        )

    @extend_schema(
        summary="Retry failed readings",
        request=InputSerializer,
        responses={200: schemas.RETRIED, **operator_errors(*OPERATOR_BODY_ERRORS)},
        description="Without reading_ids: every failed reading. With them: those failed or pending.",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        count = readings_retry(reading_ids=data.validated_data.get("reading_ids"), actor=self.actor())
        return Response({"message": f"{count} reading(s) queued for minting.", "retried": count})


class TokenizationStatusApi(OperatorApi):
    @extend_schema(
        summary="Minting status: readings by status, batches, automatic minting",
        responses={200: schemas.STATUS, **operator_errors(*OPERATOR_ERRORS)},
    )
    def get(self, request):
        return Response(selectors.tokenization_status())


class AutoMintToggleApi(OperatorApi):
    @extend_schema_serializer(component_name="AutoMintToggleInput")
    class InputSerializer(serializers.Serializer):
        enabled = StrictBooleanField()

    @extend_schema(
        summary="Switch automatic minting on or off",
        request=InputSerializer,
        responses={200: schemas.AUTO_MINT, **operator_errors(*OPERATOR_BODY_ERRORS)},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        control = auto_mint_set(enabled=data.validated_data["enabled"], actor=self.actor())
        state = "enabled" if control.auto_mint_enabled else "disabled"
        return Response({"message": f"Automatic minting {state}.", "auto_mint_enabled": control.auto_mint_enabled})


class BatchTriggerApi(OperatorApi):
    @extend_schema(
        summary="Run the minting sweep now",
        request=None,  # takes no body
        responses={200: schemas.TRIGGERED, **operator_errors(*OPERATOR_ERRORS, *MINT_ERRORS)},
    )
    def post(self, request):
        result = batch_trigger(actor=self.actor())
        return Response(
            {
                "message": f"Batch processed: {result.minted} of {result.claimed} reading(s) minted.",
                "total_readings": result.claimed,
                "successful_mints": result.minted,
                "failed_mints": result.claimed - result.minted,
                "in_flight_batches": result.in_flight,
                "transaction_signatures": result.signatures,
            }
        )


class BatchReconcileApi(OperatorApi):
    @extend_schema(
        summary="Settle in-flight batches from the chain now",
        request=None,  # takes no body; a chain that cannot be asked is reported in the body's error
        responses={200: schemas.RECONCILED, **operator_errors(*OPERATOR_ERRORS)},
    )
    def post(self, request):
        return Response(batches_reconcile(min_age_secs=0).as_dict())
