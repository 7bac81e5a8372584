"""Reads: a holder's bundles, held intervals, public verification and the FEA registry export."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

from certificates.apis.payloads import bundle_payload, issuance_payload
from certificates.models import CertificateBundle, ChainOperation, Issuance, ProductionDevice
from gridtoken.events import rfc3339

FEA_STATUS = {"active": "Active", "claimed": "Claimed", "withdrawn": "Withdrawn", "expired": "Expired"}
# FEA's DeviceTechnologyType for each of ours (its EnergySourceType holds ours as they are).
FEA_TECHNOLOGY = {"solar_pv": "solar_pv", "wind": "wind_turbine", "hydro": "hydro", "biomass": "other",
                  "geothermal": "other", "other": "other"}  # fmt: skip
# Technologies that burn nothing: their direct (operational) emissions factor is 0 kgCO2e/MWh, and this is its
# source. Biomass and "other" are left empty rather than guessed.
_DIRECT = "direct operational emissions of a non-combustion technology (GHG Protocol scope 1): 0 kgCO2e/MWh"
FEA_DIRECT_EMISSIONS = {"solar_pv": _DIRECT, "wind": _DIRECT, "hydro": _DIRECT, "geothermal": _DIRECT}
LIVE = ("active", "claimed", "withdrawn", "expired")
# What an app above adds to a bundle's public verification (matching: the consumer's hour a claim was matched to),
# registered at start-up so that this app imports none of them.
_verify_details: list[Callable[[CertificateBundle], dict]] = []


def register_verify_detail(detail: Callable[[CertificateBundle], dict]) -> None:
    if detail not in _verify_details:
        _verify_details.append(detail)


def device_list(*, owner) -> list[ProductionDevice]:
    return list(ProductionDevice.objects.filter(meter__owner=owner).select_related("meter").order_by("created_at"))


def bundle_list(*, holder, status: str | None = None) -> list[CertificateBundle]:
    rows = CertificateBundle.objects.filter(holder=holder).select_related("issuance")
    if status:
        rows = rows.filter(status=status)
    return list(rows.order_by("issuance__interval_start", "range_start")[:1000])


def issuance_held_list(*, limit: int = 100) -> list[Issuance]:
    return list(Issuance.objects.filter(status="held").order_by("interval_start")[:limit])


def _transactions(ops) -> list[dict]:
    return [
        {"kind": op.kind, "status": op.status, "amount_wh": op.amount_wh, "signature": op.signature or None,
         "burn_from": op.burn_from or None, "mint_to": op.mint_to or None}
        for op in ops
    ]  # fmt: skip


def _lineage(bundle: CertificateBundle) -> list[str]:
    chain, parent_id = [], bundle.parent_id
    while parent_id is not None:
        chain.append(str(parent_id))
        parent_id = CertificateBundle.objects.filter(id=parent_id).values_list("parent_id", flat=True).first()
    return chain


def certificate_verify(*, lookup_id: uuid.UUID) -> dict | None:
    """What anyone may check about a bundle or an issuance id: device, period, quantity, status, holder, claim,
    and the transactions that carried its Wh on chain. None when the id is neither."""
    bundle = CertificateBundle.objects.select_related("issuance__device__meter").filter(id=lookup_id).first()
    issuance = bundle.issuance if bundle is not None else (
        Issuance.objects.select_related("device__meter").filter(id=lookup_id).first()
    )  # fmt: skip
    if issuance is None:
        return None
    leaves = list(issuance.bundles.exclude(status="split").order_by("range_start"))
    ops = ChainOperation.objects.filter(issuance=issuance).order_by("created_at", "id")
    body = {
        "kind": "bundle" if bundle is not None else "issuance",
        "issuance": issuance_payload(issuance),
        "device": issuance.device_attributes,
        "bundles": [bundle_payload(b) for b in leaves],
        "transactions": _transactions(ops),
    }
    if bundle is not None:
        body["bundle"] = bundle_payload(bundle)
        body["lineage"] = _lineage(bundle)
        for detail in _verify_details:
            body.update(detail(bundle))
    return body


def fea_bundle(bundle: CertificateBundle) -> dict:
    """One bundle in the FEA granular certificate registry's current field names, units and enum values
    (docs/CERTIFICATES.md maps them)."""
    issuance = bundle.issuance
    device = issuance.device_attributes
    capacity = device.get("capacity_kw")
    storage = device["is_storage"]
    emissions = FEA_DIRECT_EMISSIONS.get(device["technology"])
    start, end = rfc3339(issuance.interval_start), rfc3339(issuance.interval_end)
    return {
        "issuance_id": str(issuance.id),
        "certificate_bundle_status": FEA_STATUS[bundle.status],
        "account_id": str(bundle.holder_id),
        "certificate_bundle_id_range_start": bundle.range_start,
        "certificate_bundle_id_range_end": bundle.range_end,
        "bundle_quantity": bundle.quantity_wh,
        "energy_carrier": "electricity",
        "energy_source": device["technology"],
        "face_value": 1,
        "issuance_post_energy_carrier_conversion": False,
        "registry_configuration": 1,
        "emissions_factor_production_device": None if emissions is None else 0,
        "emissions_factor_source": emissions,
        "device_id": device["device_id"],
        "device_name": device["name"],
        "device_technology_type": "other_storage" if storage else FEA_TECHNOLOGY[device["technology"]],
        "device_production_start_date": device["commissioning_date"],
        "device_capacity": None if capacity is None else int(Decimal(capacity) * 1000),  # W; kW has 3 places
        "device_location": [_coordinate(device.get("latitude")), _coordinate(device.get("longitude"))],
        "device_type": "storage" if storage else "generation",
        "is_storage": storage,
        "sdr_allocation_id": None,
        "storage_efficiency_factor": None,
        "discharging_start_datetime": start if storage else None,
        "discharging_end_datetime": end if storage else None,
        "production_starting_interval": start,
        "production_ending_interval": end,
        "issuance_datestamp": issuance.issued_at.date().isoformat(),
        "expiry_datestamp": issuance.expires_at.date().isoformat(),
        "country_of_issuance": device["country"],
        "connected_grid_identification": device["grid_zone"],
        "issuing_body": device["issuer"],
        "issue_market_zone": device["grid_zone"],
        "hash": issuance.hash,
        "gridtoken": {
            "bundle_id": str(bundle.id),
            "parent_id": None if bundle.parent_id is None else str(bundle.parent_id),
            "holder_wallet": bundle.holder_wallet,
            "beneficiary": bundle.beneficiary or None,
            "consumption_start": None if bundle.consumption_start is None else rfc3339(bundle.consumption_start),
            "consumption_end": None if bundle.consumption_end is None else rfc3339(bundle.consumption_end),
        },
    }


def _coordinate(text: str | None) -> float | None:
    """FEA keeps coordinates as floats; a coordinate is no amount, and 6 places survive a double exactly enough."""
    return None if text is None else float(text)


def fea_export(*, device_id: uuid.UUID | None = None, status: str | None = None, limit: int = 100,
               offset: int = 0) -> list[dict]:  # fmt: skip
    rows = CertificateBundle.objects.filter(status__in=LIVE).select_related("issuance")
    if device_id is not None:
        rows = rows.filter(issuance__device_id=device_id)
    if status:
        rows = rows.filter(status=status)
    rows = rows.order_by("issuance__device_id", "issuance__interval_start", "range_start")[offset : offset + limit]
    return [fea_bundle(bundle) for bundle in rows]
