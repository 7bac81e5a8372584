"""The certificate client survives a failed rebuild (an unusable certificate mint row, later deleted)."""

import dataclasses

import pytest
from solders.keypair import Keypair

from certificates.models import CertificateMint
from certificates.services.chain import certificate_client
from minting.chain.keys import create_keypair

pytestmark = pytest.mark.django_db


def test_an_empty_certificate_mint_row_fails_the_rebuild_and_once_deleted_the_client_works_again(settings, tmp_path):
    keypair_path = tmp_path / "authority.json"
    create_keypair(keypair_path)
    settings.CHAIN = dataclasses.replace(settings.CHAIN, keypair_path=keypair_path)
    mint = CertificateMint.objects.create(
        address=str(Keypair().pubkey()), token_program=str(Keypair().pubkey()), authority="a", rpc_url="x"
    )
    kept = certificate_client()
    empty = CertificateMint.objects.create(address="", token_program="", authority="", rpc_url="")

    with pytest.raises(ValueError, match="wrong size"):
        certificate_client()
    empty.delete()

    assert certificate_client() is kept
    assert str(kept.mint) == mint.address
