"""The process's chain client survives a failed rebuild: the next call after the cause is gone succeeds."""

import dataclasses

import pytest
from solders.keypair import Keypair

from minting.chain import PermanentChainError
from minting.chain.instructions import TOKEN_PROGRAM_ID
from minting.chain.keys import create_keypair
from minting.models import TokenMint
from minting.services.batching import chain_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def configured(settings, tmp_path):
    """A recorded mint and an authority keypair: all a client needs to be built (it connects lazily)."""
    keypair_path = tmp_path / "authority.json"
    create_keypair(keypair_path)
    settings.CHAIN = dataclasses.replace(settings.CHAIN, keypair_path=keypair_path)
    return TokenMint.objects.create(
        address=str(Keypair().pubkey()),
        decimals=settings.TOKENIZATION.decimals,
        token_program=str(TOKEN_PROGRAM_ID),
        rpc_url="x",
    )


def test_a_mint_row_that_cannot_be_used_fails_the_rebuild_and_leaves_the_client_usable(configured, settings):
    kept = chain_client()
    wrong = TokenMint.objects.create(
        address=str(Keypair().pubkey()),
        decimals=settings.TOKENIZATION.decimals + 1,
        token_program=str(TOKEN_PROGRAM_ID),
        rpc_url="x",
    )

    with pytest.raises(PermanentChainError, match="decimals"):
        chain_client()
    wrong.delete()

    assert chain_client() is kept
    assert str(kept.mint) == configured.address


def test_a_keypair_that_cannot_be_read_fails_the_rebuild_and_the_next_call_builds_once_it_is_back(
    configured, settings, tmp_path
):
    kept = chain_client()
    moved = tmp_path / "moved.json"
    settings.CHAIN = dataclasses.replace(settings.CHAIN, keypair_path=moved)

    with pytest.raises(Exception, match="no keypair"):
        chain_client()
    (tmp_path / "authority.json").rename(moved)

    rebuilt = chain_client()
    assert rebuilt is not kept and rebuilt.payer == kept.payer
