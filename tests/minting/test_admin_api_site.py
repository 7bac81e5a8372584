"""Django admin: the read-only batch audit with explorer links, the control row, and the reading actions."""

import dataclasses
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.middleware import SessionMiddleware
from django.test import RequestFactory

from meters.models import MeterReading
from minting.admin import explorer_url, mint_now, retry_failed
from minting.models import MintBatch, MintingControl
from tests.factories import UserFactory
from tests.minting.pipeline_harness import assert_minted_exactly_once, make_meter, make_readings, use_chain

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def confirmed_batch_with_readings():
    readings = make_readings([make_meter()], 2, status="minted", minted=True, mint_tx_signature="sig-abc")
    batch = MintBatch.objects.create(
        signature="sig-abc", raw_transaction=b"x", last_valid_block_height=5, mint_address="mint",
        status="confirmed", reading_count=2, total_token_amount=3_000_000_000,
    )  # fmt: skip
    MeterReading.objects.filter(id__in=[r.id for r in readings]).update(batch=batch)
    return batch, readings


def test_explorer_links_follow_the_configured_cluster(settings):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, cluster="localnet", rpc_url="http://127.0.0.1:8899")
    assert (
        explorer_url("S")
        == f"https://explorer.solana.com/tx/S?cluster=custom&customUrl={quote('http://127.0.0.1:8899', safe='')}"
    )
    settings.CHAIN = dataclasses.replace(settings.CHAIN, cluster="devnet")
    assert explorer_url("S") == "https://explorer.solana.com/tx/S?cluster=devnet"
    settings.CHAIN = dataclasses.replace(settings.CHAIN, cluster="mainnet-beta")
    assert explorer_url("S") == "https://explorer.solana.com/tx/S"


def test_the_batch_list_shows_status_amounts_and_a_link_to_the_explorer(staff_client):
    batch, _ = confirmed_batch_with_readings()
    page = staff_client.get("/admin/minting/mintbatch/").content.decode()
    assert "confirmed" in page and "3000000000" in page
    assert explorer_url(batch.signature).replace("&", "&amp;") in page


def test_a_batch_page_lists_its_readings_and_cannot_be_edited(staff_client):
    batch, readings = confirmed_batch_with_readings()
    page = staff_client.get(f"/admin/minting/mintbatch/{batch.id}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert all(r.wallet_address in text for r in readings)
    assert 'name="_save"' not in text
    assert staff_client.get("/admin/minting/mintbatch/add/").status_code == 403
    assert staff_client.post(f"/admin/minting/mintbatch/{batch.id}/delete/", {"post": "yes"}).status_code == 403
    assert MintBatch.objects.filter(id=batch.id).exists()


def test_mint_batches_and_their_readings_cannot_be_deleted_in_the_admin_even_by_a_superuser(staff_client):
    batch, readings = confirmed_batch_with_readings()

    changelist = staff_client.get("/admin/minting/mintbatch/").content.decode()
    page = staff_client.get(f"/admin/minting/mintbatch/{batch.id}/change/").content.decode()
    action = staff_client.post(
        "/admin/minting/mintbatch/", {"action": "delete_selected", "_selected_action": [str(batch.id)], "post": "yes"}
    )

    assert 'value="delete_selected"' not in changelist
    assert f"/admin/minting/mintbatch/{batch.id}/delete/" not in page and "-DELETE" not in page
    assert admin.site._registry[MintBatch].has_delete_permission(action.wsgi_request, batch) is False
    assert MintBatch.objects.filter(id=batch.id).exists()
    assert MeterReading.objects.filter(batch=batch).count() == len(readings)


def test_operators_switch_auto_mint_from_the_control_row(staff_client):
    assert staff_client.get("/admin/minting/mintingcontrol/").status_code == 200  # seeds the row
    response = staff_client.post("/admin/minting/mintingcontrol/1/change/", {})  # checkbox unticked = off
    assert response.status_code == 302
    control = MintingControl.objects.get()
    assert control.auto_mint_enabled is False and control.updated_by
    assert staff_client.get("/admin/minting/tokenmint/").status_code == 200


def action_request(user):
    request = RequestFactory().post("/admin/meters/meterreading/")
    SessionMiddleware(lambda r: None).process_request(request)
    request.user = user
    request._messages = FallbackStorage(request)
    return request


def first_message(request) -> str:
    return str(next(iter(get_messages(request))))


def readings_admin():
    return admin.site._registry.get(MeterReading) or admin.ModelAdmin(MeterReading, admin.site)


def test_the_retry_action_requeues_only_failed_readings():
    failed = make_readings([make_meter()], 2, status="failed", attempts=3)
    pending = make_readings([make_meter()], 1)
    request = action_request(UserFactory(is_staff=True))
    retry_failed(readings_admin(), request, MeterReading.objects.filter(id__in=[r.id for r in failed + pending]))
    assert {(r.status, r.attempts) for r in MeterReading.objects.filter(id__in=[r.id for r in failed])} == {
        ("pending", 0)
    }
    assert "2 failed reading(s) queued" in first_message(request)


def test_the_mint_now_action_mints_the_selection_exactly_once(settings, localnet, tmp_path):
    chain = use_chain(settings, localnet, tmp_path)
    readings = make_readings([make_meter(), make_meter()], 4)
    (minted,) = make_readings([make_meter()], 1, status="minted", minted=True, mint_tx_signature="old")
    request = action_request(UserFactory(is_staff=True))

    mint_now(readings_admin(), request, MeterReading.objects.filter(id__in=[r.id for r in [*readings, minted]]))

    message = first_message(request)
    assert message.startswith("4 of 5 reading(s) minted.") and "already minted" in message
    assert_minted_exactly_once(chain.client(), readings)


def test_the_mint_now_action_reports_an_unreachable_chain(settings, tmp_path):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, keypair_path=tmp_path / "missing.json")
    readings = make_readings([make_meter()], 1)
    request = action_request(UserFactory(is_staff=True))
    mint_now(readings_admin(), request, MeterReading.objects.filter(id=readings[0].id))
    assert first_message(request).startswith("Nothing minted")
    assert MeterReading.objects.get(id=readings[0].id).status == "pending"


def test_the_readings_admin_offers_both_actions_and_runs_them(staff_client):
    failed = make_readings([make_meter()], 2, status="failed", attempts=3)
    page = staff_client.get("/admin/meters/meterreading/").content.decode()
    assert 'value="mint_now"' in page and 'value="retry_failed"' in page
    response = staff_client.post(
        "/admin/meters/meterreading/", {"action": "retry_failed", "_selected_action": [str(r.id) for r in failed]}
    )
    assert response.status_code == 302
    assert set(MeterReading.objects.values_list("status", "attempts")) == {("pending", 0)}
