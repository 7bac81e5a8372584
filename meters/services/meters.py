"""Registering meters: by their owner (with a device key shown once) or by an aggregator's fleet key."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from gridtoken.exceptions import Conflict, ValidationFailed
from meters.models import ApiKey, Meter, User
from meters.services.api_keys import api_key_create


def _wallet_for(owner: User, wallet_address: str | None) -> str:
    wallet = wallet_address or owner.wallet_address
    if not wallet:
        raise ValidationFailed(
            "wallet_address_required",
            "Send a wallet_address, or set one on your account first.",
            field="wallet_address",
        )
    return wallet


def _taken(serial: str) -> Conflict:
    return Conflict("meter_already_registered", f"Meter {serial} is already registered.", field="serial")


def meter_create(
    *,
    owner: User,
    serial: str,
    wallet_address: str | None = None,
    public_key: str = "",
    meter_type: str = "",
    location: str = "",
    zone_id: int | None = None,
) -> tuple[Meter, str]:
    """Register a meter and issue its device key; returns the meter and the key's plaintext (shown once)."""
    wallet = _wallet_for(owner, wallet_address)
    try:
        with transaction.atomic():
            meter = Meter.objects.create(
                serial=serial,
                owner=owner,
                wallet_address=wallet,
                public_key=public_key or "",
                meter_type=meter_type or "",
                location=location or "",
                zone_id=zone_id,
            )
            _, plaintext = api_key_create(owner=owner, scope=ApiKey.Scope.DEVICE, meter=meter, name=f"{serial} device")
    except IntegrityError:
        raise _taken(serial) from None
    return meter, plaintext


def meter_register_for_fleet(
    *,
    owner: User,
    serial: str,
    wallet_address: str,
    meter_type: str | None = None,
    location: str | None = None,
    zone_id: int | None = None,
) -> tuple[Meter, bool]:
    """Register ``serial`` under the fleet owner, or update and return it when the owner already has it.

    Returns (meter, created). A serial registered to another account is a 409. Re-registering may change
    the meter's wallet: the fleet key is the owner's own credential, and aggregators re-announce their
    meters (with the wallet to credit) whenever they start.
    """
    fields = {"wallet_address": wallet_address}
    fields.update({k: v for k, v in (("meter_type", meter_type), ("location", location)) if v is not None})
    if zone_id is not None:
        fields["zone_id"] = zone_id
    try:
        with transaction.atomic():
            meter, created = Meter.objects.select_for_update().get_or_create(
                serial=serial, defaults={"owner": owner, **fields}
            )
            if not created:
                if meter.owner_id != owner.pk:
                    raise _taken(serial)
                changed = [name for name, value in fields.items() if getattr(meter, name) != value]
                for name in changed:
                    setattr(meter, name, fields[name])
                if changed:
                    meter.save(update_fields=changed)
    except IntegrityError:
        raise _taken(serial) from None
    return meter, created


def meter_set_status(*, meter: Meter, status: str) -> Meter:
    if status not in Meter.Status.values:
        raise ValidationFailed("validation_error", "Status must be active or suspended.", field="status")
    Meter.objects.filter(pk=meter.pk).update(status=status)
    meter.status = status
    return meter
