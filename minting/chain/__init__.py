"""The blockchain service: exact kWh conversion, packed and signed mint transactions, typed chain errors.

See docs/CHAIN.md for the strategies, the packing limits and the error taxonomy.
"""

from minting.chain.client import ChainClient, MintInfo
from minting.chain.conversion import Conversion, base_units_to_kwh, convert_kwh, kwh_to_base_units
from minting.chain.errors import (
    BlockhashExpired,
    ChainError,
    InsufficientFunds,
    InvalidAccount,
    InvalidMint,
    InvalidWallet,
    NodeBehind,
    NotInitialised,
    PermanentChainError,
    RpcBadResponse,
    RpcRejected,
    RpcTimeout,
    RpcUnavailable,
    TransactionFailed,
    TransactionTooLarge,
    TransientChainError,
    WrongAuthority,
    error_from_transaction_err,
)
from minting.chain.records import MintRequest, SignatureStatus, SignedMint

__all__ = [
    "BlockhashExpired",
    "ChainClient",
    "ChainError",
    "Conversion",
    "InsufficientFunds",
    "InvalidAccount",
    "InvalidMint",
    "InvalidWallet",
    "MintInfo",
    "MintRequest",
    "NodeBehind",
    "NotInitialised",
    "PermanentChainError",
    "RpcBadResponse",
    "RpcRejected",
    "RpcTimeout",
    "RpcUnavailable",
    "SignatureStatus",
    "SignedMint",
    "TransactionFailed",
    "TransactionTooLarge",
    "TransientChainError",
    "WrongAuthority",
    "base_units_to_kwh",
    "convert_kwh",
    "error_from_transaction_err",
    "kwh_to_base_units",
]
