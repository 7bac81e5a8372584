"""The aggregator bridge's REST doors: ``POST /v1/private-network/ingest`` and ``.../ingest/batch``.

A GridTokenX fleet points its devices here unchanged: ``protocols.bridge`` turns each payload into a v1 reading
body (plus the messages its signature covers), which ``meters.services`` stores like any other reading. Answers
keep the bridge's shapes; refusals carry GridToken's error body with the bridge's statuses (403 for a signature,
401 for credentials).
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from gridtoken.exceptions import ApplicationError, ErrorDetailSerializer, Forbidden
from meters.apis.base import IsApiKey, WriteApiView
from meters.apis.docs import BODY_ERRORS, errors
from meters.parsers import dumps_exact
from meters.selectors import Caller
from meters.services.batch import (
    ACCEPTED,
    DUPLICATE,
    REJECTED,
    batch_check,
    reading_submit,
    readings_submit_batch,
)
from meters.services.dead_letters import DeadLetterHook, Door, Origin, caller_record, dead_letter_refusal
from meters.validation import parse_reading
from protocols import bridge

SIGNATURE_CODES = frozenset({"invalid_signature", "signature_required", "signature_incomplete"})
# GridToken's body field -> the bridge payload's.
_FIELDS = {"meter_signature": "signature", "meter_serial": "device_id", "meter_id": "device_id"}


def accepted(reading_id, *, duplicate: bool) -> dict:
    """The bridge's 202 body; ``duplicate`` (GridToken's addition) marks an idempotent replay."""
    return {
        "status": "accepted",
        "reading_id": str(reading_id),
        "device_type": bridge.DEVICE_TYPE,
        "stream": bridge.STREAM,
        "duplicate": duplicate,
    }


def _bridge_field(field: str | None, prefix: str) -> str | None:
    if field is None:
        return None
    field = _FIELDS.get(field, field)
    return field if field in ("device_id", "protocol") or field.startswith(prefix) else f"{prefix}{field}"


def bridge_error(error: ApplicationError, *, prefix: str = "payload.") -> ApplicationError:
    """``error`` as the bridge answers it: signature refusals are 403, fields are named as the payload names them."""
    field = _bridge_field(error.field, prefix)
    if error.code in SIGNATURE_CODES:
        return Forbidden(error.code, error.message, field=field, details=error.details)
    return ApplicationError(error.code, error.message, field=field, details=error.details, status=error.status)


_ENERGY = "JSON number; Wh for OBIS energies, kWh otherwise"
PAYLOAD = inline_serializer(
    "BridgePayload",
    {
        bridge.IMPORT_WH: serializers.JSONField(required=False, help_text=f"Interval import = consumed ({_ENERGY})"),
        bridge.EXPORT_WH: serializers.JSONField(required=False, help_text=f"Interval export = generated ({_ENERGY})"),
        "1.1.x.8.1-4.255": serializers.JSONField(required=False, help_text="Tariff registers, summed when no total"),
        **{
            code: serializers.JSONField(required=False, help_text=f"Telemetry {name}")
            for code, name in bridge.OBIS_TELEMETRY.items()
        },
        "kwh": serializers.JSONField(required=False, help_text="Signed net kWh; default generated - consumed"),
        "energy_generated": serializers.JSONField(required=False, help_text="kWh, when the OBIS export is absent"),
        "energy_consumed": serializers.JSONField(required=False, help_text="kWh, when the OBIS import is absent"),
        "timestamp": serializers.DateTimeField(required=False, help_text="RFC 3339; default now"),
        "signature": serializers.CharField(
            required=False,
            help_text="base58 Ed25519 over {device_id}:{v}:{timestamp_ms} (or ...:{timestamp_s}, or the payload's "
            "sorted JSON without signature); required when the meter has a public key",
        ),
    },
)
PROTOCOL = serializers.CharField(
    allow_blank=True,
    help_text=f"{', '.join(bridge.PROTOCOLS)} in any case; {bridge.AUTO} or empty is {bridge.DLMS} (as the bridge)",
)
INGEST = inline_serializer(
    "BridgeIngest",
    {
        "protocol": PROTOCOL,
        "device_id": serializers.CharField(help_text="The meter's serial"),
        "payload": PAYLOAD,
    },
)
BATCH = inline_serializer(
    "BridgeIngestBatch",
    {
        "protocol": PROTOCOL,
        "readings": serializers.ListField(
            child=serializers.DictField(),
            help_text="Payloads as in BridgePayload, each naming its meter by device_id (or meter_serial, meter_id)",
        ),
    },
)
ACCEPTED_BODY = inline_serializer(
    "BridgeAccepted",
    {
        "status": serializers.ChoiceField(choices=("accepted",)),
        "reading_id": serializers.UUIDField(),
        "device_type": serializers.ChoiceField(choices=(bridge.DEVICE_TYPE,)),
        "stream": serializers.CharField(),
        "duplicate": serializers.BooleanField(help_text="True for a replay: reading_id is the stored reading's"),
    },
)
BATCH_ITEM = inline_serializer(
    "BridgeBatchItemResult",
    {
        "index": serializers.IntegerField(),
        "device_id": serializers.CharField(allow_null=True),
        "status": serializers.ChoiceField(choices=("accepted", "rejected")),
        "reading_id": serializers.UUIDField(required=False),
        "device_type": serializers.CharField(required=False),
        "stream": serializers.CharField(required=False),
        "duplicate": serializers.BooleanField(required=False),
        "error": ErrorDetailSerializer(required=False, help_text="Only when rejected"),
    },
    many=True,
)
_DESCRIBED = {
    403: "invalid_signature / signature_required, or another meter or account, or not an API key.",
    422: "encrypted_frame_unsupported: dlms-enc frames cannot be read here.",
}
# A batch refuses its items one by one in the results; only the envelope itself is refused as a whole.
INGEST_REFUSALS = errors(*BODY_ERRORS, 403, 404, 409, 422, described=_DESCRIBED)
BATCH_REFUSALS = errors(*BODY_ERRORS, 403, 422, described=_DESCRIBED)


class BridgeIngestApi(WriteApiView):
    """POST /v1/private-network/ingest: one bridge envelope; 202 for a stored reading or a replay of one."""

    permission_classes = [IsApiKey]

    @extend_schema(
        summary="Relay one reading in the aggregator bridge's envelope",
        description="202 for a stored reading or a replay of one.",
        request=INGEST,
        responses={202: ACCEPTED_BODY, **INGEST_REFUSALS},
    )
    def post(self, request):
        now = timezone.now()
        envelope = request.data
        protocol = bridge.envelope_protocol(envelope)
        if protocol == bridge.DLMS_ENC:
            raise bridge.refuse_encrypted(envelope.get("payload"))
        try:
            translated = bridge.reading_from_payload(
                bridge.payload_of(envelope), device_id=bridge.device_id_of(envelope)
            )
            item = parse_reading(
                translated.body, kwh_key="kwh", timestamp_key="timestamp", timestamp_required=False, now=now
            )
            item.signed_messages = translated.signed_messages
            result = reading_submit(caller=Caller.from_request(request), item=item, now=now)
        except ApplicationError as error:
            raise bridge_error(error) from None
        return Response(accepted(result.reading.id, duplicate=result.duplicate), status=status.HTTP_202_ACCEPTED)


class BridgeIngestBatchApi(WriteApiView):
    """POST /v1/private-network/ingest/batch: 200 with one result per item, in order; none is dropped."""

    permission_classes = [IsApiKey]

    @extend_schema(
        summary="Relay a batch of readings in the bridge's envelope",
        description="200 with one result per item, in order; none is dropped.",
        request=BATCH,
        responses={200: BATCH_ITEM, **BATCH_REFUSALS},
    )
    def post(self, request):
        now = timezone.now()
        envelope = request.data
        protocol = bridge.envelope_protocol(envelope)
        readings = envelope.get("readings")
        batch_check(readings)
        if protocol == bridge.DLMS_ENC:
            raise bridge.refuse_encrypted(readings[0] if readings else None, field="readings[0]")
        caller = Caller.from_request(request)
        dead_letter = bridge_hook(caller=caller, items=readings, path=request.path)
        results: list[dict | None] = [None] * len(readings)
        positions, bodies, messages, devices = [], [], [], {}
        for index, raw in enumerate(readings):
            try:
                translated = bridge.reading_from_item(raw)
            except ApplicationError as error:
                results[index] = _rejected(index, None, error)
                continue
            except Exception as error:  # a bug met by this item only
                results[index] = _rejected(index, None, dead_letter(index, error))
                continue
            positions.append(index)
            bodies.append(translated.body)
            messages.append(translated.signed_messages)
            devices[index] = translated.device_id
        if bodies:
            outcome = readings_submit_batch(
                caller=caller,
                readings=bodies,
                now=now,
                signed_messages=messages,
                dead_letter=lambda position, error: dead_letter(positions[position], error),
            )
            for index, result in zip(positions, outcome["results"], strict=True):
                results[index] = _item_result(index, devices[index], result)
        return Response(results)


def bridge_hook(*, caller: Caller, items: list, path: str) -> DeadLetterHook:
    """Dead letters of a bridge batch: the failing item as the bridge sent it, by its caller."""

    def hook(index: int, error: BaseException) -> ApplicationError:
        item = items[index]
        serial = (item.get("device_id") or item.get("meter_serial")) if isinstance(item, dict) else None
        origin = Origin(
            Door.BRIDGE,
            path,
            dumps_exact(item).encode(),
            serial if isinstance(serial, str) else "",
            caller_record(caller),
        )
        return dead_letter_refusal(origin=origin, error=error)

    return hook


def _rejected(index: int, device_id: str | None, error: ApplicationError) -> dict:
    return {
        "index": index,
        "device_id": device_id,
        "status": REJECTED,
        "error": bridge_error(error, prefix="").as_dict(),
    }


def _item_result(index: int, device_id: str | None, result: dict) -> dict:
    if result["status"] in (ACCEPTED, DUPLICATE):
        return {
            "index": index,
            "device_id": device_id,
            **accepted(result["id"], duplicate=result["status"] == DUPLICATE),
        }
    error = dict(result["error"])
    if "field" in error:
        error["field"] = _bridge_field(error["field"], "")
    return {"index": index, "device_id": device_id, "status": REJECTED, "error": error}
