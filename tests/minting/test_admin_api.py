"""Operator endpoints: who may call them, their shapes, and that they mint through the exactly-once path."""

import dataclasses
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from gridtoken.exceptions import ApplicationError
from meters.models import MeterReading
from minting.chain.keys import create_keypair
from minting.models import MintBatch, MintingControl, TokenMint
from minting.services.control import auto_mint_set
from minting.services.operator import readings_mint_now
from tests.conftest import free_port
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    make_meter,
    make_readings,
    set_tokenization,
    use_chain,
)

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("post", "/api/admin/meters/mint-from-reading"),
    ("post", "/api/admin/meters/mint-batch"),
    ("get", "/api/admin/meters/unminted"),
    ("post", "/api/admin/meters/retry-failed"),
    ("get", "/api/admin/tokenization/status"),
    ("post", "/api/admin/tokenization/toggle-auto-mint"),
    ("post", "/api/admin/tokenization/trigger-batch"),
    ("post", "/api/admin/tokenization/reconcile"),
]


def client_for(user=None, **headers) -> Client:
    if user is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {Token.objects.create(user=user).key}"
    return Client(**headers)


@pytest.fixture
def operator():
    return client_for(UserFactory(is_staff=True))


def call(client: Client, method: str, path: str, body: dict | None = None):
    if method == "get":
        return client.get(path, body or {})
    return client.post(path, body or {}, content_type="application/json")


@pytest.fixture
def chain(settings, localnet, tmp_path):
    return use_chain(settings, localnet, tmp_path)


# --- who may call ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_callers_are_told_to_authenticate(method, path):
    response = call(Client(), method, path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_users_who_are_not_operators_are_refused(method, path):
    response = call(client_for(UserFactory()), method, path)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert MintBatch.objects.count() == 0


def test_a_device_key_never_counts_as_an_operator_even_when_its_owner_is_staff():
    meter = MeterFactory(owner=UserFactory(is_staff=True))
    _, plaintext = api_key_for(meter=meter)
    response = Client(HTTP_X_API_KEY=plaintext).get("/api/admin/tokenization/status")
    assert response.status_code == 401


# --- reads and switches ----------------------------------------------------------------------------------


def test_status_reports_the_switch_the_backlog_and_recent_batches(operator, settings):
    set_tokenization(settings, batch_size=25, polling_interval_secs=30)
    meter = make_meter()
    make_readings([meter], 3)
    make_readings([meter], 1, status="failed")
    make_readings([meter], 1, status="rejected")
    MintBatch.objects.create(
        signature="s1", raw_transaction=b"x", last_valid_block_height=1, mint_address="m", status="confirmed",
        reading_count=4, total_token_amount=6_000_000_000,
    )  # fmt: skip

    body = operator.get("/api/admin/tokenization/status").json()

    assert body["auto_mint_enabled"] is True
    assert (body["polling_interval_secs"], body["batch_size"]) == (30, 25)
    assert body["unminted_readings_count"] == 4
    assert body["readings_by_status"] == {"pending": 3, "minting": 0, "failed": 1}
    stats = body["recent_batch_stats"]
    assert stats["batches"]["confirmed"] == 1
    assert (stats["readings_minted"], stats["tokens_minted"]) == (4, 6_000_000_000)
    assert body["chain"]["failures"] == 0


def test_status_reports_a_pause_its_reason_the_fee_payer_and_blocked_decisions(operator):
    now = timezone.now()
    until, checked, blocked = now + timedelta(seconds=30), now - timedelta(seconds=20), now - timedelta(seconds=5)
    TokenMint.objects.create(address="Mint111", decimals=9, token_program="Tok", authority="Auth111", rpc_url="x")
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=4,
        chain_retry_at=until,
        chain_error_code="wrong_authority",
        chain_error="instruction 1 (spl-token): the signer is not the mint authority",
        fee_payer_lamports=12_500_000,
        fee_payer_checked_at=checked,
        decisions_blocked_at=blocked,
        decisions_blocked_reason="node_behind: Node is behind by 42 slots",
        accounts_epoch=3,
    )

    chain = operator.get("/api/admin/tokenization/status").json()["chain"]

    assert chain == {
        "paused": True,
        "reason_code": "wrong_authority",
        "failures": 4,
        "paused_until": until.isoformat().replace("+00:00", "Z"),
        "last_error": "instruction 1 (spl-token): the signer is not the mint authority",
        "last_error_code": "wrong_authority",
        "fee_payer_address": "Auth111",
        "fee_payer_lamports": 12_500_000,
        "fee_payer_sol": "0.0125",
        "fee_payer_checked_at": checked.isoformat().replace("+00:00", "Z"),
        "decisions_blocked": True,
        "decisions_blocked_at": blocked.isoformat().replace("+00:00", "Z"),
        "decisions_blocked_reason": "node_behind: Node is behind by 42 slots",
        "decisions_blocked_code": "node_behind",
    }  # accounts_epoch is internal: not shown


def test_status_after_the_pause_and_the_block_have_passed_keeps_the_last_error(operator):
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=2,  # counted until a cycle reaches the chain again; only chain_retry_at pauses
        chain_retry_at=timezone.now() - timedelta(seconds=1),
        chain_error_code="rpc_rate_limited",
        chain_error="https://rpc.example is rate limiting (getLatestBlockhash): HTTP 429",
        decisions_blocked_at=timezone.now() - timedelta(minutes=3),
        decisions_blocked_reason="history_unavailable: no history",
    )

    chain = operator.get("/api/admin/tokenization/status").json()["chain"]

    assert (chain["paused"], chain["reason_code"], chain["last_error_code"]) == (False, None, "rpc_rate_limited")
    assert chain["failures"] == 2 and chain["last_error"].endswith("HTTP 429")
    assert chain["decisions_blocked"] is False and chain["decisions_blocked_code"] == "history_unavailable"
    assert (chain["fee_payer_lamports"], chain["fee_payer_sol"], chain["fee_payer_address"]) == (None, None, None)


def test_toggling_auto_mint_switches_the_shared_row(operator):
    response = operator.post("/api/admin/tokenization/toggle-auto-mint", {"enabled": False}, "application/json")
    assert response.status_code == 200
    assert response.json()["auto_mint_enabled"] is False
    control = MintingControl.objects.get()
    assert control.auto_mint_enabled is False and control.updated_by
    assert operator.get("/api/admin/tokenization/status").json()["auto_mint_enabled"] is False


def test_toggling_without_saying_on_or_off_is_a_400(operator):
    response = operator.post("/api/admin/tokenization/toggle-auto-mint", {}, "application/json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "enabled"


def test_unminted_lists_pending_in_flight_and_failed_readings_oldest_first(operator):
    meter = make_meter()
    kept = make_readings([meter], 2) + make_readings([meter], 1, status="failed")
    make_readings([meter], 1, status="rejected")
    body = operator.get("/api/admin/meters/unminted").json()
    assert {row["id"] for row in body} == {str(r.id) for r in kept}
    assert body[0]["meter_serial"] == meter.serial and body[0]["kwh_amount"] == "1.500000000"
    assert len(operator.get("/api/admin/meters/unminted", {"limit": 1}).json()) == 1
    assert operator.get("/api/admin/meters/unminted", {"limit": 0}).status_code == 400


def test_retrying_failed_readings_gives_them_fresh_attempts(operator):
    meter = make_meter()
    failed = make_readings([meter], 2, status="failed", attempts=3)
    untouched = make_readings([meter], 1, status="minted", minted=True, mint_tx_signature="sig")
    response = operator.post("/api/admin/meters/retry-failed", {}, "application/json")
    assert response.json()["retried"] == 2
    rows = MeterReading.objects.filter(id__in=[r.id for r in failed])
    assert {(r.status, r.attempts) for r in rows} == {("pending", 0)}
    assert MeterReading.objects.get(id=untouched[0].id).status == "minted"


def test_retrying_named_readings_touches_only_those(operator):
    failed = make_readings([make_meter()], 2, status="failed", attempts=3)
    body = {"reading_ids": [str(failed[0].id)]}
    assert operator.post("/api/admin/meters/retry-failed", body, "application/json").json()["retried"] == 1
    assert MeterReading.objects.get(id=failed[1].id).status == "failed"


# --- manual minting: refusals ----------------------------------------------------------------------------


def test_minting_an_empty_list_is_a_400(operator):
    response = operator.post("/api/admin/meters/mint-batch", {"reading_ids": []}, "application/json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "reading_ids"


def test_minting_an_unknown_reading_is_a_404(operator):
    response = operator.post(
        "/api/admin/meters/mint-from-reading", {"reading_id": str(uuid.uuid4())}, "application/json"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "reading_not_found"


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"status": "minted", "minted": True, "mint_tx_signature": "sig"}, 400, "already_minted"),
        ({"status": "rejected"}, 400, "reading_rejected"),
        ({"status": "minting"}, 409, "mint_in_progress"),
    ],
)
def test_readings_that_cannot_be_minted_now_are_refused_with_a_stable_code(operator, fields, status, code):
    (reading,) = make_readings([make_meter()], 1, **fields)
    response = operator.post("/api/admin/meters/mint-from-reading", {"reading_id": str(reading.id)}, "application/json")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert MintBatch.objects.count() == 0


def test_minting_now_with_the_chain_unreachable_is_a_503_and_changes_nothing(operator, settings, tmp_path):
    authority = create_keypair(tmp_path / "authority.json")
    closed = f"http://127.0.0.1:{free_port()}"
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=closed, keypair_path=tmp_path / "authority.json")
    TokenMint.objects.create(
        address=str(authority.pubkey()), decimals=9, token_program="TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
        authority=str(authority.pubkey()), rpc_url=closed,
    )  # fmt: skip
    (reading,) = make_readings([make_meter()], 1)
    response = operator.post("/api/admin/meters/mint-from-reading", {"reading_id": str(reading.id)}, "application/json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "chain_unavailable"
    reading.refresh_from_db()
    assert (reading.status, reading.attempts, reading.batch_id) == ("pending", 0, None)
    assert operator.generic("POST", "/api/admin/tokenization/trigger-batch").status_code == 503
    assert operator.generic("POST", "/api/admin/tokenization/reconcile").json()["examined"] == 0


# --- manual minting against the chain --------------------------------------------------------------------


def test_minting_one_reading_now_works_with_auto_mint_off_and_answers_the_gateway_shape(operator, chain):
    auto_mint_set(enabled=False)
    (reading,) = make_readings([make_meter()], 1, kwh="2.01")

    response = operator.post("/api/admin/meters/mint-from-reading", {"reading_id": str(reading.id)}, "application/json")

    assert response.status_code == 200
    body = response.json()
    reading.refresh_from_db()
    assert body["transaction_signature"] == reading.mint_tx_signature
    assert (body["kwh_amount"], body["wallet_address"], body["token_amount"]) == (
        "2.010000000", reading.wallet_address, 2_010_000_000,
    )  # fmt: skip
    assert_minted_exactly_once(chain.client(), [reading])
    again = operator.post("/api/admin/meters/mint-from-reading", {"reading_id": str(reading.id)}, "application/json")
    assert again.json()["error"]["code"] == "already_minted"


def test_minting_a_list_reports_each_reading_and_mints_only_the_mintable_ones(operator, chain):
    meter = make_meter()
    good = make_readings([meter, make_meter()], 3)
    (rejected,) = make_readings([meter], 1, status="rejected")
    unknown = uuid.uuid4()
    ids = [str(r.id) for r in good] + [str(rejected.id), str(unknown), str(good[0].id)]

    body = operator.post("/api/admin/meters/mint-batch", {"reading_ids": ids}, "application/json").json()

    assert (body["total_readings"], body["successful_mints"], body["failed_mints"]) == (5, 3, 2)
    by_id = {row["reading_id"]: row for row in body["results"]}
    assert by_id[str(unknown)]["error"] == "reading not found"
    assert by_id[str(rejected.id)]["success"] is False
    assert all(by_id[str(r.id)]["transaction_signature"] for r in good)
    assert_minted_exactly_once(chain.client(), good)
    again = operator.post("/api/admin/meters/mint-batch", {"reading_ids": ids[:1]}, "application/json").json()
    assert again["results"][0]["error"] == "already minted"


def test_triggering_a_batch_mints_due_readings_even_in_manual_mode(operator, chain, settings):
    set_tokenization(settings, batch_size=4)
    auto_mint_set(enabled=False)
    readings = make_readings([make_meter() for _ in range(2)], 6)

    body = operator.generic("POST", "/api/admin/tokenization/trigger-batch").json()

    assert (body["total_readings"], body["successful_mints"], body["failed_mints"]) == (4, 4, 0)
    assert len(body["transaction_signatures"]) == 1
    minted = [r for r in readings if MeterReading.objects.get(id=r.id).status == "minted"]
    assert len(minted) == 4
    assert_minted_exactly_once(chain.client(), minted)


def test_reconciling_on_demand_settles_batches_at_once(operator, chain):
    from django.db import transaction

    from minting.services.batching import batches_prepare
    from minting.services.claiming import claim_due

    readings = make_readings([make_meter()], 2)
    with transaction.atomic():
        batches_prepare(client=chain.client(), claimed=claim_due(limit=10))
    first = operator.generic("POST", "/api/admin/tokenization/reconcile").json()
    assert (first["examined"], first["resent"]) == (1, 1)
    second = operator.generic("POST", "/api/admin/tokenization/reconcile").json()
    assert (second["confirmed"], second["minted"]) == (1, 2)
    assert_minted_exactly_once(chain.client(), readings)


def test_the_service_refuses_empty_and_oversized_lists_too():
    with pytest.raises(ApplicationError) as empty:
        readings_mint_now(reading_ids=[])
    assert empty.value.code == "empty_reading_ids"
    with pytest.raises(ApplicationError) as too_many:
        readings_mint_now(reading_ids=[uuid.uuid4() for _ in range(1001)])
    assert too_many.value.code == "too_many_readings"


def test_a_list_reports_readings_already_in_flight_without_touching_them(operator):
    (in_flight,) = make_readings([make_meter()], 1, status="minting")
    body = {"reading_ids": [str(in_flight.id)]}
    result = operator.post("/api/admin/meters/mint-batch", body, "application/json").json()["results"][0]
    assert (result["success"], result["error"]) == (False, "a mint of this reading is in progress")
    assert MintBatch.objects.count() == 0


def test_minting_now_a_reading_the_chain_refuses_is_a_502_and_a_dead_letter(operator, chain):
    (bad,) = make_readings([make_meter(wallet="11111111111111111111111111111111")], 1)
    response = operator.post("/api/admin/meters/mint-from-reading", {"reading_id": str(bad.id)}, "application/json")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "mint_failed"
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("failed", 1)
