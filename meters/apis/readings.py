from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from meters.apis.base import ApiView, IsApiKey, WriteApiView, reading_payload
from meters.apis.docs import READING_PAGE, batch_schema, errors, stats_schema, submit_schema, v1_schema
from meters.apis.meters import PageInputSerializer
from meters.models import MeterReading
from meters.selectors import SORTABLE, Caller, reading_list, reading_stats
from meters.services.batch import reading_submit, readings_submit_batch
from meters.services.dead_letters import rest_batch_hook
from meters.validation import MAX_SERIAL_LENGTH, clean_text, parse_reading


class ReadingSubmitApi(WriteApiView):
    """POST /api/meters/submit-reading: one reading (``kwh_amount``, ``reading_timestamp``).

    201 with the stored reading, or 200 with ``"duplicate": true`` for a replay of a stored one. The body is
    checked by ``meters.validation`` instead of an InputSerializer (see that module for why).
    """

    permission_classes = [IsAuthenticated]

    @submit_schema
    def post(self, request):
        now = timezone.now()
        item = parse_reading(
            request.data, kwh_key="kwh_amount", timestamp_key="reading_timestamp", timestamp_required=True, now=now
        )
        result = reading_submit(caller=Caller.from_request(request), item=item, now=now)
        body = reading_payload(result.reading)
        body["duplicate"] = result.duplicate
        return Response(body, status=status.HTTP_200_OK if result.duplicate else status.HTTP_201_CREATED)


class MeterReadingCreateApi(WriteApiView):
    """POST /api/v1/meters/{serial}/readings: the gateway's v1 reading (``kwh``, optional ``timestamp``).

    Telemetry fields are kept in ``telemetry``; unknown fields are ignored. The answer carries the stored
    reading plus the gateway's field names (``serial_number``, ``kwh``, ``timestamp``, ``tx_signature``).
    """

    permission_classes = [IsAuthenticated]

    @v1_schema
    def post(self, request, serial: str):
        now = timezone.now()
        serial = clean_text(serial, "serial", max_length=MAX_SERIAL_LENGTH)
        item = parse_reading(
            request.data,
            kwh_key="kwh",
            timestamp_key="timestamp",
            timestamp_required=False,
            now=now,
            path_serial=serial,
        )
        result = reading_submit(caller=Caller.from_request(request), item=item, now=now)
        body = reading_payload(result.reading)
        body.update(
            duplicate=result.duplicate,
            serial_number=body["meter_serial"],
            kwh=body["kwh_amount"],
            timestamp=body["reading_timestamp"],
            tx_signature=body["mint_tx_signature"],
            message="Duplicate reading: the stored one is returned." if result.duplicate else "Reading recorded.",
        )
        return Response(body, status=status.HTTP_200_OK if result.duplicate else status.HTTP_201_CREATED)


class ReadingBatchCreateApi(WriteApiView):
    """POST /api/v1/meters/batch/readings (and the /public/ alias): up to INGEST_BATCH_MAX readings.

    API keys only. Always 200 once the batch itself is well-formed; each item has its own result.
    """

    permission_classes = [IsApiKey]

    @batch_schema
    def post(self, request):
        body = request.data
        readings = body.get("readings") if isinstance(body, dict) else body
        if not isinstance(body, dict):
            readings = None  # a bare list is not the documented shape
        caller = Caller.from_request(request)
        result = readings_submit_batch(
            caller=caller,
            readings=readings,
            now=timezone.now(),
            dead_letter=rest_batch_hook(caller=caller, readings=readings, path=request.path),
        )
        return Response(result)


class StatusListField(serializers.CharField):
    """One reading status or several, comma-separated (``pending,failed``): a list of known statuses."""

    def to_internal_value(self, data) -> list[str]:
        statuses = [part.strip() for part in super().to_internal_value(data).split(",")]
        unknown = [part for part in statuses if part not in MeterReading.Status.values]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown status {unknown[0]!r}; one or more of {', '.join(MeterReading.Status.values)}, "
                "comma-separated."
            )
        return list(dict.fromkeys(statuses))


class ReadingListApi(ApiView):
    """GET /api/meters/my-readings: the caller's readings, a page at a time, optionally filtered."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ReadingListQuery")
    class InputSerializer(PageInputSerializer):
        sort_by = serializers.ChoiceField(choices=SORTABLE, default="submitted_at")
        sort_order = serializers.ChoiceField(choices=("asc", "desc"), default="desc")
        minted = serializers.BooleanField(required=False, allow_null=True, default=None)
        meter_serial = serializers.CharField(
            required=False, default=None, max_length=MAX_SERIAL_LENGTH, help_text="Only this meter's readings"
        )
        meter_id = serializers.UUIDField(required=False, default=None, help_text="Only this meter's readings")
        status = StatusListField(
            required=False,
            default=None,
            max_length=200,
            help_text=f"One status or several, comma-separated: {', '.join(MeterReading.Status.values)}",
        )
        source = serializers.ChoiceField(choices=MeterReading.Source.choices, required=False, default=None)
        since = serializers.DateTimeField(
            required=False, default=None, help_text="reading_timestamp at or after this (ISO 8601; no offset: UTC)"
        )
        until = serializers.DateTimeField(
            required=False, default=None, help_text="reading_timestamp before this (ISO 8601; no offset: UTC)"
        )
        cursor = serializers.CharField(
            required=False,
            default=None,
            max_length=400,
            help_text="A page's next_cursor: the page after it, by keyset (same sort_by, sort_order and filters)",
        )

        def validate(self, data):
            if data["since"] is not None and data["until"] is not None and data["until"] < data["since"]:
                raise serializers.ValidationError({"until": "until is before since."})
            return data

    @extend_schema(
        summary="Your readings, a page at a time, optionally filtered",
        parameters=[InputSerializer],
        responses={200: READING_PAGE, **errors(400, 401)},
    )
    def get(self, request):
        query = self.InputSerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        page = reading_list(caller=Caller.from_request(request), **query.validated_data)
        return Response({"data": [reading_payload(r) for r in page["items"]], "pagination": page["pagination"]})


class ReadingStatsApi(ApiView):
    """GET /api/meters/stats: totals over the caller's readings (kWh as exact strings)."""

    permission_classes = [IsAuthenticated]

    @stats_schema
    def get(self, request):
        stats = reading_stats(caller=Caller.from_request(request))
        return Response(
            {
                "total_readings": stats["total_readings"],
                "unminted_kwh": format(stats["unminted_kwh"], "f"),
                "minted_kwh": format(stats["minted_kwh"], "f"),
                "total_kwh": format(stats["total_kwh"], "f"),
            }
        )
