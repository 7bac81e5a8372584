"""The certificates API: devices, bundles, transfer, claim, operator actions, verification and the FEA export."""

import logging
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from certificates.models import CertificateBundle, ChainOperation, Issuance, ProductionDevice
from certificates.services.issuance import certificates_issue_due
from tests.certificates.helpers import HOUR0, add_readings, close_hour, make_device
from tests.factories import MeterFactory, UserFactory
from tests.meters.test_schema import ERROR_BODY, generated_schema, json_schema, operations

pytestmark = pytest.mark.django_db
CLAIM = {"beneficiary": "Acme GmbH", "consumption_start": "2026-03-01T00:00:00Z",
         "consumption_end": "2026-03-01T01:00:00Z"}  # fmt: skip


def client_for(user) -> APIClient:
    client = APIClient()
    token = client.post("/api/auth/token", {"username": user.username, "password": "password"}, format="json")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.json()['token']}")
    return client


@pytest.fixture
def operator():
    return UserFactory(is_staff=True)


@pytest.fixture
def issued():
    device = make_device()
    add_readings(device, 0, ["1.25"])
    close_hour(device, 0)
    certificates_issue_due()
    return CertificateBundle.objects.select_related("holder", "issuance").get(issuance__device=device)


def test_a_producer_registers_its_meter_and_an_operator_approves_it(operator):
    meter = MeterFactory(capacity_kw=None)
    producer = client_for(meter.owner)
    body = {"meter_id": str(meter.id), "name": "Roof PV", "technology": "solar_pv", "commissioning_date": "2024-05-01",
            "grid_zone": "10YDE-VE-------2", "country": "DE", "issuer": "Test registry", "capacity_kw": "7.5",
            "latitude": "52.5", "longitude": "13.4"}  # fmt: skip
    created = producer.post("/api/certificates/devices", body, format="json")
    assert created.status_code == 201, created.json()
    device = ProductionDevice.objects.get(meter=meter)
    assert created.json()["id"] == str(device.id) and created.json()["status"] == "pending"
    assert created.json()["capacity_kw"] == "7.500"
    again = producer.post("/api/certificates/devices", body, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "device_exists")
    stranger = client_for(UserFactory()).post("/api/certificates/devices", body, format="json")
    assert (stranger.status_code, stranger.json()["error"]["code"]) == (404, "meter_not_found")
    assert producer.get("/api/certificates/devices").json()["devices"][0]["name"] == "Roof PV"

    path = f"/api/admin/certificates/devices/{device.id}/status"
    assert producer.post(path, {"status": "approved"}, format="json").status_code == 403
    approved = client_for(operator).post(path, {"status": "approved"}, format="json")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    device.refresh_from_db()
    assert device.status == "approved" and device.approved_by == operator.username


def test_transfer_and_claim_through_the_api_with_a_stable_409_for_a_second_claim(issued):
    holder, buyer = client_for(issued.holder), UserFactory()
    for bad in ("", "spent", "active\u0000"):
        refused = holder.get("/api/certificates/bundles", {"status": bad})
        assert (refused.status_code, refused.json()["error"]["field"]) == (400, "status")
    listed = holder.get("/api/certificates/bundles?status=active").json()
    assert listed["active_wh"] == 1250 and listed["bundles"][0]["bundle_id_range_end"] == 1250
    moved = holder.post(f"/api/certificates/bundles/{issued.id}/transfer",
                        {"recipient": buyer.username, "quantity_wh": 1000}, format="json")  # fmt: skip
    assert moved.status_code == 200, moved.json()
    assert (moved.json()["bundle_id_range_start"], moved.json()["bundle_id_range_end"]) == (1, 1000)
    assert moved.json()["parent_id"] == str(issued.id) and moved.json()["holder_wallet"] == buyer.wallet_address

    buyer_api = client_for(buyer)
    claimed = buyer_api.post(f"/api/certificates/bundles/{moved.json()['id']}/claim", CLAIM, format="json")
    assert claimed.status_code == 200 and claimed.json()["status"] == "claimed"
    twice = buyer_api.post(f"/api/certificates/bundles/{moved.json()['id']}/claim", CLAIM, format="json")
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "bundle_claimed")
    moved_again = buyer_api.post(f"/api/certificates/bundles/{moved.json()['id']}/transfer",
                                 {"recipient": issued.holder.username}, format="json")  # fmt: skip
    assert (moved_again.status_code, moved_again.json()["error"]["code"]) == (409, "bundle_claimed")
    assert CertificateBundle.objects.filter(status="claimed").count() == 1
    assert list(ChainOperation.objects.values_list("kind", flat=True).order_by("created_at")) == [
        "issue", "transfer", "burn"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"recipient": "nobody-here"}, "recipient"),
        ({"recipient": "x", "quantity_wh": 0}, "quantity_wh"),
        ({"recipient": "x", "quantity_wh": 2**70}, "quantity_wh"),
        ({"recipient": "x", "quantity_wh": "1.5"}, "quantity_wh"),
        ({"recipient": "x", "quantity_wh": "100"}, "quantity_wh"),
        ({"recipient": "x", "quantity_wh": True}, "quantity_wh"),
        ({"recipient": 12}, "recipient"),
    ],
)
def test_bad_transfers_are_client_errors_never_500(issued, body, field):
    response = client_for(issued.holder).post(f"/api/certificates/bundles/{issued.id}/transfer", body, format="json")
    assert 400 <= response.status_code < 500 and response.json()["error"].get("field") == field
    assert CertificateBundle.objects.get().status == "active"


def test_a_split_larger_than_the_bundle_is_refused(issued):
    other = UserFactory()
    response = client_for(issued.holder).post(
        f"/api/certificates/bundles/{issued.id}/transfer", {"recipient": other.username, "quantity_wh": 1251},
        format="json",
    )  # fmt: skip
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_quantity")


def test_a_claim_with_a_backwards_period_is_refused(issued):
    body = {**CLAIM, "consumption_end": "2026-02-28T00:00:00Z"}
    response = client_for(issued.holder).post(f"/api/certificates/bundles/{issued.id}/claim", body, format="json")
    assert (response.status_code, response.json()["error"]["field"]) == (400, "consumption_end")


def test_operators_decide_held_intervals_and_withdraw_bundles(operator, issued, caplog):
    device = make_device(capacity_kw="1")
    add_readings(device, 0, ["3"])
    close_hour(device, 0)
    certificates_issue_due()
    staff = client_for(operator)
    held = staff.get("/api/admin/certificates/held").json()["issuances"]
    assert [h["device_id"] for h in held] == [str(device.id)]
    with caplog.at_level(logging.INFO, logger="certificates.audit"):
        decided = staff.post(f"/api/admin/certificates/issuances/{held[0]['id']}/decide", {"approve": False},
                             format="json")  # fmt: skip
        assert decided.status_code == 200 and decided.json()["status"] == "rejected"
        again = staff.post(f"/api/admin/certificates/issuances/{held[0]['id']}/decide", {"approve": True},
                           format="json")  # fmt: skip
        assert (again.status_code, again.json()["error"]["code"]) == (409, "not_held")
        gone = staff.post(f"/api/admin/certificates/bundles/{issued.id}/withdraw", {"reason": "faulty meter"},
                          format="json")  # fmt: skip
    assert gone.status_code == 200 and gone.json()["status"] == "withdrawn" and gone.json()["reason"] == "faulty meter"
    audits = [record.audit for record in caplog.records if hasattr(record, "audit")]
    assert audits[-2:] == ["certificate_hold_decided", "certificate_withdrawn"]  # the refused decision: none
    assert audits.count("certificate_hold_decided") == 1
    assert Issuance.objects.get(id=held[0]["id"]).status == "rejected"
    sloppy = staff.post(f"/api/admin/certificates/issuances/{held[0]['id']}/decide", {"approve": 1}, format="json")
    assert (sloppy.status_code, sloppy.json()["error"]["field"]) == (400, "approve")


def test_anyone_can_verify_a_bundle_or_issuance_id(issued):
    buyer = UserFactory()
    holder = client_for(issued.holder)
    part = holder.post(f"/api/certificates/bundles/{issued.id}/transfer",
                       {"recipient": buyer.username, "quantity_wh": 250}, format="json").json()  # fmt: skip
    client_for(buyer).post(f"/api/certificates/bundles/{part['id']}/claim", CLAIM, format="json")

    anonymous = APIClient()
    by_bundle = anonymous.get(f"/api/certificates/verify/{part['id']}").json()
    assert by_bundle["kind"] == "bundle" and by_bundle["lineage"] == [str(issued.id)]
    assert by_bundle["bundle"]["status"] == "claimed" and by_bundle["bundle"]["beneficiary"] == "Acme GmbH"
    assert by_bundle["issuance"]["quantity_wh"] == 1250 and by_bundle["device"]["technology"] == "solar_pv"
    assert [(b["bundle_id_range_start"], b["bundle_id_range_end"], b["status"]) for b in by_bundle["bundles"]] == [
        (1, 250, "claimed"), (251, 1250, "active")
    ]  # fmt: skip
    assert [t["kind"] for t in by_bundle["transactions"]] == ["issue", "transfer", "burn"]
    by_issuance = anonymous.get(f"/api/certificates/verify/{issued.issuance_id}").json()
    assert by_issuance["kind"] == "issuance" and by_issuance["issuance"]["hash"] == issued.issuance.hash
    missing = anonymous.get("/api/certificates/verify/00000000-0000-0000-0000-000000000000")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "certificate_not_found")
    assert anonymous.get("/api/certificates/verify/not-a-uuid").status_code == 404


def test_the_export_speaks_the_fea_registry_field_names(issued):
    """Future-Energy-Associates/granular_certificate_registry (gc_registry/certificate/schemas.py,
    core/models/base.py): certificate_bundle_id_range_*, device_capacity an integer in W, EnergyCarrierType
    ``electricity``, DeviceTechnologyType, device_location (float, float). Before: "10.000" (kW, read as 10 W),
    "Electricity", bundle_id_range_*."""
    rows = APIClient().get("/api/certificates/export", {"device_id": str(issued.issuance.device_id)}).json()
    [row] = rows["granular_certificate_bundles"]
    assert row["issuance_id"] == str(issued.issuance_id) and row["certificate_bundle_status"] == "Active"
    assert (row["certificate_bundle_id_range_start"], row["certificate_bundle_id_range_end"]) == (1, 1250)
    assert row["bundle_quantity"] == 1250 and "bundle_id_range_start" not in row
    assert row["production_starting_interval"] == "2026-03-01T00:00:00.000000Z"
    assert row["production_ending_interval"] == "2026-03-01T01:00:00.000000Z"
    assert row["device_capacity"] == 10000 and row["energy_carrier"] == "electricity"
    assert row["device_technology_type"] == "solar_pv" and row["energy_source"] == "solar_pv"
    assert row["emissions_factor_production_device"] == 0 and "non-combustion" in row["emissions_factor_source"]
    assert row["is_storage"] is False and row["discharging_start_datetime"] is None
    assert row["device_location"] == [52.520008, 13.404954] and row["issuing_body"] == "GridToken test registry"
    assert row["expiry_datestamp"] == (HOUR0 + timedelta(hours=1, days=730)).date().isoformat()
    bad = APIClient().get("/api/certificates/export", {"limit": "100000"})
    assert bad.status_code == 400


def test_a_storage_devices_bundles_fill_feas_storage_fields():
    device = make_device()
    ProductionDevice.objects.filter(pk=device.pk).update(is_storage=True)
    add_readings(device, 0, ["1.25"])
    close_hour(device, 0)
    certificates_issue_due()

    [row] = (
        APIClient()
        .get("/api/certificates/export", {"device_id": str(device.id)})
        .json()["granular_certificate_bundles"]
    )

    assert (row["is_storage"], row["device_type"], row["device_technology_type"]) == (True, "storage", "other_storage")
    assert row["discharging_start_datetime"] == row["production_starting_interval"]
    assert row["discharging_end_datetime"] == row["production_ending_interval"]
    assert row["sdr_allocation_id"] is None and row["storage_efficiency_factor"] is None


def test_every_certificates_operation_documents_its_bodies_and_errors():
    found = 0
    for path, method, operation in operations(generated_schema()):
        if "/certificates" not in path:
            continue
        found += 1
        successes = [r for code, r in operation["responses"].items() if code.startswith("2")]
        assert successes and all(json_schema(r) for r in successes), (method, path)
        if method == "post":
            assert json_schema(operation.get("requestBody", {})), (method, path)
        errors = [r for code, r in operation["responses"].items() if code[0] in "45"]
        assert errors and all(json_schema(r) == ERROR_BODY for r in errors), (method, path)
    assert found == 11


def test_a_transfer_to_oneself_is_refused_with_a_stable_code(issued):
    response = client_for(issued.holder).post(
        f"/api/certificates/bundles/{issued.id}/transfer", {"recipient": issued.holder.username, "quantity_wh": 10},
        format="json",
    )  # fmt: skip
    assert (response.status_code, response.json()["error"]["code"]) == (400, "transfer_to_self")
    assert response.json()["error"]["field"] == "recipient"
    assert CertificateBundle.objects.get().status == "active" and not ChainOperation.objects.filter(kind="transfer")


def test_transfer_and_claim_answer_the_moved_and_the_remaining_bundle(issued):
    holder, buyer = client_for(issued.holder), UserFactory()
    moved = holder.post(f"/api/certificates/bundles/{issued.id}/transfer",
                        {"recipient": buyer.username, "quantity_wh": 1000}, format="json").json()  # fmt: skip
    remaining = moved["remaining"]
    assert (moved["bundle_id_range_start"], moved["bundle_id_range_end"]) == (1, 1000)
    assert (remaining["bundle_id_range_start"], remaining["bundle_id_range_end"]) == (1001, 1250)
    assert remaining["holder_wallet"] == issued.holder_wallet and remaining["status"] == "active"
    assert remaining["id"] == str(CertificateBundle.objects.get(parent=issued, holder=issued.holder).id)

    claimed = client_for(buyer).post(f"/api/certificates/bundles/{moved['id']}/claim",
                                     {**CLAIM, "quantity_wh": 400}, format="json").json()  # fmt: skip
    assert (claimed["status"], claimed["bundle_id_range_end"]) == ("claimed", 400)
    assert (claimed["remaining"]["bundle_id_range_start"], claimed["remaining"]["status"]) == (401, "active")

    whole = holder.post(f"/api/certificates/bundles/{remaining['id']}/transfer", {"recipient": buyer.username},
                        format="json").json()  # fmt: skip
    assert whole["bundle_id_range_start"] == 1001 and whole["remaining"] is None
