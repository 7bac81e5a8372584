"""Rows as the API returns them (hand-written: Wh are integers, kWh exact strings, times RFC 3339 Z) and the
OpenAPI shapes documenting them."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from certificates.services.issuance import device_attributes
from gridtoken.events import rfc3339


def _time(value):
    return None if value is None else rfc3339(value)


def _decimal(value):
    return None if value is None else format(value, "f")


def device_payload(device) -> dict:
    """The device now: the attributes an issuance records (``device_attributes``) plus its registry state."""
    attributes = device_attributes(device)
    return {
        "id": attributes.pop("device_id"),
        **attributes,
        "status": device.status,
        "issued_through": _time(device.issued_through),
        "carry_wh": _decimal(device.carry_wh),
        "next_bundle_id": device.next_bundle_id,
    }


def bundle_payload(bundle) -> dict:
    issuance = bundle.issuance
    return {
        "id": str(bundle.id),
        "issuance_id": str(bundle.issuance_id),
        "parent_id": None if bundle.parent_id is None else str(bundle.parent_id),
        "device_id": str(issuance.device_id),
        "bundle_id_range_start": bundle.range_start,
        "bundle_id_range_end": bundle.range_end,
        "quantity_wh": bundle.quantity_wh,
        "status": bundle.status,
        "holder_wallet": bundle.holder_wallet,
        "production_start": rfc3339(issuance.interval_start),
        "production_end": rfc3339(issuance.interval_end),
        "expires_at": _time(issuance.expires_at),
        "beneficiary": bundle.beneficiary,
        "consumption_start": _time(bundle.consumption_start),
        "consumption_end": _time(bundle.consumption_end),
        "reason": bundle.reason,
    }


def outcome_payload(outcome) -> dict:
    """A transfer's or claim's answer: the moved bundle's fields, and the holder's ``remaining`` bundle (null
    when the whole bundle moved)."""
    remaining = outcome.remaining
    return {**bundle_payload(outcome.moved), "remaining": None if remaining is None else bundle_payload(remaining)}


def issuance_payload(issuance) -> dict:
    return {
        "id": str(issuance.id),
        "device_id": str(issuance.device_id),
        "status": issuance.status,
        "interval_start": rfc3339(issuance.interval_start),
        "interval_end": rfc3339(issuance.interval_end),
        "energy_kwh": format(issuance.energy_kwh, "f"),
        "quantity_wh": issuance.quantity_wh,
        "bundle_id_range_start": issuance.bundle_id_range_start,
        "bundle_id_range_end": issuance.bundle_id_range_end,
        "carry_in_wh": _decimal(issuance.carry_in_wh),
        "carry_out_wh": _decimal(issuance.carry_out_wh),
        "reading_count": issuance.reading_count,
        "readings_hash": issuance.readings_hash,
        "previous_hash": issuance.previous_hash,
        "hash": issuance.hash,
        "hold_reason": issuance.hold_reason,
        "wallet_address": issuance.wallet_address,
        "issued_at": _time(issuance.issued_at),
        "expires_at": _time(issuance.expires_at),
    }


_text = serializers.CharField
_nullable_text = lambda **kw: serializers.CharField(allow_null=True, **kw)  # noqa: E731
_int = serializers.IntegerField
_nullable_int = lambda **kw: serializers.IntegerField(allow_null=True, **kw)  # noqa: E731


def _bundle_fields() -> dict:
    return {
        "id": serializers.UUIDField(), "issuance_id": serializers.UUIDField(),
        "parent_id": serializers.UUIDField(allow_null=True), "device_id": serializers.UUIDField(),
        "bundle_id_range_start": _int(), "bundle_id_range_end": _int(), "quantity_wh": _int(),
        "status": _text(help_text="active | split | claimed | withdrawn | expired"), "holder_wallet": _text(),
        "production_start": _text(), "production_end": _text(), "expires_at": _nullable_text(),
        "beneficiary": _text(), "consumption_start": _nullable_text(), "consumption_end": _nullable_text(),
        "reason": _text(),
    }  # fmt: skip


DEVICE = inline_serializer(
    "ProductionDevice",
    {
        "id": serializers.UUIDField(), "meter_id": serializers.UUIDField(), "meter_serial": _text(), "name": _text(),
        "technology": _text(), "capacity_kw": _nullable_text(help_text="kW, exact"),
        "latitude": _nullable_text(), "longitude": _nullable_text(), "location": _text(),
        "commissioning_date": serializers.DateField(), "grid_zone": _text(), "country": _text(), "issuer": _text(),
        "is_storage": serializers.BooleanField(), "status": _text(help_text="pending | approved | suspended"),
        "issued_through": _nullable_text(help_text="every interval before this time is decided"),
        "carry_wh": _text(help_text="exact energy below one Wh not yet certified"), "next_bundle_id": _int(),
    },
)  # fmt: skip
BUNDLE = inline_serializer("CertificateBundle", _bundle_fields())
MOVED = inline_serializer(
    "CertificateBundleMoved",
    {
        **_bundle_fields(),
        "remaining": BUNDLE.__class__(
            allow_null=True,
            help_text="what stays with the holder (the rest of a split range); null when all of it moved",
        ),
    },
)
ISSUANCE = inline_serializer(
    "CertificateIssuance",
    {
        "id": serializers.UUIDField(help_text="the issuance id, uuid5 of device and interval"),
        "device_id": serializers.UUIDField(), "status": _text(help_text="issued | held | rejected"),
        "interval_start": _text(), "interval_end": _text(), "energy_kwh": _text(), "quantity_wh": _nullable_int(),
        "bundle_id_range_start": _nullable_int(), "bundle_id_range_end": _nullable_int(),
        "carry_in_wh": _nullable_text(), "carry_out_wh": _nullable_text(), "reading_count": _int(),
        "readings_hash": _text(), "previous_hash": _text(), "hash": _text(), "hold_reason": _text(),
        "wallet_address": _text(), "issued_at": _nullable_text(), "expires_at": _nullable_text(),
    },
)  # fmt: skip
