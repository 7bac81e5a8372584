"""Operator API for API keys: issue (the plaintext is in the 201 response and nowhere else), list, revoke.

Staff only, authenticated like the minting operator endpoints (a user token or an admin session; a device
or fleet key never reaches these views). The key itself is only ever issued by
``meters.services.api_keys.api_key_create``, the function the admin and ``manage.py api_key`` use too.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from gridtoken.events import rfc3339
from meters.apis.base import JsonInputSerializer
from meters.apis.operator import OPERATOR_BODY_ERRORS, OPERATOR_ERRORS, OperatorApi, operator_errors
from meters.models import ApiKey
from meters.parsers import DecimalJSONParser
from meters.services.api_keys import api_key_get, api_key_issue, api_key_list, api_key_revoke

TAG = "operator: API keys"
ISSUE_ERRORS = operator_errors(
    *OPERATOR_BODY_ERRORS,
    described={
        400: "validation_error (field names it), unknown_owner, owner_inactive, unknown_meter; malformed_json.",
    },
)
KEY_ERRORS = operator_errors(
    *OPERATOR_ERRORS,
    404,
    409,
    described={404: "api_key_not_found: no key has that id or prefix.", 409: "api_key_ambiguous: use the id."},
)


def key_payload(key: ApiKey) -> dict:
    return {
        "id": str(key.pk),
        "prefix": key.prefix,
        "name": key.name,
        "scope": key.scope,
        "owner": key.owner.username,
        "owner_id": str(key.owner_id),
        "meter_serial": key.meter.serial if key.meter_id else None,
        "created_at": rfc3339(key.created_at),
        "last_used_at": rfc3339(key.last_used_at) if key.last_used_at else None,
        "revoked_at": rfc3339(key.revoked_at) if key.revoked_at else None,
        "active": key.is_active,
    }


@extend_schema_serializer(component_name="OperatorApiKey")
class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    prefix = serializers.CharField(help_text="The key's first 12 characters, to recognise it")
    name = serializers.CharField()
    scope = serializers.ChoiceField(choices=ApiKey.Scope.values)
    owner = serializers.CharField(help_text="The owner's username")
    owner_id = serializers.UUIDField()
    meter_serial = serializers.CharField(allow_null=True, help_text="Device keys: their meter; fleet keys: null")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    active = serializers.BooleanField()


@extend_schema_serializer(component_name="OperatorApiKeyIssued")
class ApiKeyIssuedSerializer(ApiKeyOutputSerializer):
    api_key = serializers.CharField(help_text="The key itself: shown in this response only, never stored")


@extend_schema_serializer(component_name="OperatorApiKeyList")
class ApiKeyListOutputSerializer(serializers.Serializer):
    api_keys = ApiKeyOutputSerializer(many=True)


class KeysOperatorApi(OperatorApi):
    parser_classes = [DecimalJSONParser]  # JSON only, like every other endpoint


class ApiKeyCreateApi(KeysOperatorApi):
    @extend_schema_serializer(component_name="OperatorApiKeyCreateInput")
    class InputSerializer(JsonInputSerializer):
        owner = serializers.CharField(max_length=150, help_text="Username of the key's owner")
        scope = serializers.ChoiceField(choices=ApiKey.Scope.values, default=ApiKey.Scope.FLEET)
        meter = serializers.CharField(
            max_length=64, required=False, allow_null=True, help_text="Device keys: the serial of the owner's meter"
        )
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    @extend_schema(
        tags=[TAG],
        operation_id="admin_api_keys_create",
        request=InputSerializer,
        responses={201: ApiKeyIssuedSerializer, **ISSUE_ERRORS},
        summary="Issue a fleet (or device) API key; the key is in this response only",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, plaintext = api_key_issue(**data.validated_data)
        return Response({**key_payload(key), "api_key": plaintext}, status=status.HTTP_201_CREATED)


class ApiKeyListApi(KeysOperatorApi):
    class FilterSerializer(serializers.Serializer):
        owner = serializers.CharField(max_length=150, required=False)
        scope = serializers.ChoiceField(choices=ApiKey.Scope.values, required=False)
        active = serializers.BooleanField(required=False, allow_null=True, default=None)
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)

    @extend_schema(
        tags=[TAG],
        operation_id="admin_api_keys_list",
        parameters=[FilterSerializer],
        request=None,
        responses={200: ApiKeyListOutputSerializer, **operator_errors(400, *OPERATOR_ERRORS)},
        summary="List API keys, newest first (never the keys themselves)",
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params.dict())  # "?limit=" is a bad limit, not none
        filters.is_valid(raise_exception=True)
        keys = api_key_list(**filters.validated_data)
        return Response({"api_keys": [key_payload(key) for key in keys]})


class ApiKeysApi(ApiKeyListApi, ApiKeyCreateApi):
    """/api/admin/api-keys: GET lists (ApiKeyListApi), POST issues (ApiKeyCreateApi)."""


KEY_PARAMETER = OpenApiParameter(
    "key", str, OpenApiParameter.PATH, description="The key's id, or its prefix (gtk_ and the next 8 characters)"
)


def revoked(key: str) -> Response:
    """Revoking is idempotent: a revoked key keeps its first revocation time."""
    return Response(key_payload(api_key_revoke(key=api_key_get(ref=key))))


class ApiKeyRevokeApi(KeysOperatorApi):
    @extend_schema(
        tags=[TAG],
        operation_id="admin_api_keys_revoke",
        parameters=[KEY_PARAMETER],
        request=None,
        responses={200: ApiKeyOutputSerializer, **KEY_ERRORS},
        summary="Revoke an API key",
    )
    def post(self, request, key: str):
        return revoked(key)


class ApiKeyDeleteApi(KeysOperatorApi):
    """DELETE /api/admin/api-keys/{key}: the same revocation; the row stays as the record of the key."""

    @extend_schema(
        tags=[TAG],
        operation_id="admin_api_keys_delete",
        parameters=[KEY_PARAMETER],
        request=None,
        responses={200: ApiKeyOutputSerializer, **KEY_ERRORS},
        summary="Revoke an API key (same as POST .../revoke)",
    )
    def delete(self, request, key: str):
        return revoked(key)
