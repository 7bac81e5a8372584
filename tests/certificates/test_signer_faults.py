"""Certificate chain operations (issue mints, transfer moves, claim and withdrawal burns) signed by a key in a
PKCS#11 token (SoftHSM2) that goes missing, refuses the PIN, or refuses to sign: they wait with the fault's stable
code, none is charged an attempt, and each lands exactly once when the token is back (the chain equals the
registry). One chain, one token, one certificate mint, walked through the three faults in turn."""

import dataclasses
import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from solders.transaction import VersionedTransaction

from certificates.models import CertificateBundle, ChainOperation
from certificates.services.lifecycle import bundle_claim, bundle_transfer, bundle_withdraw
from certificates.tasks import send_certificate_operations
from minting.models import MintBatch
from tests.certificates.helpers import HOUR0
from tests.certificates.test_chain import assert_chain_matches_registry, issue
from tests.conftest import pkcs11_reinitialize
from tests.factories import UserFactory
from tests.minting.test_signer import set_may_sign, token_plugged_back, token_unplugged

pytestmark = pytest.mark.django_db


def command(name: str, *args) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def assert_waiting_uncharged(code: str) -> None:
    """A send task met the fault: every operation still pending with no attempt used, no batch signed for it."""
    batches = MintBatch.objects.count()
    result = send_certificate_operations()
    assert result["code"] == code, result
    pending = ChainOperation.objects.exclude(status="confirmed")
    assert pending and {(op.status, op.attempts, op.batch_id) for op in pending} == {("pending", 0, None)}
    assert MintBatch.objects.count() == batches


def assert_all_sent() -> None:
    result = send_certificate_operations()
    assert result["claimed"] == result["confirmed"] > 0, result
    assert_chain_matches_registry()


def test_certificate_operations_wait_out_a_missing_a_locked_and_a_refusing_token_and_land_exactly_once(
    settings, localnet, tmp_path, softhsm
):
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin)
    hsm = dataclasses.replace(softhsm, pin_file=pin_file)
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=localnet.url, energy_token_mint=None, signer=hsm)
    address = command("signer_keygen").strip()
    command("chain_init", "--new-mint")  # the HSM key funded on the local chain, the energy mint's authority
    assert "certificate mint" in command("certificates_chain_init", "--new-mint")
    issue(devices=2, hours=1)

    # 1. Unplugged under the running worker, before anything was minted.
    aside = token_unplugged(hsm)
    assert_waiting_uncharged("signer_token_missing")
    token_plugged_back(aside)
    assert_all_sent()

    # 2. A transfer and a claim (a burn) while the restarted worker's PIN file holds a wrong PIN.
    bundle, other = CertificateBundle.objects.select_related("holder").filter(status="active")[:2]
    bundle_transfer(bundle_id=bundle.id, holder=bundle.holder, recipient=UserFactory(), quantity_wh=100)
    bundle_claim(bundle_id=other.id, holder=other.holder, beneficiary="Acme GmbH", consumption_start=HOUR0,
                 consumption_end=HOUR0 + timedelta(hours=1))  # fmt: skip
    pin_file.write_text("a-wrong-pin")
    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=dataclasses.replace(hsm, pin="restarted"))
    pkcs11_reinitialize(hsm.module)
    assert_waiting_uncharged("signer_locked")
    with pytest.raises(CommandError, match=r"^signer_locked: "):
        command("certificates_chain_init")
    pin_file.write_text(softhsm.pin)  # fixed in the file: no restart
    assert_all_sent()

    # 3. A withdrawal (a burn by the permanent delegate) while the token refuses the key's signatures.
    withdrawn = CertificateBundle.objects.filter(status="active").first()
    bundle_withdraw(bundle_id=withdrawn.id, actor="op", reason="signer fault test")
    set_may_sign(hsm, "authority", False)
    assert_waiting_uncharged("signer_refused")
    set_may_sign(hsm, "authority", True)
    assert_all_sent()

    operations = ChainOperation.objects.select_related("batch")
    assert {op.kind for op in operations} == {"issue", "transfer", "burn"}
    assert {op.attempts for op in operations} == {0} and MintBatch.objects.count() == len(operations)
    for op in operations:  # each signed once, by the HSM key
        assert str(VersionedTransaction.from_bytes(bytes(op.batch.raw_transaction)).message.account_keys[0]) == address
