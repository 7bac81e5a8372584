"""The consumers' reads: their consumers and each one's 24/7 report of a month (JSON and CSV)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from gridtoken.exceptions import ApplicationError
from matching.models import Consumer
from matching.report import consumer_list, consumer_month_report, report_csv, report_payload
from meters.apis.base import ApiView, IsUserCredential
from meters.apis.docs import errors

MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
MONTH_PARAMETER = OpenApiParameter(
    "month", str, required=False, description="The month, YYYY-MM (UTC); the current month when absent."
)
NOT_FOUND = {404: "consumer_not_found: no consumer of yours with this id."}
WH_TEXT = "Wh as an exact decimal string"

CONSUMER = inline_serializer("MatchingConsumer", {
    "id": serializers.UUIDField(),
    "name": serializers.CharField(help_text="The beneficiary named in every claim for this consumer"),
    "grid_zone": serializers.CharField(),
    "status": serializers.CharField(),
    "match_from": serializers.DateTimeField(help_text="The first hour matched"),
    "matched_through": serializers.DateTimeField(allow_null=True, help_text="Every hour before it is matched"),
    "meters": serializers.ListField(child=serializers.CharField(), help_text="The demand meters' serials"),
})  # fmt: skip
CERTIFICATE = inline_serializer("MatchedCertificate", {
    "bundle_id": serializers.UUIDField(),
    "device_id": serializers.UUIDField(),
    "kind": serializers.ChoiceField(choices=["bilateral", "pool"]),
    "quantity_wh": serializers.IntegerField(),
    "verify": serializers.CharField(help_text="The public verification of the claimed bundle"),
})  # fmt: skip
REPORT = inline_serializer("MatchingReport", {
    "consumer": inline_serializer("MatchingReportConsumer", {"id": serializers.UUIDField(),
                                  "name": serializers.CharField(), "grid_zone": serializers.CharField()}),
    "month": serializers.CharField(),
    "period_start": serializers.DateTimeField(),
    "period_end": serializers.DateTimeField(),
    "decided_through": serializers.DateTimeField(help_text="Hours from the period's start up to here are matched"),
    "demand_wh": serializers.CharField(help_text=f"The month's demand, {WH_TEXT}"),
    "matched_wh": serializers.IntegerField(help_text="Certificates claimed for the consumer (1 Wh each)"),
    "covered_wh": serializers.CharField(help_text=f"Matched Wh counted against each hour's demand, {WH_TEXT}"),
    "score": serializers.CharField(allow_null=True, help_text="The 24/7 score, covered_wh / demand_wh, 6 places"),
    "annual": inline_serializer("MatchingAnnualFigure", {
        "supply_wh": serializers.IntegerField(help_text="Every hour's bilateral offer plus the pool Wh matched"),
        "score": serializers.CharField(allow_null=True, help_text="min(1, supply_wh / demand_wh): annual matching"),
    }),
    "unmatched_hours": serializers.IntegerField(help_text="Hours whose demand certificates did not cover"),
    "hours": inline_serializer("MatchingReportHour", {
        "hour": serializers.DateTimeField(),
        "demand_wh": serializers.CharField(help_text=WH_TEXT),
        "matched_wh": serializers.IntegerField(),
        "bilateral_wh": serializers.IntegerField(),
        "pool_wh": serializers.IntegerField(),
        "unmatched_wh": serializers.CharField(help_text=WH_TEXT),
        "adjusted": serializers.BooleanField(help_text="Readings changed the demand after the hour was matched"),
        "certificates": CERTIFICATE.__class__(many=True),
    }, many=True),
})  # fmt: skip


def parse_month(text: str | None) -> date:
    if text is None:
        today = datetime.now(UTC)
        return date(today.year, today.month, 1)
    found = MONTH.fullmatch(text)
    if found is None or not 2000 <= int(found[1]) <= 9999:
        raise ApplicationError("validation_error", "give the month as YYYY-MM, e.g. 2026-12", field="month")
    return date(int(found[1]), int(found[2]), 1)


def consumer_of(user, consumer_id: uuid.UUID) -> Consumer:
    """The user's consumer (an operator's: anyone's); a consumer of another account is not found, as absent."""
    consumers = Consumer.objects.select_related("zone")
    if not user.is_staff:
        consumers = consumers.filter(user=user)
    consumer = consumers.filter(id=consumer_id).first()
    if consumer is None:
        raise ApplicationError("consumer_not_found", "no consumer of yours with this id", status=404)
    return consumer


def consumer_payload(consumer: Consumer) -> dict:
    matched_through = consumer.zone.matched_through
    return {
        "id": str(consumer.id),
        "name": consumer.name,
        "grid_zone": consumer.zone_id,
        "status": consumer.status,
        "match_from": consumer.match_from,
        "matched_through": matched_through,
        "meters": list(consumer.demand_meters.order_by("meter__serial").values_list("meter__serial", flat=True)),
    }


class ConsumerListApi(ApiView):
    """GET /api/matching/consumers: the caller's consumers."""

    permission_classes = [IsUserCredential]

    @extend_schema(
        summary="Your consumers (demand matched hour by hour)",
        responses={200: inline_serializer("MatchingConsumerList", {"consumers": CONSUMER.__class__(many=True)}),
                   **errors(401, 403)},
    )  # fmt: skip
    def get(self, request):
        return Response({"consumers": [consumer_payload(c) for c in consumer_list(user=request.user)]})


class ConsumerReportApi(ApiView):
    """GET /api/matching/consumers/{consumer_id}/report: the month's 24/7 report."""

    permission_classes = [IsUserCredential]

    @extend_schema(
        summary="A consumer's 24/7 report of a month",
        description=(
            "Every matched hour of the month: demand against the certificates matched to it (bilateral and pool), "
            "the 24/7 score, the figure annual matching would claim with the same supply, the unmatched hours, "
            "and each hour's certificates, each verifiable at its verify link."
        ),
        parameters=[MONTH_PARAMETER],
        responses={200: REPORT, **errors(400, 401, 403, 404, described=NOT_FOUND)},
    )
    def get(self, request, consumer_id):
        month = parse_month(request.query_params.get("month"))
        consumer = consumer_of(request.user, consumer_id)
        return Response(report_payload(consumer_month_report(consumer=consumer, month=month)))


class ConsumerReportCsvApi(ApiView):
    """GET /api/matching/consumers/{consumer_id}/report.csv: the same hours as CSV."""

    permission_classes = [IsUserCredential]

    @extend_schema(
        summary="A consumer's 24/7 report of a month as CSV, one row per hour",
        description="Columns: " + "hour_start, hour_end, demand_wh, matched_wh, bilateral_wh, pool_wh, unmatched_wh, "
        "adjusted, certificates (the hour's claimed bundle ids, space apart). Wh exact, no rounding.",
        parameters=[MONTH_PARAMETER],
        responses={
            (200, "text/csv"): OpenApiResponse(str, description="The hours as CSV, a header row first"),
            **errors(400, 401, 403, 404, described=NOT_FOUND),
        },
    )
    def get(self, request, consumer_id):
        month = parse_month(request.query_params.get("month"))
        consumer = consumer_of(request.user, consumer_id)
        body = report_csv(consumer_month_report(consumer=consumer, month=month))
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        name = f"gridtoken-24-7-{consumer.id}-{month:%Y-%m}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
