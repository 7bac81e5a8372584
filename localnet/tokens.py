"""SPL Token and Token-2022 account layouts, read as the validator's ``jsonParsed`` and token methods do.

Only the base layouts are parsed (mint: 82 bytes, token account: 165 bytes); Token-2022 extensions after
them are not reported.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from solders.account import Account
from solders.account_decoder import UiTokenAmount
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

TOKEN_PROGRAM_NAMES = {TOKEN_PROGRAM_ID: "spl-token", TOKEN_2022_PROGRAM_ID: "spl-token-2022"}
MINT_SIZE = 82
ACCOUNT_SIZE = 165
# Token-2022 puts an account-type byte right after the 165-byte base when extensions follow.
ACCOUNT_TYPE_MINT = 1
ACCOUNT_TYPE_ACCOUNT = 2
ACCOUNT_STATES = {1: "initialized", 2: "frozen"}


@dataclass(frozen=True)
class MintState:
    mint_authority: Pubkey | None
    supply: int
    decimals: int
    freeze_authority: Pubkey | None


@dataclass(frozen=True)
class TokenAccountState:
    mint: Pubkey
    owner: Pubkey
    amount: int
    delegate: Pubkey | None
    state: int
    native_reserve: int | None
    delegated_amount: int
    close_authority: Pubkey | None


def _option_pubkey(data: bytes, offset: int) -> Pubkey | None:
    tag = struct.unpack_from("<I", data, offset)[0]
    return Pubkey.from_bytes(data[offset + 4 : offset + 36]) if tag == 1 else None


def _has_layout(account: Account, size: int, account_type: int) -> bool:
    data = account.data
    if account.owner == TOKEN_PROGRAM_ID:
        return len(data) == size
    if account.owner == TOKEN_2022_PROGRAM_ID:
        return len(data) == size or (len(data) > ACCOUNT_SIZE and data[ACCOUNT_SIZE] == account_type)
    return False


def parse_mint(account: Account | None) -> MintState | None:
    if account is None or not _has_layout(account, MINT_SIZE, ACCOUNT_TYPE_MINT):
        return None
    data = account.data
    supply, decimals, initialized = struct.unpack_from("<QBB", data, 36)
    if not initialized:
        return None
    return MintState(_option_pubkey(data, 0), supply, decimals, _option_pubkey(data, 46))


def parse_token_account(account: Account | None) -> TokenAccountState | None:
    if account is None or not _has_layout(account, ACCOUNT_SIZE, ACCOUNT_TYPE_ACCOUNT):
        return None
    data = account.data
    state = data[108]
    if state not in ACCOUNT_STATES:
        return None
    native_tag, native_reserve = struct.unpack_from("<IQ", data, 109)
    return TokenAccountState(
        mint=Pubkey.from_bytes(data[0:32]),
        owner=Pubkey.from_bytes(data[32:64]),
        amount=struct.unpack_from("<Q", data, 64)[0],
        delegate=_option_pubkey(data, 72),
        state=state,
        native_reserve=native_reserve if native_tag == 1 else None,
        delegated_amount=struct.unpack_from("<Q", data, 121)[0],
        close_authority=_option_pubkey(data, 129),
    )


def ui_amount_string(amount: int, decimals: int) -> str:
    """``amount / 10**decimals`` exactly, trailing zeros trimmed ("2.01", "0", "1000")."""
    if decimals == 0:
        return str(amount)
    digits = str(amount).rjust(decimals + 1, "0")
    whole, fraction = digits[:-decimals], digits[-decimals:].rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def ui_token_amount(amount: int, decimals: int) -> UiTokenAmount:
    # uiAmount is a float on the wire (as the validator computes it); uiAmountString and amount are exact.
    return UiTokenAmount(float(amount) / 10.0**decimals, decimals, str(amount), ui_amount_string(amount, decimals))


def ui_token_amount_json(amount: int, decimals: int) -> dict:
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": float(amount) / 10.0**decimals,
        "uiAmountString": ui_amount_string(amount, decimals),
    }


def parsed_token_json(account: Account, decimals_of: Callable[[Pubkey], int | None]) -> dict | None:
    """The ``jsonParsed`` data of a mint or token account; None for anything else (sent as base64 then)."""
    program = TOKEN_PROGRAM_NAMES.get(account.owner)
    if program is None:
        return None
    space = len(account.data)
    mint = parse_mint(account)
    if mint is not None:
        info = {
            "decimals": mint.decimals,
            "freezeAuthority": str(mint.freeze_authority) if mint.freeze_authority else None,
            "isInitialized": True,
            "mintAuthority": str(mint.mint_authority) if mint.mint_authority else None,
            "supply": str(mint.supply),
        }
        return {"program": program, "parsed": {"info": info, "type": "mint"}, "space": space}
    token = parse_token_account(account)
    if token is None:
        return None
    decimals = decimals_of(token.mint)
    if decimals is None:
        return None
    info: dict = {
        "isNative": token.native_reserve is not None,
        "mint": str(token.mint),
        "owner": str(token.owner),
        "state": ACCOUNT_STATES[token.state],
        "tokenAmount": ui_token_amount_json(token.amount, decimals),
    }
    if token.delegate is not None:
        info["delegate"] = str(token.delegate)
        info["delegatedAmount"] = ui_token_amount_json(token.delegated_amount, decimals)
    if token.native_reserve is not None:
        info["rentExemptReserve"] = ui_token_amount_json(token.native_reserve, decimals)
    if token.close_authority is not None:
        info["closeAuthority"] = str(token.close_authority)
    return {"program": program, "parsed": {"info": info, "type": "account"}, "space": space}
