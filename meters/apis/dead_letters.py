"""Operator API for dead letters: list (keyset pages, by door and status), detail, replay, discard.

Staff only, authenticated like the other operator endpoints. Replay and discard call
``meters.services.dead_letters``, the functions the admin's actions call too.
"""

from __future__ import annotations

import base64

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response

from gridtoken.events import rfc3339
from meters.apis.operator import OPERATOR_ERRORS, OperatorApi, operator_errors
from meters.models import DeadLetter
from meters.parsers import DecimalJSONParser
from meters.selectors import dead_letter_list
from meters.services.dead_letters import dead_letter_discard, dead_letter_get, dead_letter_replay

TAG = "operator: dead letters"
ID = OpenApiParameter("dead_letter_id", int, OpenApiParameter.PATH, description="The dead letter's id")
ONE_ERRORS = operator_errors(*OPERATOR_ERRORS, 404, described={404: "dead_letter_not_found."})


def dead_letter_payload(letter: DeadLetter, *, detail: bool = False) -> dict:
    body = {
        "id": letter.pk,
        "door": letter.door,
        "topic": letter.topic,
        "meter_serial": letter.meter_serial or None,
        "status": letter.status,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "request_id": letter.request_id or None,
        "first_seen": rfc3339(letter.first_seen),
        "last_seen": rfc3339(letter.last_seen),
        "deliveries": letter.deliveries,
        "replay_result": letter.replay_result,
        "replayed_at": rfc3339(letter.replayed_at) if letter.replayed_at else None,
    }
    if detail:
        payload = bytes(letter.payload)
        try:
            body["payload"], body["payload_encoding"] = payload.decode(), "utf-8"
        except UnicodeDecodeError:
            body["payload"], body["payload_encoding"] = base64.b64encode(payload).decode(), "base64"
        body["error_traceback"] = letter.error_traceback
        body["fingerprint"] = letter.fingerprint
    return body


@extend_schema_serializer(component_name="OperatorDeadLetter")
class DeadLetterOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    door = serializers.ChoiceField(choices=DeadLetter.Door.choices)
    topic = serializers.CharField(help_text="The MQTT topic, or the request path")
    meter_serial = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=DeadLetter.Status.choices)
    error_type = serializers.CharField()
    error_message = serializers.CharField()
    request_id = serializers.CharField(allow_null=True, help_text="In the logs' lines about it")
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    deliveries = serializers.IntegerField(help_text="Times it failed, or (quarantined) times it was delivered")
    replay_result = serializers.JSONField(allow_null=True, help_text="The item's batch result at the last replay")
    replayed_at = serializers.DateTimeField(allow_null=True)


@extend_schema_serializer(component_name="OperatorDeadLetterDetail")
class DeadLetterDetailSerializer(DeadLetterOutputSerializer):
    payload = serializers.CharField(help_text="The message as received")
    payload_encoding = serializers.ChoiceField(choices=("utf-8", "base64"))
    error_traceback = serializers.CharField()
    fingerprint = serializers.CharField(help_text="sha256 of door, topic and payload")


@extend_schema_serializer(component_name="OperatorDeadLetterPage")
class DeadLetterPageSerializer(serializers.Serializer):
    data = DeadLetterOutputSerializer(many=True)
    next_before = serializers.IntegerField(allow_null=True, help_text="Pass as ?before= for the next page")


class DeadLettersOperatorApi(OperatorApi):
    parser_classes = [DecimalJSONParser]


class DeadLetterListApi(DeadLettersOperatorApi):
    class FilterSerializer(serializers.Serializer):
        door = serializers.ChoiceField(choices=DeadLetter.Door.choices, required=False, default=None)
        status = serializers.ChoiceField(choices=DeadLetter.Status.choices, required=False, default=None)
        before = serializers.IntegerField(min_value=1, required=False, default=None, help_text="Ids below this")
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)

    @extend_schema(
        tags=[TAG],
        operation_id="admin_dead_letters_list",
        parameters=[FilterSerializer],
        responses={200: DeadLetterPageSerializer, **operator_errors(400, *OPERATOR_ERRORS)},
        summary="Dead letters, newest first",
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        page = dead_letter_list(**filters.validated_data)
        return Response(
            {"data": [dead_letter_payload(letter) for letter in page["items"]], "next_before": page["next_before"]}
        )


class DeadLetterDetailApi(DeadLettersOperatorApi):
    @extend_schema(
        tags=[TAG],
        operation_id="admin_dead_letters_detail",
        parameters=[ID],
        responses={200: DeadLetterDetailSerializer, **ONE_ERRORS},
        summary="One dead letter with its payload and traceback",
    )
    def get(self, request, dead_letter_id: int):
        return Response(dead_letter_payload(dead_letter_get(dead_letter_id=dead_letter_id), detail=True))


class DeadLetterReplayApi(DeadLettersOperatorApi):
    @extend_schema(
        tags=[TAG],
        operation_id="admin_dead_letters_replay",
        parameters=[ID],
        request=None,
        responses={
            200: DeadLetterOutputSerializer,
            **operator_errors(
                *OPERATOR_ERRORS,
                404,
                409,
                503,
                described={
                    404: "dead_letter_not_found.",
                    409: "dead_letter_discarded; replay_caller_revoked (its API key was revoked).",
                },
            ),
        },
        summary="Replay through its door's ingestion (idempotent: a stored reading answers duplicate)",
    )
    def post(self, request, dead_letter_id: int):
        return Response(dead_letter_payload(dead_letter_replay(dead_letter_id=dead_letter_id, actor=self.actor())))


class DeadLetterDiscardApi(DeadLettersOperatorApi):
    @extend_schema(
        tags=[TAG],
        operation_id="admin_dead_letters_discard",
        parameters=[ID],
        request=None,
        responses={
            200: DeadLetterOutputSerializer,
            **operator_errors(
                *OPERATOR_ERRORS, 404, 409, described={404: "dead_letter_not_found.", 409: "dead_letter_replayed."}
            ),
        },
        summary="Mark as not to be stored",
    )
    def post(self, request, dead_letter_id: int):
        return Response(dead_letter_payload(dead_letter_discard(dead_letter_id=dead_letter_id, actor=self.actor())))
