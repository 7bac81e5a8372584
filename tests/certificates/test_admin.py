"""The Django admin's certificate actions go through the services (audit lines, events, refusals)."""

import pytest
from django.urls import reverse

from certificates.models import CertificateBundle, Issuance, ProductionDevice
from certificates.services.issuance import certificates_issue_due
from tests.certificates.helpers import add_readings, close_hour, make_device
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def act(admin_client, model: str, action: str, ids) -> None:
    url = reverse(f"admin:certificates_{model}_changelist")
    response = admin_client.post(url, {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True)
    assert response.status_code == 200


def test_admin_actions_approve_devices_decide_holds_and_withdraw_bundles(admin_client):
    pending = make_device(approve=False, capacity_kw="1")
    act(admin_client, "productiondevice", "approve", [pending.id])
    assert ProductionDevice.objects.get(id=pending.id).status == "approved"

    add_readings(pending, 0, ["2"])
    add_readings(pending, 1, ["0.5"])
    close_hour(pending, 1)
    certificates_issue_due()
    held = Issuance.objects.get(status="held")
    act(admin_client, "issuance", "issue_held", [held.id])
    held.refresh_from_db()
    assert held.status == "issued" and held.quantity_wh == 2000

    bundles = list(CertificateBundle.objects.all())
    act(admin_client, "certificatebundle", "withdraw", [b.id for b in bundles])
    assert set(CertificateBundle.objects.values_list("status", flat=True)) == {"withdrawn"}
    act(admin_client, "certificatebundle", "withdraw", [bundles[0].id])  # refused: shown as a warning, no change
    assert CertificateBundle.objects.get(id=bundles[0].id).reason.startswith("revoked by")


def test_registry_rows_cannot_be_deleted_in_the_admin(admin_client):
    device = make_device()
    response = admin_client.get(reverse("admin:certificates_productiondevice_delete", args=[device.id]))
    assert response.status_code == 403


def test_the_admin_retries_failed_chain_operations_with_fresh_attempts(admin_client):
    from certificates.models import ChainOperation

    device = make_device()
    add_readings(device, 0, ["1"])
    close_hour(device, 0)
    certificates_issue_due()
    op = ChainOperation.objects.get()
    ChainOperation.objects.filter(id=op.id).update(status="failed", attempts=3, last_error="failed on chain: x")
    act(admin_client, "chainoperation", "retry", [op.id])
    op.refresh_from_db()
    assert (op.status, op.attempts) == ("pending", 0)


def test_a_device_page_edits_its_description_but_not_its_status_or_issuance_state(admin_client):
    device = make_device(approve=False)
    page = admin_client.get(reverse("admin:certificates_productiondevice_change", args=[device.id]))
    assert 'name="name"' in page.content.decode() and 'name="status"' not in page.content.decode()

    response = admin_client.post(
        reverse("admin:certificates_productiondevice_change", args=[device.id]),
        {"name": "Renamed plant", "technology": "wind", "commissioning_date": "2025-01-01",
         "grid_zone": "10YDE-VE-------2", "country": "DE", "issuer": "registry", "status": "approved",
         "next_bundle_id": "99", "carry_wh": "0.5", "approved_by": "nobody"},
    )  # fmt: skip

    assert response.status_code == 302
    device.refresh_from_db()
    assert (device.name, device.technology) == ("Renamed plant", "wind")
    assert (device.status, device.next_bundle_id, device.carry_wh, device.approved_by) == ("pending", 1, 0, "")


def test_devices_are_registered_through_the_api_not_added_in_the_admin(admin_client):
    assert admin_client.get(reverse("admin:certificates_productiondevice_add")).status_code == 403
    assert admin_client.post(reverse("admin:certificates_productiondevice_add"), {"name": "x"}).status_code == 403
    assert not ProductionDevice.objects.exists()
