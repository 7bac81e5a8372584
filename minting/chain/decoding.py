"""Reading what the RPC returns: mint and token account data, signature statuses, send outcomes."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders.pubkey import Pubkey

from minting.chain.errors import ChainError, InvalidMint, RpcBadResponse
from minting.chain.instructions import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from minting.chain.records import SignatureStatus

MINT_ACCOUNT_SIZE = 82
TOKEN_PROGRAMS = (str(TOKEN_PROGRAM_ID), str(TOKEN_2022_PROGRAM_ID))


@dataclass(frozen=True)
class MintInfo:
    address: str
    token_program: str
    decimals: int
    supply: int
    mint_authority: str | None


def parse_mint(where: str, address: str, owner: str, data: bytes) -> MintInfo:
    """The mint in ``data`` (the spl-token Mint layout, shared by Token-2022); InvalidMint if it is not one."""
    if owner not in TOKEN_PROGRAMS or len(data) < MINT_ACCOUNT_SIZE:
        raise InvalidMint(f"{where} is not a token mint (owner {owner})")
    has_authority, authority, supply, decimals, initialised = struct.unpack_from("<I32sQB?", data)
    if not initialised:
        raise InvalidMint(f"the mint {where} is not initialised")
    mint_authority = str(Pubkey.from_bytes(authority)) if has_authority else None
    return MintInfo(address, owner, decimals, supply, mint_authority)


def token_amount(data: bytes) -> int:
    """The amount of a token account (the u64 after the mint and owner keys)."""
    return struct.unpack_from("<Q", data, 64)[0]


def rpc_value(result: object, method: str):
    if not isinstance(result, dict) or "value" not in result:
        raise RpcBadResponse(f"{method} returned no value: {result!r}")
    return result["value"]


def status_from_json(signature: str, status: dict) -> SignatureStatus:
    return SignatureStatus(
        signature=signature,
        slot=int(status.get("slot", 0)),
        err=status.get("err"),
        confirmation_status=status.get("confirmationStatus"),
        confirmations=status.get("confirmations"),
    )


def sent_outcome(signature: str, result: object) -> ChainError | None:
    """The outcome of one sendTransaction: None when the node took it (or had already processed it)."""
    if isinstance(result, ChainError):
        return None if result.err == "AlreadyProcessed" else result
    if result != signature:
        return RpcBadResponse(f"sendTransaction returned {result!r} for {signature}")
    return None
