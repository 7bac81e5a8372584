"""Helpers for the chain tests (no tests here): a funded authority, a fresh mint, wallets, solana-py reads."""

from __future__ import annotations

import functools

from solana.rpc.api import Client
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from spl.token.constants import MINT_LEN, TOKEN_PROGRAM_ID
from spl.token.instructions import InitializeMintParams, get_associated_token_address, initialize_mint

from minting.chain import ChainClient, SignedMint

SOL = 1_000_000_000


@functools.cache
def solana_client(url: str) -> Client:
    """One solana-py client per chain URL: building one (an httpx client with its TLS context) costs ~30 ms of
    CPU, and the balance checks read hundreds of accounts."""
    return Client(url)


def funded_keypair(url: str, lamports: int = 1000 * SOL) -> Keypair:
    keypair = Keypair()
    solana = solana_client(url)
    signature = solana.request_airdrop(keypair.pubkey(), lamports).value
    solana.confirm_transaction(signature)
    return keypair


def create_mint(client: ChainClient, *, decimals: int = 9, authority: Pubkey | None = None) -> Pubkey:
    """A new classic SPL mint paid by ``client``'s authority (mint authority ``authority`` or the same key)."""
    mint = Keypair()
    rent = solana_client(client.rpc_url).get_minimum_balance_for_rent_exemption(MINT_LEN).value
    client.execute(
        [
            create_account(
                CreateAccountParams(
                    from_pubkey=client.authority.pubkey(), to_pubkey=mint.pubkey(), lamports=rent, space=MINT_LEN,
                    owner=TOKEN_PROGRAM_ID,
                )
            ),
            initialize_mint(
                InitializeMintParams(
                    decimals=decimals, program_id=TOKEN_PROGRAM_ID, mint=mint.pubkey(),
                    mint_authority=authority or client.authority.pubkey(),
                )
            ),
        ],
        [mint],
    )  # fmt: skip
    return mint.pubkey()


def new_client(url: str, *, authority: Keypair | None = None, mint: Pubkey | None = None, **options) -> ChainClient:
    authority = authority or funded_keypair(url)
    client = ChainClient(rpc_url=url, authority=authority, mint=authority.pubkey(), decimals=9, **options)
    client.mint = mint or create_mint(client)
    return client


def wallets(count: int) -> list[str]:
    return [str(Keypair().pubkey()) for _ in range(count)]


def balance(url: str, mint: Pubkey, wallet: str) -> int:
    """The wallet's token balance read through solana-py (0 when its token account does not exist)."""
    solana = solana_client(url)
    account = get_associated_token_address(Pubkey.from_string(wallet), mint)
    if solana.get_account_info(account).value is None:
        return 0
    return int(solana.get_token_account_balance(account).value.amount)


def supply(url: str, mint: Pubkey) -> int:
    return int(solana_client(url).get_token_supply(mint).value.amount)


def land(client: ChainClient, signed: list[SignedMint]) -> None:
    """Send and confirm; every transaction must succeed."""
    outcomes = client.send_many(signed)
    assert outcomes == {item.signature: None for item in signed}
    for item in signed:
        assert client.confirm(item).err is None
