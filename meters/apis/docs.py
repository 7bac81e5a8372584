"""OpenAPI descriptions of the meters APIs (drf-spectacular): request/response shapes and the two
credential schemes. The reading endpoints validate by hand (see meters.validation), so their shapes are
declared here for the schema only; nothing in this module validates a request."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

from gridtoken.exceptions import ErrorBodySerializer, ErrorDetailSerializer
from meters.models import MeterReading
from meters.validation import TELEMETRY_FIELDS


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "meters.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "A device or fleet key (gtk_...); also accepted as Authorization: Bearer gtk_...",
        }


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "meters.authentication.BearerTokenAuthentication"
    name = "userToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A user token from POST /api/auth/token"}


# What each error status means on these APIs; an operation lists the statuses it can really answer.
ERROR_DESCRIPTIONS = {
    400: "Invalid request: malformed_json, validation_error (field names it) or a rule's own code.",
    401: "Missing (not_authenticated) or invalid (invalid_credentials) credentials; WWW-Authenticate is set.",
    403: "Not allowed: forbidden (another meter or account, wrong credential kind), meter_suspended.",
    404: "meter_not_found: no meter with that serial or id.",
    409: "Conflict: duplicate_reading_conflict, reading_within_duplicate_window, meter_changed (retry).",
    413: "payload_too_large: the body is over 8 MiB.",
    415: "unsupported_media_type: send application/json.",
    422: "Understood but not processable.",
    429: "rate_limited: see Retry-After and error.details.retry_after.",
    502: "The chain refused or failed the transaction (chain_error, mint_failed).",
    503: "chain_unavailable: the chain could not be reached; nothing was done.",
}


def errors(*statuses: int, described: dict[int, str] | None = None) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for ``statuses``, each with the one error body (``ErrorBody``); ``described`` replaces
    the general description of a status with what it means on one operation."""
    described = described or {}
    return {
        status: OpenApiResponse(ErrorBodySerializer, description=described.get(status, ERROR_DESCRIPTIONS[status]))
        for status in statuses
    }


# Every JSON body goes through meters.parsers.DecimalJSONParser (400 malformed_json, 413, 415); every write
# is rate limited (429); every caller here is authenticated (401).
BODY_ERRORS = (400, 401, 413, 415, 429)
# A reading write can also name a meter that is not the caller's, unknown, or conflicting.
READING_ERRORS = errors(*BODY_ERRORS, 403, 404, 409)


def pagination_fields() -> dict:
    return {
        "current_page": serializers.IntegerField(),
        "total_pages": serializers.IntegerField(),
        "total_items": serializers.IntegerField(),
        "items_per_page": serializers.IntegerField(),
        "has_next": serializers.BooleanField(),
        "has_previous": serializers.BooleanField(),
    }


PAGINATION = inline_serializer("Pagination", pagination_fields())

_telemetry = {name: serializers.JSONField(required=False) for name in TELEMETRY_FIELDS}
_kwh = {"allow_null": True, "help_text": "Exact decimal string (kWh, nine places) or null"}
# Register reads (docs/METER_DATA.md): send totals instead of kwh, in any of these shapes.
_registers = {
    "registers": serializers.DictField(
        required=False,
        help_text='OBIS code -> cumulative total, e.g. {"1-0:1.8.0": "1234.5", "2.8.0": 567}; tariffs 1.8.1-4 and '
        "2.8.1-4 are summed when the total is absent; GridTokenX's 1.1.1.8.0.255 form is read too",
    ),
    "register_unit": serializers.ChoiceField(choices=("kWh", "Wh"), required=False, help_text="Default kWh"),
    "Total_in": serializers.JSONField(required=False, help_text="Tasmota SML import total, kWh"),
    "Total_out": serializers.JSONField(required=False, help_text="Tasmota SML export total, kWh"),
    "total_act": serializers.JSONField(required=False, help_text="Shelly EMData import total, Wh"),
    "total_act_ret": serializers.JSONField(required=False, help_text="Shelly EMData export total, Wh"),
    "WH": serializers.JSONField(required=False, help_text="SunSpec lifetime energy, Wh x 10^WH_SF"),
    "WH_SF": serializers.IntegerField(required=False),
    "sampledValue": serializers.ListField(required=False, help_text="OCPP Energy.Active.Import/Export.Register"),
    "energy_generated": serializers.JSONField(required=False, help_text="kWh generated in the interval"),
    "energy_consumed": serializers.JSONField(required=False, help_text="kWh consumed in the interval"),
    "interval_seconds": serializers.IntegerField(
        required=False, help_text="Length of the interval (alias interval_secs)"
    ),
    "quality": serializers.JSONField(required=False, help_text="The meter's quality mark(s); not good -> VEE rule"),
}

READING_FIELDS = {
    "id": serializers.UUIDField(),
    "user_id": serializers.UUIDField(),
    "meter_id": serializers.UUIDField(),
    "meter_serial": serializers.CharField(),
    "wallet_address": serializers.CharField(),
    "kwh_amount": serializers.CharField(help_text="Exact decimal string with nine places, e.g. 1.500000000"),
    "reading_timestamp": serializers.DateTimeField(),
    "submitted_at": serializers.DateTimeField(),
    "minted": serializers.BooleanField(),
    "mint_tx_signature": serializers.CharField(allow_null=True),
    "status": serializers.ChoiceField(choices=MeterReading.Status.choices),
    "source": serializers.ChoiceField(choices=MeterReading.Source.choices),
    "generated_kwh": serializers.CharField(**_kwh),
    "consumed_kwh": serializers.CharField(**_kwh),
    "interval_secs": serializers.IntegerField(allow_null=True),
    "import_register_kwh": serializers.CharField(**_kwh),
    "export_register_kwh": serializers.CharField(**_kwh),
    "mintable_kwh": serializers.CharField(help_text="What this reading mints under the mint basis"),
    "flags": serializers.ListField(child=serializers.CharField(), help_text="Quality and VEE flags"),
    "window_start": serializers.DateTimeField(allow_null=True),
}
# As lists show it.
# inline_serializer's class creation pops the fields out of the dict it is given: each use gets a copy.
READING = inline_serializer("Reading", dict(READING_FIELDS))
_DUPLICATE = {"duplicate": serializers.BooleanField(help_text="True for an idempotent replay (answered 200)")}
# As a submission answers it: the stored reading and whether this was a replay.
SUBMITTED = inline_serializer("ReadingSubmitted", READING_FIELDS | _DUPLICATE)
# The gateway's v1 answer: the same, plus its own names for some fields.
V1_SUBMITTED = inline_serializer(
    "MeterReadingV1Submitted",
    READING_FIELDS
    | _DUPLICATE
    | {
        "serial_number": serializers.CharField(help_text="= meter_serial"),
        "kwh": serializers.CharField(help_text="= kwh_amount"),
        "timestamp": serializers.DateTimeField(help_text="= reading_timestamp"),
        "tx_signature": serializers.CharField(allow_null=True, help_text="= mint_tx_signature"),
        "message": serializers.CharField(),
    },
)
READING_PAGINATION = inline_serializer(
    "ReadingPagination",
    {
        **pagination_fields(),
        "next_cursor": serializers.CharField(
            allow_null=True, help_text="Pass as cursor for the next page (null on the last page)"
        ),
    },
)
READING_PAGE = inline_serializer(
    "ReadingPage", {"data": READING.__class__(many=True), "pagination": READING_PAGINATION}
)
SUBMIT = inline_serializer(
    "ReadingSubmit",
    {
        "kwh_amount": serializers.CharField(
            required=False,
            help_text="Signed net kWh (number or numeric string, |kWh| <= max, <= 9 places); omit for a register read",
        ),
        "reading_timestamp": serializers.DateTimeField(help_text="RFC 3339 with an offset"),
        "meter_serial": serializers.CharField(required=False),
        "meter_id": serializers.UUIDField(required=False),
        "meter_signature": serializers.CharField(required=False),
        "wallet_address": serializers.CharField(
            required=False, help_text="Never credited: a different or malformed one is flagged on the reading"
        ),
        **_telemetry,
        **_registers,
    },
)
V1_ITEM_FIELDS = {
    "kwh": serializers.CharField(
        required=False, help_text="Signed net kWh (alias: kwh_amount); omit for a register read"
    ),
    "timestamp": serializers.DateTimeField(
        required=False, help_text="RFC 3339; default now (alias: reading_timestamp)"
    ),
    "meter_signature": serializers.CharField(required=False),
    "wallet_address": serializers.CharField(required=False, help_text="Never credited; flagged when not the meter's"),
    **_telemetry,
    **_registers,
}
V1_READING = inline_serializer("MeterReadingV1", dict(V1_ITEM_FIELDS))
BATCH = inline_serializer(
    "ReadingBatch",
    {
        "readings": inline_serializer(
            "ReadingBatchItem",
            {
                "meter_serial": serializers.CharField(required=False),
                "meter_id": serializers.UUIDField(required=False),
                **V1_ITEM_FIELDS,
            },
            many=True,
        )
    },
)
BATCH_RESULT = inline_serializer(
    "ReadingBatchResult",
    {
        "success_count": serializers.IntegerField(),
        "failed_count": serializers.IntegerField(),
        "results": inline_serializer(
            "ReadingBatchItemResult",
            {
                "index": serializers.IntegerField(),
                "status": serializers.ChoiceField(choices=("accepted", "duplicate", "rejected")),
                "id": serializers.UUIDField(required=False),
                "error": ErrorDetailSerializer(required=False, help_text="Only when rejected"),
            },
            many=True,
        ),
    },
)
STATS = inline_serializer(
    "ReadingStats",
    {name: serializers.CharField() for name in ("unminted_kwh", "minted_kwh", "total_kwh")}
    | {"total_readings": serializers.IntegerField()},
)

submit_schema = extend_schema(
    summary="Submit one reading (kWh and its timestamp)",
    description="201 with the stored reading, or 200 with duplicate: true for a replay of a stored one.",
    request=SUBMIT,
    responses={201: SUBMITTED, 200: SUBMITTED, **READING_ERRORS},
)
v1_schema = extend_schema(
    summary="Submit one reading to a meter by serial (gateway v1 shape)",
    description=(
        "Telemetry fields are kept in telemetry; unknown fields are ignored. The answer adds the gateway's "
        "field names (serial_number, kwh, timestamp, tx_signature)."
    ),
    request=V1_READING,
    responses={201: V1_SUBMITTED, 200: V1_SUBMITTED, **READING_ERRORS},
)
# Items are refused one by one in the results; the batch itself only fails as a whole request (batch_too_large,
# a device key naming another meter is an item's refusal).
batch_schema = extend_schema(
    summary="Submit a batch of readings (API keys only)",
    description="Always 200 once the batch itself is well-formed; each item has its own result.",
    request=BATCH,
    responses={200: BATCH_RESULT, **errors(*BODY_ERRORS, 403)},
)
stats_schema = extend_schema(
    summary="Totals over your readings (kWh as exact strings)", responses={200: STATS, **errors(401)}
)
