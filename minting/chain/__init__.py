"""The blockchain service: exact kWh conversion, packed and signed mint transactions, typed chain errors.

See docs/CHAIN.md for the strategies, the packing limits and the error taxonomy.
"""

from minting.chain.client import ChainClient, MintInfo
from minting.chain.conversion import Conversion, base_units_to_kwh, convert_kwh, kwh_to_base_units
from minting.chain.errors import (
    BlockhashExpired,
    ChainError,
    HistoryUnavailable,
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
    SupplyOverflow,
    TransactionFailed,
    TransactionTooLarge,
    TransientChainError,
    WrongAuthority,
    error_from_transaction_err,
)
from minting.chain.records import U64_MAX, Generation, InvalidGeneration, MintRequest, SignatureStatus, SignedMint

__all__ = [
    "U64_MAX",
    "BlockhashExpired",
    "ChainClient",
    "ChainError",
    "Conversion",
    "Generation",
    "HistoryUnavailable",
    "InsufficientFunds",
    "InvalidAccount",
    "InvalidGeneration",
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
    "SupplyOverflow",
    "TransactionFailed",
    "TransactionTooLarge",
    "TransientChainError",
    "WrongAuthority",
    "base_units_to_kwh",
    "convert_kwh",
    "error_from_transaction_err",
    "kwh_to_base_units",
]
