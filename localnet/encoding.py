"""Accounts in the validator's ``UiAccount`` shape, for every encoding the account methods accept.

Written by hand rather than through ``solders.Account.to_json`` because the latter sends ``"space": null``
and knows neither ``dataSlice`` nor base58 nor ``jsonParsed``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import based58
from solders.account import Account
from solders.pubkey import Pubkey

from localnet.errors import INVALID_REQUEST, RpcError, invalid_params
from localnet.tokens import parsed_token_json

ACCOUNT_ENCODINGS = ("base58", "base64", "jsonParsed", "binary", "base64+zstd")
MAX_BASE58_BYTES = 128


def check_account_encoding(encoding: str) -> str:
    if encoding not in ACCOUNT_ENCODINGS:
        raise invalid_params(f"Invalid params: unknown variant `{encoding}`, expected one of {ACCOUNT_ENCODINGS}")
    if encoding == "base64+zstd":
        raise invalid_params("Invalid params: base64+zstd is not supported by localnet; use base64")
    return encoding


def sliced(data: bytes, data_slice: dict | None) -> bytes:
    if not data_slice:
        return data
    offset, length = data_slice.get("offset", 0), data_slice.get("length", 0)
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
        raise invalid_params("Invalid params: dataSlice needs non-negative integers offset and length")
    return data[offset : offset + length]


def encode_account(
    account: Account | None,
    encoding: str,
    data_slice: dict | None = None,
    decimals_of: Callable[[Pubkey], int | None] | None = None,
) -> dict | None:
    if account is None:
        return None
    data = account.data
    encoded: object = None
    if encoding == "jsonParsed" and decimals_of is not None and not data_slice:
        encoded = parsed_token_json(account, decimals_of)
    if encoded is None:
        data = sliced(data, data_slice)
        if encoding in ("base58", "binary"):
            if len(data) > MAX_BASE58_BYTES:
                raise RpcError(
                    INVALID_REQUEST,
                    f"Encoded binary (base 58) data should be less than {MAX_BASE58_BYTES} bytes, "
                    "please use Base64 encoding.",
                )
            text = based58.b58encode(data).decode()
            encoded = text if encoding == "binary" else [text, "base58"]
        else:  # base64, and jsonParsed for accounts no parser knows
            encoded = [base64.b64encode(data).decode(), "base64"]
    return {
        "lamports": account.lamports,
        "data": encoded,
        "owner": str(account.owner),
        "executable": account.executable,
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }
