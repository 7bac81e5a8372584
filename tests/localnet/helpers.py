"""Builders shared by the localnet tests: signed transactions, SPL mints, address lookup tables."""

from __future__ import annotations

import json
import struct
from typing import Any

import spl.token.instructions as spl
from solders.address_lookup_table_account import ID as LOOKUP_TABLE_PROGRAM_ID
from solders.address_lookup_table_account import AddressLookupTableAccount, derive_lookup_table_address
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import VersionedTransaction
from spl.token.constants import MINT_LEN, TOKEN_PROGRAM_ID

from localnet.rpc import Dispatcher
from localnet.state import LocalChain

SOL = 1_000_000_000


def signed(
    payer: Keypair,
    instructions: list[Instruction],
    blockhash: Hash,
    *signers: Keypair,
    lookup_tables: list[AddressLookupTableAccount] | None = None,
    legacy: bool = False,
) -> VersionedTransaction:
    if legacy:
        return VersionedTransaction(
            Message.new_with_blockhash(instructions, payer.pubkey(), blockhash), [payer, *signers]
        )
    message = MessageV0.try_compile(payer.pubkey(), instructions, lookup_tables or [], blockhash)
    return VersionedTransaction(message, [payer, *signers])


def pay(payer: Keypair, recipient: Pubkey, lamports: int) -> Instruction:
    return transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=recipient, lamports=lamports))


def create_mint_instructions(payer: Pubkey, mint: Pubkey, *, rent: int, decimals: int = 9) -> list[Instruction]:
    return [
        create_account(
            CreateAccountParams(
                from_pubkey=payer, to_pubkey=mint, lamports=rent, space=MINT_LEN, owner=TOKEN_PROGRAM_ID
            )
        ),
        spl.initialize_mint(
            spl.InitializeMintParams(decimals=decimals, program_id=TOKEN_PROGRAM_ID, mint=mint, mint_authority=payer)
        ),
    ]


def mint_to(mint: Pubkey, owner: Pubkey, authority: Pubkey, amount: int, decimals: int = 9) -> Instruction:
    return spl.mint_to_checked(
        spl.MintToCheckedParams(
            program_id=TOKEN_PROGRAM_ID, mint=mint, dest=spl.get_associated_token_address(owner, mint),
            mint_authority=authority, amount=amount, decimals=decimals,
        )
    )  # fmt: skip


def create_ata(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    return spl.create_idempotent_associated_token_account(payer, owner, mint)


def lookup_table_instructions(
    authority: Pubkey, recent_slot: int, addresses: list[Pubkey]
) -> tuple[Pubkey, list[Instruction]]:
    """CreateLookupTable + ExtendLookupTable (the address lookup table program's bincode layout)."""
    table, bump = derive_lookup_table_address(authority, recent_slot)
    metas = [
        AccountMeta(table, False, True),
        AccountMeta(authority, True, False),
        AccountMeta(authority, True, True),
        AccountMeta(SYSTEM_PROGRAM_ID, False, False),
    ]
    create = Instruction(LOOKUP_TABLE_PROGRAM_ID, struct.pack("<IQB", 0, recent_slot, bump), metas)
    extend_data = struct.pack("<IQ", 2, len(addresses)) + b"".join(bytes(address) for address in addresses)
    return table, [create, Instruction(LOOKUP_TABLE_PROGRAM_ID, extend_data, metas)]


class ChainKit:
    """A funded payer and a mint on an in-process ``LocalChain``."""

    def __init__(self, chain: LocalChain, *, decimals: int = 9) -> None:
        self.chain = chain
        self.payer = Keypair()
        self.mint = Keypair()
        self.decimals = decimals
        chain.request_airdrop(self.payer.pubkey(), 100 * SOL)
        rent = chain.minimum_balance_for_rent_exemption(MINT_LEN)
        self.send(*create_mint_instructions(self.payer.pubkey(), self.mint.pubkey(), rent=rent, decimals=decimals),
                  signers=[self.mint])  # fmt: skip

    def tx(self, *instructions: Instruction, signers: list[Keypair] | None = None, **options) -> VersionedTransaction:
        return signed(self.payer, list(instructions), self.chain.blockhash, *(signers or []), **options)

    def send(self, *instructions: Instruction, signers: list[Keypair] | None = None, preflight: bool = True) -> str:
        transaction = self.tx(*instructions, signers=signers)
        return self.chain.send_transaction(transaction, bytes(transaction), preflight=preflight)

    def mint_to(self, owner: Pubkey, amount: int) -> Instruction:
        return mint_to(self.mint.pubkey(), owner, self.payer.pubkey(), amount, self.decimals)

    def create_ata(self, owner: Pubkey) -> Instruction:
        return create_ata(self.payer.pubkey(), owner, self.mint.pubkey())

    def ata(self, owner: Pubkey) -> Pubkey:
        return spl.get_associated_token_address(owner, self.mint.pubkey())

    def token_balance(self, owner: Pubkey) -> int:
        account = self.chain.get_account(self.ata(owner))
        return int.from_bytes(account.data[64:72], "little") if account else 0

    def supply(self) -> int:
        return int.from_bytes(self.chain.get_account(self.mint.pubkey()).data[36:44], "little")


def call(dispatcher: Dispatcher, method: str, *params: Any) -> dict:
    """One JSON-RPC request through the dispatcher; the decoded response object."""
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}).encode()
    return json.loads(dispatcher.handle_body(body))
