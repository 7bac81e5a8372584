"""What every meters API shares: exact JSON parsing, credential checks, reading output."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.views import APIView

from gridtoken.events import rfc3339
from gridtoken.exceptions import ValidationFailed
from meters.numbers import read_number
from meters.parsers import JsonBodyOnly
from meters.ratelimit import WriteRateLimit
from meters.services.api_keys import ApiKeyPrincipal


class ApiView(JsonBodyOnly, APIView):
    """Every endpoint's base: JSON bodies only, read exactly (``meters.parsers``)."""


class JsonInputSerializer(serializers.Serializer):
    """A JSON body's fields. A string field takes a JSON string only: DRF's CharField also reads a number as its
    text (``{"location": 0}`` stored "0"), a type the schema does not allow and a client did not mean. Fields with
    a parser of their own (wallet, public key) answer for their own values, with their own codes."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            for name, field in self.fields.items():
                value = data.get(name)
                plain = type(field).to_internal_value is serializers.CharField.to_internal_value  # no parser of its own
                if plain and value is not None and not isinstance(value, str):
                    raise serializers.ValidationError({name: ["Not a valid string."]})
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON body's ``true`` or ``false`` and nothing else. DRF's field also reads 0/1 and strings such as "off"
    as booleans (form data needs that); in a JSON body ``{"enabled": 0}`` switched automatic minting off."""

    def to_internal_value(self, data) -> bool:
        if data is True or data is False:
            return data
        self.fail("invalid", input=data)


class BoundedDecimalField(serializers.DecimalField):
    """DRF's DecimalField (a JSON number or a numeric string, its digits and range checked by DRF), whose input
    goes through the bounded number reader first, as every numeric field does (``meters.numbers``)."""

    def to_internal_value(self, data):
        try:
            amount = read_number(data, self.field_name, strings=True)
        except ValidationFailed as error:
            raise serializers.ValidationError(error.message, code="invalid") from None
        return super().to_internal_value(amount)


class StrictUUIDField(serializers.UUIDField):
    """A UUID written as a string. DRF's field turns any JSON integer into one, ``false`` into the nil UUID."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class WriteApiView(ApiView):
    """A write: counted against the per-key and per-user rate limits."""

    throttle_classes = [WriteRateLimit]


class IsUserCredential(BasePermission):
    message = "This operation needs a user's credentials (token or session), not an API key."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated) and not isinstance(request.auth, ApiKeyPrincipal)


class IsApiKey(BasePermission):
    message = "This operation needs a device or fleet API key."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKeyPrincipal)


class IsFleetKey(BasePermission):
    message = "This operation needs a fleet API key."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKeyPrincipal) and request.auth.scope == "fleet"


def reading_payload(reading) -> dict:
    """A reading as every endpoint returns it (a StoredReading or a MeterReading with its meter loaded).

    Written by hand rather than with a DRF serializer: it is on the ingestion hot path, and it must keep
    kWh exact (a string with the column's nine decimal places), which DRF's JSON encoder would not.
    """
    return {
        "id": str(reading.id),
        "user_id": str(reading.user_id),
        "meter_id": str(reading.meter_id),
        "meter_serial": reading.meter.serial,
        "wallet_address": reading.wallet_address,
        "kwh_amount": format(reading.kwh_amount, "f"),
        "reading_timestamp": rfc3339(reading.reading_timestamp),
        "submitted_at": rfc3339(reading.submitted_at),
        "minted": reading.minted,
        "mint_tx_signature": reading.mint_tx_signature,
        "status": reading.status,
        "source": reading.source,
        "generated_kwh": _kwh(reading.generated_kwh),
        "consumed_kwh": _kwh(reading.consumed_kwh),
        "interval_secs": reading.interval_secs,
        "import_register_kwh": _kwh(reading.import_register_kwh),
        "export_register_kwh": _kwh(reading.export_register_kwh),
        "mintable_kwh": format(reading.mintable_kwh, "f"),
        "flags": reading.flags,
        "window_start": None if reading.window_start is None else rfc3339(reading.window_start),
    }


def _kwh(value) -> str | None:
    return None if value is None else format(value, "f")
