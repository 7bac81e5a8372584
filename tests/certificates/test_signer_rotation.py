"""The certificate mint's authorities handed from a keypair file to an HSM key (SoftHSM2) on the local chain:
certificates issued before and after, and a withdrawal burning pre-rotation tokens as the new permanent delegate."""

import dataclasses
import io

import pytest
from django.core.management import call_command
from solders.pubkey import Pubkey

from certificates.models import CertificateBundle, CertificateMint
from certificates.services.chain import certificate_client, operations_drain
from certificates.services.lifecycle import bundle_withdraw
from tests.certificates.test_chain import assert_chain_matches_registry, issue
from tests.minting.pipeline_harness import use_chain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


def command(name: str, *args) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def test_certificates_are_issued_and_withdrawn_with_the_hsm_key_after_the_authorities_move_to_it(
    settings, localnet, tmp_path, softhsm
):
    use_chain(settings, localnet, tmp_path)
    command("certificates_chain_init", "--new-mint")
    before = issue(devices=2, hours=1)
    assert operations_drain().confirmed == len(before) == 2

    file_key = settings.CHAIN
    settings.CHAIN = dataclasses.replace(file_key, signer=softhsm)
    address = command("signer_keygen").strip()
    settings.CHAIN = file_key
    command("mint_authority_set", address)
    assert f"is now {address}" in command("certificates_authority_set", address)
    assert "nothing to do" in command("certificates_authority_set", address)
    settings.CHAIN = dataclasses.replace(file_key, signer=softhsm)
    command("chain_init")  # funds the HSM key, now the fee payer, on the local chain

    client = certificate_client()
    assert str(client.payer) == address == client.verify_mint().mint_authority
    assert CertificateMint.objects.get().authority == address
    assert bytes(Pubkey.from_string(address)) in client.account_data(client.mint)[1][170:]  # PermanentDelegate
    new = len(issue(devices=1, hours=1)) - len(before)  # (issue() returns every issued interval so far)
    withdrawn = CertificateBundle.objects.filter(issuance__in=before).first()
    bundle_withdraw(bundle_id=withdrawn.id, actor="op", reason="rotation test")  # a burn by the new delegate
    result = operations_drain()
    assert (new, result.claimed, result.confirmed) == (1, 2, 2)
    assert_chain_matches_registry()
