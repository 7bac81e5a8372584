"""The pipeline signing through a real PKCS#11 token (SoftHSM2) on the local chain: the mint authority handed from
a keypair file to an HSM key, and a token that is missing, locked or refuses to sign as a platform fault."""

import dataclasses
import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from gridtoken.exceptions import ApplicationError
from meters.models import MeterReading
from minting.models import MintBatch, MintingControl, TokenMint
from minting.services.automatic import readings_mint_due
from minting.services.batching import batches_prepare, chain_client
from minting.services.claiming import claim_due
from minting.services.control import control_get
from minting.services.operator import batch_trigger
from minting.services.reconciliation import batches_reconcile
from minting.triggers import mint_soon
from realtime.views import wallet_balances
from tests.conftest import pkcs11_reinitialize
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    celery_processes_fixture,  # noqa: F401 (the celery_processes fixture)
    make_meter,
    make_readings,
    set_tokenization,
    use_chain,
    wait_until,
)
from tests.minting.test_signer import set_may_sign, token_plugged_back, token_unplugged
from tests.ops.test_metrics import paused_series, scrape

pytestmark = pytest.mark.django_db


def command(name: str, *args) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def lift_pause() -> None:
    MintingControl.objects.filter(id=1).update(chain_retry_at=timezone.now() - timedelta(seconds=1))


def readings_of(readings):
    return MeterReading.objects.filter(id__in=[r.id for r in readings])


def rotate_to_hsm(settings, softhsm) -> str:
    """The runbook's rotation: a key generated in the token, the mint authority handed to it by the file key,
    the signer switched to the token, and chain_init (funds the new fee payer on the local chain, checks the
    mint)."""
    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=softhsm)
    address = command("signer_keygen").strip()
    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=dataclasses.replace(softhsm, backend="file"))
    assert f"is now {address}" in command("mint_authority_set", address)
    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=softhsm)
    assert "nothing to do" in command("chain_init")
    return address


def test_the_mint_authority_moves_from_a_file_key_to_an_hsm_key_with_every_reading_minted_exactly_once(
    settings, localnet, tmp_path, softhsm
):
    """Readings minted by the file key, one batch signed by it but not sent when the authority moves (it fails
    on chain and its readings are minted again by the new key, uncharged), readings minted by the HSM key."""
    use_chain(settings, localnet, tmp_path)
    meters = [make_meter() for _ in range(3)]
    before = make_readings(meters, 6)
    assert readings_mint_due().minted == 6
    caught = make_readings(meters, 3)
    with transaction.atomic():
        (orphan,) = [p.batch for p in batches_prepare(client=chain_client(), claimed=claim_due(limit=100))[0]]

    address = rotate_to_hsm(settings, softhsm)

    row = TokenMint.objects.get()
    client = chain_client()
    assert str(client.payer) == address == row.authority == client.verify_mint().mint_authority
    reconciled = batches_reconcile(min_age_secs=0)  # sends the old key's committed bytes: refused on chain
    assert reconciled.resent == 1
    batches_reconcile(min_age_secs=0)
    orphan.refresh_from_db()
    assert orphan.status == MintBatch.Status.FAILED and "authority" in orphan.error
    assert {(r.status, r.attempts) for r in readings_of(caught)} == {("pending", 0)}
    after = make_readings(meters, 4)
    lift_pause()
    assert readings_mint_due().minted == 7
    assert_minted_exactly_once(client, before + caught + after)
    signers = set()
    for batch in MintBatch.objects.filter(status=MintBatch.Status.CONFIRMED):
        signed = VersionedTransaction.from_bytes(bytes(batch.raw_transaction))
        assert signed.verify_with_results() == [True]
        signers.add(str(signed.message.account_keys[0]))
    assert len(signers) == 2 and address in signers  # the file key's batches, then the HSM key's


def test_chain_init_creates_the_mint_with_the_hsm_key_as_authority_and_never_creates_that_key(
    settings, localnet, softhsm
):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=localnet.url, energy_token_mint=None, signer=softhsm)
    with pytest.raises(CommandError, match="signer_keygen"):
        command("chain_init", "--new-mint")
    assert not TokenMint.objects.exists()
    address = command("signer_keygen").strip()

    output = command("chain_init", "--new-mint")

    row = TokenMint.objects.get()
    assert row.authority == address and f"mint authority {address}" in output
    assert chain_client().verify_mint().mint_authority == address


@pytest.mark.parametrize(
    ("changes", "code"),
    [({"token_label": "unplugged"}, "signer_token_missing"), ({"pin": "a-wrong-pin"}, "signer_locked")],
)
def test_a_missing_or_locked_token_pauses_minting_and_charges_no_reading(
    settings, localnet, tmp_path, softhsm, changes, code
):
    use_chain(settings, localnet, tmp_path)
    rotate_to_hsm(settings, softhsm)
    readings = make_readings([make_meter()], 3)
    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=dataclasses.replace(softhsm, **changes))
    pkcs11_reinitialize(softhsm.module)  # the worker restarted with this configuration

    result = readings_mint_due()

    assert result.stopped == "chain_unavailable"
    control = control_get()
    assert control.chain_error_code == code and softhsm.pin not in control.chain_error
    assert MintBatch.objects.count() == 0
    assert {(r.status, r.attempts) for r in MeterReading.objects.all()} == {("pending", 0)}

    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=softhsm)
    lift_pause()
    assert readings_mint_due().minted == 3
    assert control_get().chain_failures == 0
    assert_minted_exactly_once(chain_client(), readings)


def test_a_token_refusing_to_sign_while_readings_are_claimed_rolls_the_claim_back(
    settings, localnet, tmp_path, softhsm
):
    use_chain(settings, localnet, tmp_path)
    rotate_to_hsm(settings, softhsm)
    meters = [make_meter(), make_meter()]
    first = make_readings(meters, 2)
    assert readings_mint_due().minted == 2  # the worker's signer has signed, then the token stops signing
    readings = make_readings(meters, 4)
    set_may_sign(softhsm, "authority", False)

    result = readings_mint_due()

    assert result.stopped == "chain_unavailable" and result.claimed == 0
    assert control_get().chain_error_code == "signer_refused"
    assert MintBatch.objects.count() == 1
    assert {(r.status, r.attempts, r.batch_id) for r in readings_of(readings)} == {("pending", 0, None)}

    set_may_sign(softhsm, "authority", True)
    lift_pause()
    assert readings_mint_due().minted == 4
    assert_minted_exactly_once(chain_client(), first + readings)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(600)
def test_a_worker_configured_from_the_environment_mints_with_the_hsm_key(
    settings, localnet, tmp_path, softhsm, celery_processes
):
    set_tokenization(settings, batch_size=5, trigger_debounce_ms=100)
    chain = use_chain(settings, localnet, tmp_path)
    address = rotate_to_hsm(settings, softhsm)
    pin_file = tmp_path / "hsm-pin"
    pin_file.write_text(softhsm.pin + "\n")
    environment = {
        "SIGNER_BACKEND": "pkcs11", "SIGNER_PKCS11_MODULE": str(softhsm.module),
        "SIGNER_PKCS11_TOKEN_LABEL": softhsm.token_label, "SIGNER_PKCS11_KEY_LABEL": softhsm.key_label,
        "SIGNER_PKCS11_PIN_FILE": str(pin_file),
    }  # fmt: skip
    worker = celery_processes(chain=chain, env=environment)  # SOFTHSM2_CONF: the test's token, inherited

    readings = make_readings([make_meter() for _ in range(3)], 12)
    mint_soon()
    wait_until(lambda: set(readings_of(readings).values_list("status", flat=True)) == {"minted"}, message="minted")

    assert_minted_exactly_once(chain_client(), readings)
    for batch in MintBatch.objects.all():
        assert str(VersionedTransaction.from_bytes(bytes(batch.raw_transaction)).message.account_keys[0]) == address
    assert softhsm.pin not in worker.output()


def restarted_with_a_pin_file(settings, softhsm, pin_file, pin: str) -> None:
    """Web and workers restarted with SIGNER_PKCS11_PIN_FILE holding ``pin`` (the kept chain clients are built
    anew: the settings differ)."""
    pin_file.write_text(pin + "\n")
    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=dataclasses.replace(softhsm, pin_file=pin_file))
    pkcs11_reinitialize(softhsm.module)


@pytest.mark.django_db(transaction=True)  # /ready reads the control row on connections of its own
def test_a_process_started_while_the_token_is_missing_pauses_minting_settles_what_is_in_flight_and_resumes_alone(
    settings, localnet, tmp_path, softhsm, client
):
    use_chain(settings, localnet, tmp_path)
    rotate_to_hsm(settings, softhsm)
    meters = [make_meter(), make_meter()]
    minted = make_readings(meters, 3)
    assert readings_mint_due().minted == 3
    in_flight = make_readings(meters, 2)
    with transaction.atomic():  # signed and committed by the HSM key, not sent: then the HSM is unplugged
        (batch,) = [p.batch for p in batches_prepare(client=chain_client(), claimed=claim_due(limit=100))[0]]
    aside = token_unplugged(softhsm)
    restarted_with_a_pin_file(settings, softhsm, tmp_path / "pin", softhsm.pin)
    waiting = make_readings(meters, 3)

    assert readings_mint_due().stopped == "chain_unavailable"

    assert control_get().chain_error_code == "signer_token_missing"
    assert {(r.status, r.attempts) for r in readings_of(waiting)} == {("pending", 0)}
    assert client.get("/ready").json()["checks"]["minting"] == (
        "degraded: paused by the outage breaker (signer_token_missing)"
    )
    assert paused_series(scrape(client))["signer_token_missing"] == 1
    for setup in (("chain_init",), ("mint_authority_set", str(Keypair().pubkey()))):
        with pytest.raises(CommandError, match=r"^signer_token_missing: .*is not present"):
            command(*setup)
    with pytest.raises(ApplicationError) as mint_now:  # an operator's "mint now" meets the same fault
        batch_trigger(actor="op")
    assert (mint_now.value.status, mint_now.value.details["reason_code"]) == (503, "signer_token_missing")

    # Reading the chain needs no key: the batch signed before the unplug is sent and settled meanwhile.
    def settled() -> bool:
        batches_reconcile(min_age_secs=0)
        return MintBatch.objects.get(id=batch.id).status == MintBatch.Status.CONFIRMED

    wait_until(settled, message="the batch signed before the unplug confirmed")
    assert [row["status"] for row in wallet_balances([meters[0].wallet_address])] == ["ok"]
    assert MintBatch.objects.count() == 2

    token_plugged_back(aside)
    lift_pause()
    assert readings_mint_due().minted == 3  # the next probe finds the token: no restart
    assert control_get().chain_failures == 0
    assert_minted_exactly_once(chain_client(), minted + in_flight + waiting)


def test_a_pin_fixed_in_its_file_resumes_minting_without_a_restart_and_a_refused_one_is_not_retried(
    settings, localnet, tmp_path, softhsm
):
    use_chain(settings, localnet, tmp_path)
    rotate_to_hsm(settings, softhsm)
    readings = make_readings([make_meter()], 3)
    pin_file = tmp_path / "pin"
    restarted_with_a_pin_file(settings, softhsm, pin_file, "a-wrong-pin")

    for probe in ("refuses the PIN", "not tried again", "not tried again"):
        lift_pause()
        assert readings_mint_due().stopped == "chain_unavailable"
        control = control_get()
        assert control.chain_error_code == "signer_locked" and probe in control.chain_error
    assert {(r.status, r.attempts) for r in readings_of(readings)} == {("pending", 0)}
    assert MintBatch.objects.count() == 0

    pin_file.write_text(softhsm.pin + "\n")  # the runbook's fix; web and workers keep running
    lift_pause()
    assert readings_mint_due().minted == 3
    assert_minted_exactly_once(chain_client(), readings)
