"""The ledger file: the whole chain state, written atomically, read back at start.

Layout: a magic line, then named sections (``<H`` name length, name, ``<Q`` payload length, payload):
``meta`` (JSON: slot, block height, recent blockhashes, ...), ``accounts`` (pubkey, ``<I`` length, bincode
``Account``), ``signatures`` (the append-only ``SignatureHistory`` log), ``errors`` (JSON: failed signatures'
errors) and ``transactions`` (JSON: the archived recent transactions). Binary where the bulk is, so that a
few million signatures save in well under a second.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import based58
from solders.account import Account
from solders.hash import Hash
from solders.pubkey import Pubkey

from localnet.errors import error_from_ui, error_to_ui
from localnet.history import SignatureHistory, TransactionArchive, TransactionRecord
from localnet.state import DEFAULT_ARCHIVE_CAPACITY, LocalChain

MAGIC = b"GRIDTOKEN-LOCALNET-LEDGER 1\n"
_SECTION_NAME = struct.Struct("<H")
_SECTION_LENGTH = struct.Struct("<Q")
_ACCOUNT_LENGTH = struct.Struct("<I")


class LedgerError(Exception):
    """The file is not a ledger this version can read."""


@dataclass
class LedgerSnapshot:
    meta: dict
    accounts: list[tuple[Pubkey, Account]]
    signatures: bytes
    errors: dict[bytes, Any]
    transactions: list[tuple[bytes, TransactionRecord]]


def capture(chain: LocalChain) -> LedgerSnapshot:
    """A consistent copy of the chain, taken under its lock (cheap: the writing happens afterwards)."""
    with chain.lock:
        signatures, errors = chain.history.dump()
        chain.dirty = False
        return LedgerSnapshot(
            meta={
                "slot": chain.slot,
                "block_height": chain.block_height,
                "transaction_count": chain.transaction_count,
                "unix_time": chain.unix_time,
                "blockhash": str(chain.blockhash),
                "blockhash_heights": [[str(h), height] for h, height in chain.blockhash_heights.items()],
                "slot_hashes": [[slot, str(h)] for slot, h in chain.slot_hashes],
            },
            accounts=chain.persistent_accounts(),
            signatures=signatures,
            errors=errors,
            transactions=chain.archive.items(),
        )


def _record_to_json(signature: bytes, record: TransactionRecord) -> dict:
    return {
        "signature": based58.b58encode(signature).decode(),
        "slot": record.slot,
        "block_time": record.block_time,
        "raw": base64.b64encode(record.raw).decode(),
        "err": error_to_ui(record.err),
        "fee": record.fee,
        "pre_balances": record.pre_balances,
        "post_balances": record.post_balances,
        "logs": record.logs,
        "units_consumed": record.units_consumed,
        "loaded_writable": record.loaded_writable,
        "loaded_readonly": record.loaded_readonly,
        "return_data": None
        if record.return_data is None
        else [record.return_data[0], base64.b64encode(record.return_data[1]).decode()],
    }


def _record_from_json(item: dict) -> tuple[bytes, TransactionRecord]:
    return_data = item["return_data"]
    record = TransactionRecord(
        slot=item["slot"], block_time=item["block_time"], raw=base64.b64decode(item["raw"]),
        err=error_from_ui(item["err"]), fee=item["fee"], pre_balances=item["pre_balances"],
        post_balances=item["post_balances"], logs=item["logs"], units_consumed=item["units_consumed"],
        loaded_writable=item["loaded_writable"], loaded_readonly=item["loaded_readonly"],
        return_data=None if return_data is None else (return_data[0], base64.b64decode(return_data[1])),
    )  # fmt: skip
    return based58.b58decode(item["signature"].encode()), record


def write(path: Path, snapshot: LedgerSnapshot) -> None:
    """Write to a temporary file and rename it over ``path``, so a crash never leaves half a ledger."""
    accounts = bytearray()
    for pubkey, account in snapshot.accounts:
        encoded = bytes(account)
        accounts += bytes(pubkey) + _ACCOUNT_LENGTH.pack(len(encoded)) + encoded
    errors = {based58.b58encode(signature).decode(): error_to_ui(err) for signature, err in snapshot.errors.items()}
    transactions = [_record_to_json(signature, record) for signature, record in snapshot.transactions]
    sections = {
        "meta": json.dumps(snapshot.meta).encode(),
        "accounts": bytes(accounts),
        "signatures": snapshot.signatures,
        "errors": json.dumps(errors).encode(),
        "transactions": json.dumps(transactions).encode(),
    }
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(MAGIC)
        for name, payload in sections.items():
            file.write(_SECTION_NAME.pack(len(name)) + name.encode())
            file.write(_SECTION_LENGTH.pack(len(payload)))
            file.write(payload)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read(path: Path) -> LedgerSnapshot:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise LedgerError(f"{path} is not a localnet ledger (bad header)")
    sections: dict[str, bytes] = {}
    offset = len(MAGIC)
    try:
        while offset < len(data):
            (name_length,) = _SECTION_NAME.unpack_from(data, offset)
            offset += _SECTION_NAME.size
            name = data[offset : offset + name_length].decode()
            offset += name_length
            (length,) = _SECTION_LENGTH.unpack_from(data, offset)
            offset += _SECTION_LENGTH.size
            sections[name] = data[offset : offset + length]
            if len(sections[name]) != length:
                raise LedgerError(f"{path} is truncated in section {name}")
            offset += length
        accounts = []
        raw_accounts = sections["accounts"]
        position = 0
        while position < len(raw_accounts):
            pubkey = Pubkey.from_bytes(raw_accounts[position : position + 32])
            (length,) = _ACCOUNT_LENGTH.unpack_from(raw_accounts, position + 32)
            position += 32 + _ACCOUNT_LENGTH.size
            accounts.append((pubkey, Account.from_bytes(raw_accounts[position : position + length])))
            position += length
        errors = {
            based58.b58decode(signature.encode()): error_from_ui(err)
            for signature, err in json.loads(sections["errors"]).items()
        }
        transactions = [_record_from_json(item) for item in json.loads(sections["transactions"])]
        return LedgerSnapshot(json.loads(sections["meta"]), accounts, sections["signatures"], errors, transactions)
    except (KeyError, ValueError, struct.error) as error:
        raise LedgerError(f"{path} is damaged: {error}") from error


def restore(snapshot: LedgerSnapshot, *, archive_capacity: int = DEFAULT_ARCHIVE_CAPACITY) -> LocalChain:
    """A chain in the saved state: accounts set back into a fresh LiteSVM, history and clock as they were."""
    try:
        return _restore(snapshot, archive_capacity)
    except (KeyError, TypeError, ValueError) as error:
        raise LedgerError(f"the ledger's meta section is damaged: {error!r}") from error


def _restore(snapshot: LedgerSnapshot, archive_capacity: int) -> LocalChain:
    meta = snapshot.meta
    chain = LocalChain(archive_capacity=archive_capacity, genesis_hash=Hash.from_string(meta["blockhash"]))
    with chain.lock:
        chain.accounts.clear()
        for pubkey, account in snapshot.accounts:
            chain.svm.set_account(pubkey, account)
            chain.accounts.add(pubkey)
        chain.history = SignatureHistory.load(snapshot.signatures, snapshot.errors)
        chain.archive = TransactionArchive(archive_capacity)
        for signature, record in snapshot.transactions:
            chain.archive.add(signature, record)
        chain.slot = meta["slot"]
        chain.block_height = meta["block_height"]
        chain.transaction_count = meta["transaction_count"]
        chain.unix_time = meta["unix_time"]
        chain.blockhash_heights = {Hash.from_string(h): height for h, height in meta["blockhash_heights"]}
        chain.slot_hashes.clear()
        chain.slot_hashes.extend((slot, Hash.from_string(h)) for slot, h in meta["slot_hashes"])
        chain._apply_clock()
        chain.dirty = False
    return chain


def save(chain: LocalChain, path: Path) -> None:
    write(path, capture(chain))


def load_or_create(path: Path | None, *, archive_capacity: int = DEFAULT_ARCHIVE_CAPACITY) -> LocalChain:
    if path is not None and Path(path).exists():
        return restore(read(path), archive_capacity=archive_capacity)
    return LocalChain(archive_capacity=archive_capacity)
