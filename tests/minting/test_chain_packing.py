"""Packing arithmetic against solders' own serialisation (no chain needed: nothing is sent)."""

import pytest
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.transaction import VersionedTransaction

from minting.chain import InvalidWallet, MintRequest, TransactionTooLarge
from minting.chain import instructions as ix
from minting.chain.packing import MAX_ACCOUNT_LOCKS, PACKET_DATA_SIZE, Unit, compact_u16_size, pack

AUTHORITY = Keypair.from_seed(bytes(range(32)))
MINT = Keypair.from_seed(bytes(range(1, 33))).pubkey()
WALLETS = [Keypair.from_seed(bytes([i]) * 32).pubkey() for i in range(1, 201)]
MEMO = "gt:0b6f1c2e-8a8f-4a57-9d5e-5bd8a5f0e0aa"


def units(*, create: bool) -> list[Unit]:
    result = []
    for wallet in WALLETS:
        instructions = []
        if create:
            instructions.append(
                ix.create_associated_token_account_idempotent(payer=AUTHORITY.pubkey(), wallet=wallet, mint=MINT)
            )
        destination = ix.associated_token_address(wallet, MINT)
        instructions.append(
            ix.mint_to_checked(mint=MINT, destination=destination, authority=AUTHORITY.pubkey(), amount=7, decimals=9)
        )
        result.append(Unit(tuple(instructions), (MintRequest(str(wallet), 7),), 1))
    return result


def memo_for(index: int):
    return [ix.memo(f"{MEMO}:{index}")]


def serialised(draft, index: int, lookup=None) -> bytes:
    instructions = [i for unit in draft.units for i in unit.instructions] + memo_for(index)
    if lookup is not None:
        message = MessageV0.try_compile(AUTHORITY.pubkey(), instructions, [lookup], Hash.default())
    else:
        message = Message.new_with_blockhash(instructions, AUTHORITY.pubkey(), Hash.default())
    return bytes(VersionedTransaction(message, [AUTHORITY]))


def ata_table() -> AddressLookupTableAccount:
    addresses = [MINT] + [ix.associated_token_address(wallet, MINT) for wallet in WALLETS[:255]]
    return AddressLookupTableAccount(Keypair().pubkey(), addresses)


def assert_packed_tightly(drafts, all_units, lookup=None):
    """Every transaction's computed size is its real size, within limits, and the next unit would not fit."""
    position = 0
    for index, draft in enumerate(drafts):
        raw = serialised(draft, index, lookup)
        assert len(raw) == draft.size() <= PACKET_DATA_SIZE
        assert draft.account_count <= MAX_ACCOUNT_LOCKS
        position += len(draft.units)
        if index < len(drafts) - 1:
            grown = draft.copy()
            grown.add(all_units[position].instructions)
            assert grown.size() > PACKET_DATA_SIZE or grown.account_count > MAX_ACCOUNT_LOCKS
    assert position == len(all_units)


def test_legacy_transactions_carry_19_mint_to_checked_with_a_uuid_memo():
    all_units = units(create=False)
    drafts = pack(all_units, payer=AUTHORITY.pubkey(), fixed=memo_for)
    assert [len(d.units) for d in drafts] == [19] * 10 + [10]
    assert_packed_tightly(drafts, all_units)


def test_legacy_transactions_carry_9_create_and_mint_pairs():
    all_units = units(create=True)
    drafts = pack(all_units, payer=AUTHORITY.pubkey(), fixed=memo_for)
    assert {len(d.units) for d in drafts[:-1]} == {9}
    assert_packed_tightly(drafts, all_units)


def test_v0_transactions_over_a_lookup_table_carry_56_mints():
    all_units = units(create=False)
    lookup = ata_table()
    drafts = pack(all_units, payer=AUTHORITY.pubkey(), fixed=memo_for, lookup=lookup)
    assert [len(d.units) for d in drafts] == [56, 56, 56, 32]
    assert_packed_tightly(drafts, all_units, lookup)


def test_v0_packing_stops_at_the_64_account_lock_limit_when_bytes_would_allow_more():
    all_units = units(create=False)
    lookup = ata_table()
    drafts = pack(all_units, payer=AUTHORITY.pubkey(), fixed=lambda i: [ix.memo("m")], lookup=lookup, max_accounts=40)
    assert [d.account_count for d in drafts[:-1]] == [40] * (len(drafts) - 1)
    assert len(drafts[0].units) == 40 - 4  # payer, mint, token program, memo program


def test_v0_with_create_pairs_keeps_the_wallets_static_and_carries_15():
    all_units = units(create=True)
    lookup = ata_table()
    drafts = pack(all_units, payer=AUTHORITY.pubkey(), fixed=memo_for, lookup=lookup)
    assert {len(d.units) for d in drafts[:-1]} == {15}
    assert_packed_tightly(drafts, all_units, lookup)


def test_a_unit_too_large_for_any_transaction_is_refused():
    with pytest.raises(TransactionTooLarge) as caught:
        pack(units(create=False)[:1], payer=AUTHORITY.pubkey(), fixed=lambda i: [ix.memo("x" * 1200)])
    assert caught.value.permanent and caught.value.code == "transaction_too_large"


def test_the_compute_limit_splits_transactions():
    all_units = units(create=False)[:10]
    drafts = pack(all_units, payer=AUTHORITY.pubkey(), fixed=memo_for, max_compute_units=3)
    assert [len(d.units) for d in drafts] == [3, 3, 3, 1]


def test_nothing_to_pack_gives_no_transactions():
    assert pack([], payer=AUTHORITY.pubkey(), fixed=memo_for) == []


@pytest.mark.parametrize(("value", "size"), [(0, 1), (127, 1), (128, 2), (16383, 2), (16384, 3)])
def test_compact_u16_sizes_follow_the_wire_format(value, size):
    assert compact_u16_size(value) == size


@pytest.mark.parametrize(
    "address",
    ["", "abc", "0OIl" * 11, "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA ", "11111111111111111111111111111111", 42],
)
def test_malformed_wallet_addresses_are_permanent_invalid_wallet_errors(address):
    with pytest.raises(InvalidWallet) as caught:
        ix.parse_wallet(address)
    assert caught.value.permanent and caught.value.code == "invalid_wallet"


def test_the_associated_token_address_matches_spl_token_derivation():
    from spl.token.instructions import get_associated_token_address

    wallet = WALLETS[0]
    assert ix.associated_token_address(wallet, MINT) == get_associated_token_address(wallet, MINT)
    assert ix.associated_token_address(wallet, MINT, ix.TOKEN_2022_PROGRAM_ID) == get_associated_token_address(
        wallet, MINT, ix.TOKEN_2022_PROGRAM_ID
    )


def test_mint_to_checked_bytes_and_metas_are_the_token_programs_layout():
    destination = ix.associated_token_address(WALLETS[0], MINT)
    instruction = ix.mint_to_checked(
        mint=MINT, destination=destination, authority=AUTHORITY.pubkey(), amount=2_010_000_000, decimals=9
    )
    assert instruction.program_id == ix.TOKEN_PROGRAM_ID
    assert bytes(instruction.data) == bytes([14]) + (2_010_000_000).to_bytes(8, "little") + bytes([9])
    assert [(m.pubkey, m.is_signer, m.is_writable) for m in instruction.accounts] == [
        (MINT, False, True),
        (destination, False, True),
        (AUTHORITY.pubkey(), True, False),
    ]


def test_mint_requests_reject_non_integer_zero_and_oversized_amounts():
    with pytest.raises(TypeError):
        MintRequest(str(WALLETS[0]), 1.5)
    with pytest.raises(TypeError):
        MintRequest(str(WALLETS[0]), True)
    with pytest.raises(TypeError):
        MintRequest(WALLETS[0], 1)
    for amount in (0, -1, 2**64):
        with pytest.raises(ValueError):
            MintRequest(str(WALLETS[0]), amount)
    assert MintRequest(str(WALLETS[0]), 2**64 - 1).amount == 2**64 - 1
