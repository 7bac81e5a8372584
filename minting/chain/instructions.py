"""Instruction builders for the classic SPL path: ATA derivation, create-ATA-idempotent, MintToChecked,
SetAuthority, memo, compute budget, and the address lookup table program's create/extend (solders 0.26 has no
builders for those).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from solders.address_lookup_table_account import ID as LOOKUP_TABLE_PROGRAM_ID
from solders.address_lookup_table_account import derive_lookup_table_address
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

from minting.chain.errors import InvalidWallet

__all__ = [
    "ASSOCIATED_TOKEN_PROGRAM_ID",
    "LOOKUP_TABLE_PROGRAM_ID",
    "MEMO_PROGRAM_ID",
    "SYSTEM_PROGRAM_ID",
    "TOKEN_2022_PROGRAM_ID",
    "TOKEN_PROGRAM_ID",
]

_MINT_TO_CHECKED = 14  # spl-token TokenInstruction::MintToChecked
_SET_AUTHORITY = 6  # TokenInstruction::SetAuthority (spl-token and Token-2022)
# AuthorityType: MintTokens (both programs), PermanentDelegate (Token-2022 only).
MINT_TOKENS, PERMANENT_DELEGATE = 0, 8
_CREATE_IDEMPOTENT = 1  # spl-associated-token-account AssociatedTokenAccountInstruction::CreateIdempotent
_LOOKUP_CREATE, _LOOKUP_EXTEND = 0, 2  # ProgramInstruction variants (bincode: u32 little-endian tag)
_SYSTEM_PROGRAM_ADDRESS = str(SYSTEM_PROGRAM_ID)


def parse_wallet(address: object) -> Pubkey:
    """The wallet's public key; InvalidWallet unless ``address`` is a canonical base58 32-byte key."""
    if not isinstance(address, str):
        raise InvalidWallet(f"wallet address must be a base58 string, got {type(address).__name__}")
    try:
        key = Pubkey.from_string(address)
    except ValueError as exc:
        raise InvalidWallet(f"{address!r} is not a Solana address (base58, 32 bytes): {exc}") from None
    if str(key) != address or address == _SYSTEM_PROGRAM_ADDRESS:
        raise InvalidWallet(f"{address!r} is not a usable wallet address")
    return key


def associated_token_address(wallet: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM_ID) -> Pubkey:
    """The wallet's associated token account for ``mint`` (PDA of [wallet, token program, mint])."""
    return associated_token_address_and_bump(wallet, mint, token_program)[0]


def associated_token_address_and_bump(wallet: Pubkey, mint: Pubkey, token_program: Pubkey) -> tuple[Pubkey, int]:
    """The address and its bump seed: the program searches down from 255, paying for every miss."""
    return Pubkey.find_program_address([bytes(wallet), bytes(token_program), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID)


def create_associated_token_account_idempotent(
    *,
    payer: Pubkey,
    wallet: Pubkey,
    mint: Pubkey,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
    address: Pubkey | None = None,
) -> Instruction:
    """``address`` is the wallet's ATA when the caller already derived it (derivation costs ~25 us)."""
    address = address or associated_token_address(wallet, mint, token_program)
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM_ID,
        bytes([_CREATE_IDEMPOTENT]),
        [
            AccountMeta(payer, is_signer=True, is_writable=True),
            AccountMeta(address, is_signer=False, is_writable=True),
            AccountMeta(wallet, is_signer=False, is_writable=False),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
            AccountMeta(token_program, is_signer=False, is_writable=False),
        ],
    )


def mint_to_checked(
    *,
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
) -> Instruction:
    return Instruction(
        token_program,
        struct.pack("<BQB", _MINT_TO_CHECKED, amount, decimals),
        [
            AccountMeta(mint, is_signer=False, is_writable=True),
            AccountMeta(destination, is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=True, is_writable=False),
        ],
    )


def set_authority(*, account: Pubkey, current: Pubkey, new: Pubkey, kind: int, token_program: Pubkey) -> Instruction:
    """SetAuthority of ``kind`` on ``account`` to ``new`` (COption::Some), signed by ``current``."""
    return Instruction(
        token_program,
        bytes([_SET_AUTHORITY, kind, 1]) + bytes(new),
        [
            AccountMeta(account, is_signer=False, is_writable=True),
            AccountMeta(current, is_signer=True, is_writable=False),
        ],
    )


def memo(text: str) -> Instruction:
    """An SPL Memo (v2) with no signer accounts: it only makes the transaction, and its signature, unique."""
    return Instruction(MEMO_PROGRAM_ID, text.encode(), [])


def compute_budget(*, unit_limit: int, microlamports_per_unit: int) -> list[Instruction]:
    return [set_compute_unit_limit(unit_limit), set_compute_unit_price(microlamports_per_unit)]


def create_lookup_table(*, authority: Pubkey, payer: Pubkey, recent_slot: int) -> tuple[Instruction, Pubkey]:
    table, bump = derive_lookup_table_address(authority, recent_slot)
    data = struct.pack("<IQB", _LOOKUP_CREATE, recent_slot, bump)
    return Instruction(LOOKUP_TABLE_PROGRAM_ID, data, _lookup_accounts(table, authority, payer)), table


def extend_lookup_table(*, table: Pubkey, authority: Pubkey, payer: Pubkey, addresses: Sequence[Pubkey]) -> Instruction:
    data = struct.pack("<IQ", _LOOKUP_EXTEND, len(addresses)) + b"".join(bytes(a) for a in addresses)
    return Instruction(LOOKUP_TABLE_PROGRAM_ID, data, _lookup_accounts(table, authority, payer))


def _lookup_accounts(table: Pubkey, authority: Pubkey, payer: Pubkey) -> list[AccountMeta]:
    return [
        AccountMeta(table, is_signer=False, is_writable=True),
        AccountMeta(authority, is_signer=True, is_writable=False),
        AccountMeta(payer, is_signer=True, is_writable=True),
        AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
    ]
