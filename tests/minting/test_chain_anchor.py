"""The anchor strategy's instruction, byte for byte. The energy_token program binary is not available here, so
its instruction is checked exactly instead of executed (docs/CHAIN.md)."""

import dataclasses
import hashlib
import json
import struct
from pathlib import Path

import pytest
from anchorpy import Idl
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.transaction import VersionedTransaction

from minting.chain import (
    ChainClient,
    Generation,
    InvalidGeneration,
    InvalidMint,
    MintRequest,
    NotInitialised,
    WrongAuthority,
)
from minting.chain.anchor import EnergyTokenProgram, load_idl
from minting.chain.configured import client_from_settings
from minting.chain.instructions import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from minting.services.batching import chain_client

PROGRAM_ID = Pubkey.from_string("94G1r674LmRDmLN2UPjDFD8Eh7zT8JaSaxv9v68GyEur")
AUTHORITY = Keypair.from_seed(bytes([7]) * 32).pubkey()
REGISTRY = Keypair.from_seed(bytes([8]) * 32).pubkey()
VALIDATOR = Keypair.from_seed(bytes([9]) * 32).pubkey()
WALLET = Keypair.from_seed(bytes([10]) * 32).pubkey()
UPSTREAM_IDL = Path(__file__).resolve().parents[2] / "minting" / "idl" / "energy_token.upstream.json"
METER = bytes(range(1, 17))
WINDOW = 900_000 * 1_888_888  # 2023-11-14T21:20:00Z, a 15-minute boundary past 2^32 ms
MINT_GENERATION_DISCRIMINATOR = bytes([111, 104, 39, 191, 209, 179, 195, 66])


def program() -> EnergyTokenProgram:
    return EnergyTokenProgram(PROGRAM_ID, registry_authority=REGISTRY, rec_validator=VALIDATOR)


def test_the_discriminator_is_the_anchor_sighash_of_mint_tokens_direct():
    expected = [13, 246, 31, 237, 99, 19, 88, 226]
    assert list(hashlib.sha256(b"global:mint_tokens_direct").digest()[:8]) == expected
    instruction = program().mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=2_010_000_000)
    assert list(bytes(instruction.data)[:8]) == expected


def test_the_instruction_data_is_the_discriminator_then_the_amount_as_little_endian_u64():
    instruction = program().mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=2**64 - 1)
    assert bytes(instruction.data) == bytes([13, 246, 31, 237, 99, 19, 88, 226]) + b"\xff" * 8
    small = program().mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=258)
    assert bytes(small.data)[8:] == bytes([2, 1, 0, 0, 0, 0, 0, 0])


def test_the_accounts_are_in_the_programs_order_with_exact_signer_and_writable_flags():
    energy = program()
    token_info, _ = Pubkey.find_program_address([b"token_info_2022"], PROGRAM_ID)
    mint, _ = Pubkey.find_program_address([b"mint_2022"], PROGRAM_ID)
    user_account, _ = Pubkey.find_program_address(
        [bytes(WALLET), bytes(TOKEN_2022_PROGRAM_ID), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID
    )
    instruction = energy.mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=1)
    assert instruction.program_id == PROGRAM_ID
    assert [(m.pubkey, m.is_signer, m.is_writable) for m in instruction.accounts] == [
        (token_info, False, False),
        (mint, False, True),
        (user_account, False, True),
        (AUTHORITY, True, False),
        (REGISTRY, False, False),
        (VALIDATOR, True, False),
        (TOKEN_2022_PROGRAM_ID, False, False),
    ]
    assert (energy.token_info, energy.mint, energy.user_token_account(WALLET)) == (token_info, mint, user_account)


def test_the_repository_idl_is_the_legacy_format_anchorpy_reads():
    idl = load_idl()
    instruction, _ = idl.instructions
    assert instruction.name == "mintTokensDirect"
    assert [(a.name, a.is_mut, a.is_signer) for a in instruction.accounts] == [
        ("tokenInfo", False, False),
        ("mint", True, False),
        ("userTokenAccount", True, False),
        ("authority", False, True),
        ("registryAuthority", False, False),
        ("recValidator", False, True),
        ("tokenProgram", False, False),
    ]
    assert [(arg.name, str(arg.ty)) for arg in instruction.args] == [("amount", "IdlTypeSimple.U64")]


def upstream_mint_generation() -> dict:
    (instruction,) = [i for i in json.loads(UPSTREAM_IDL.read_text())["instructions"] if i["name"] == "mint_generation"]
    return instruction


def generation(**changes) -> dict:
    return {
        "wallet": WALLET,
        "authority": AUTHORITY,
        "meter_id": METER,
        "window_start_ms": WINDOW,
        "amount": 1,
        **changes,
    }


def test_the_mint_generation_discriminator_is_the_sighash_and_the_programs_idl_value():
    assert hashlib.sha256(b"global:mint_generation").digest()[:8] == MINT_GENERATION_DISCRIMINATOR
    assert bytes(upstream_mint_generation()["discriminator"]) == MINT_GENERATION_DISCRIMINATOR
    instruction = program().mint_generation(**generation())
    assert bytes(instruction.data)[:8] == MINT_GENERATION_DISCRIMINATOR


def test_the_mint_generation_data_is_meter_id_then_window_as_i64_then_amount_as_u64_little_endian():
    instruction = program().mint_generation(**generation(amount=258))
    assert bytes(instruction.data) == (
        MINT_GENERATION_DISCRIMINATOR + METER + bytes.fromhex("0033d9cf8b010000") + bytes([2, 1, 0, 0, 0, 0, 0, 0])
    )
    largest = program().mint_generation(**generation(window_start_ms=900_000, amount=2**64 - 1))
    assert bytes(largest.data)[24:] == bytes([0xA0, 0xBB, 0x0D, 0, 0, 0, 0, 0]) + b"\xff" * 8


def test_the_mint_generation_accounts_are_the_programs_eleven_with_exact_flags_and_pdas():
    energy = program()
    token_info, _ = Pubkey.find_program_address([b"token_info_2022"], PROGRAM_ID)
    mint, _ = Pubkey.find_program_address([b"mint_2022"], PROGRAM_ID)
    destination, _ = Pubkey.find_program_address(
        [bytes(WALLET), bytes(TOKEN_2022_PROGRAM_ID), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID
    )
    record, _ = Pubkey.find_program_address([b"gen_mint", METER, struct.pack("<q", WINDOW)], PROGRAM_ID)
    instruction = energy.mint_generation(**generation())
    assert instruction.program_id == PROGRAM_ID
    metas = [(m.pubkey, m.is_signer, m.is_writable) for m in instruction.accounts]
    assert metas == [
        (mint, False, True),
        (token_info, False, False),
        (destination, False, True),
        (WALLET, False, False),  # destination_owner
        (record, False, True),
        (AUTHORITY, True, False),
        (VALIDATOR, True, False),
        (AUTHORITY, True, True),  # payer: the authority pays the record's rent
        (TOKEN_2022_PROGRAM_ID, False, False),
        (ASSOCIATED_TOKEN_PROGRAM_ID, False, False),
        (SYSTEM_PROGRAM_ID, False, False),
    ]
    # The same flags as the program's own IDL, account by account.
    upstream = [(a.get("signer", False), a.get("writable", False)) for a in upstream_mint_generation()["accounts"]]
    assert [(signer, writable) for _, signer, writable in metas] == upstream
    # Another window of the same meter has its own record: a replay guard per (meter, window), not per meter.
    other = energy.mint_generation(**generation(window_start_ms=WINDOW + 900_000))
    assert other.accounts[4].pubkey != record
    assert energy.generation_record(METER, WINDOW) == record


def test_the_legacy_mint_generation_entry_matches_the_programs_new_format_idl():
    (legacy,) = [i for i in load_idl().instructions if i.name == "mintGeneration"]
    upstream = upstream_mint_generation()

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.title() for part in rest)

    assert [(a.name, a.is_mut, a.is_signer) for a in legacy.accounts] == [
        (camel(a["name"]), a.get("writable", False), a.get("signer", False)) for a in upstream["accounts"]
    ]
    assert [arg.name for arg in legacy.args] == [camel(arg["name"]) for arg in upstream["args"]]
    assert [str(arg.ty) for arg in legacy.args[1:]] == ["IdlTypeSimple.I64", "IdlTypeSimple.U64"]
    # anchorpy 0.21 cannot read the program's own IDL: that is why the legacy entry exists.
    with pytest.raises(Exception, match="IdlAccountItem"):
        Idl.from_json(UPSTREAM_IDL.read_text())


@pytest.mark.parametrize(
    "changes",
    [
        {"meter_id": METER[:15]},
        {"meter_id": METER + b"\x00"},
        {"meter_id": METER.hex()},
        {"window_start_ms": 0},  # the program requires window_start_ms > 0
        {"window_start_ms": -900_000},
        {"window_start_ms": WINDOW + 1},
        {"window_start_ms": WINDOW + 450_000},
        {"window_start_ms": (2**63 // 900_000 + 1) * 900_000},  # past i64
        {"window_start_ms": True},
        {"amount": 0},
        {"amount": -1},
        {"amount": 2**64},
        {"amount": True},
    ],
)
def test_mint_generation_refuses_what_the_program_would_refuse(changes):
    with pytest.raises(InvalidGeneration):
        program().mint_generation(**generation(**changes))
    assert issubclass(InvalidGeneration, ValueError)


def test_mint_generation_refuses_a_rec_validator_that_is_the_authority():
    energy = EnergyTokenProgram(PROGRAM_ID, registry_authority=REGISTRY, rec_validator=AUTHORITY)
    with pytest.raises(WrongAuthority) as caught:
        energy.mint_generation(**generation())
    assert caught.value.code == "rec_validator_is_authority" and caught.value.permanent
    # mint_tokens_direct has no such rule in the program, and is built as before.
    assert energy.mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=1).accounts[5].pubkey == AUTHORITY


def test_a_generation_is_validated_when_it_is_made():
    assert Generation(METER, 900_000).window_start_ms == 900_000
    with pytest.raises(InvalidGeneration):
        Generation(METER, 0)
    with pytest.raises(InvalidGeneration):
        Generation(METER[:8], WINDOW)
    with pytest.raises(TypeError):
        MintRequest(str(WALLET), 1, generation=(METER, WINDOW))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Generation(METER, WINDOW).window_start_ms = 0


def anchor_settings(settings, tmp_path, url, **changes):
    authority, validator = tmp_path / "authority.json", tmp_path / "validator.json"
    authority.write_text(json.dumps(list(bytes(Keypair.from_seed(bytes([7]) * 32)))))
    validator.write_text(json.dumps(list(bytes(Keypair.from_seed(bytes([9]) * 32)))))
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, mint_strategy="anchor")
    base = {
        "rpc_url": url, "keypair_path": authority, "energy_token_program_id": str(PROGRAM_ID),
        "rec_validator_keypair_path": validator,
    }  # fmt: skip
    settings.CHAIN = dataclasses.replace(settings.CHAIN, **{**base, **changes})


def test_the_anchor_strategy_builds_co_signed_mint_tokens_direct_transactions(settings, tmp_path, localnet):
    anchor_settings(settings, tmp_path, localnet.url)
    client = client_from_settings()
    # Without a separate registry authority configured, the platform authority is the registry's authority.
    energy = EnergyTokenProgram(PROGRAM_ID, registry_authority=AUTHORITY, rec_validator=VALIDATOR)
    assert (client.mint, client.token_program) == (energy.mint, TOKEN_2022_PROGRAM_ID)

    client.rpc.call("requestAirdrop", [str(AUTHORITY), 10**9])  # the fee payer must be able to pay
    signed = client.build_mints([MintRequest(str(WALLET), 5), MintRequest(str(WALLET), 7)], memo="anchor")

    (transaction,) = [VersionedTransaction.from_bytes(item.raw) for item in signed]
    message = transaction.message
    assert message.account_keys[:2] == [AUTHORITY, VALIDATOR]  # both sign
    assert message.header.num_required_signatures == 2 and transaction.verify_with_results() == [True, True]
    create, mint, memo = message.instructions
    assert message.account_keys[create.program_id_index] == ASSOCIATED_TOKEN_PROGRAM_ID
    assert message.account_keys[mint.program_id_index] == PROGRAM_ID
    expected = energy.mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=12)
    assert bytes(mint.data) == bytes(expected.data)
    assert [message.account_keys[i] for i in mint.accounts] == [m.pubkey for m in expected.accounts]
    assert bytes(memo.data) == b"anchor:0"
    client.close()


@pytest.mark.django_db
def test_the_pipeline_checks_the_anchor_programs_mint_before_minting_with_it(settings, tmp_path, localnet):
    """Like the SPL path's decimals check: here the mint is the program's PDA, read from the chain once."""
    anchor_settings(settings, tmp_path, localnet.url)
    with pytest.raises(InvalidMint, match="does not exist"):
        chain_client()  # the program (and so its mint) is not deployed on the local chain


@pytest.mark.parametrize("missing", ["energy_token_program_id", "rec_validator_keypair_path"])
def test_the_anchor_strategy_without_its_settings_is_not_initialised(settings, tmp_path, missing):
    anchor_settings(settings, tmp_path, "http://127.0.0.1:1", **{missing: None})
    with pytest.raises(NotInitialised) as caught:
        client_from_settings()
    assert caught.value.code == "anchor_not_configured" and caught.value.permanent


def anchor_client(settings, tmp_path, localnet) -> ChainClient:
    anchor_settings(settings, tmp_path, localnet.url)
    client = client_from_settings()
    client.rpc.call("requestAirdrop", [str(AUTHORITY), 10**9])  # the fee payer must be able to pay
    return client


def mints(signed) -> list[tuple[VersionedTransaction, list]]:
    """Per transaction: the transaction and its instructions' (program, data, accounts)."""
    result = []
    for item in signed:
        transaction = VersionedTransaction.from_bytes(item.raw)
        keys = transaction.message.account_keys
        result.append((transaction, [
            (keys[i.program_id_index], bytes(i.data), [keys[k] for k in i.accounts])
            for i in transaction.message.instructions
        ]))  # fmt: skip
    return result


def test_the_anchor_client_builds_one_mint_generation_per_request_with_a_generation(settings, tmp_path, localnet):
    client = anchor_client(settings, tmp_path, localnet)
    energy = EnergyTokenProgram(PROGRAM_ID, registry_authority=AUTHORITY, rec_validator=VALIDATOR)
    first, second = Generation(METER, WINDOW), Generation(METER, WINDOW + 900_000)
    requests = [
        MintRequest(str(WALLET), 5, key="a", generation=first),
        MintRequest(str(WALLET), 3, key="plain-1"),
        MintRequest(str(WALLET), 7, key="b", generation=second),
        MintRequest(str(WALLET), 4, key="plain-2"),
    ]
    signed = client.build_mints(requests, memo="gen")

    built = mints(signed)
    for transaction, _ in built:
        assert transaction.message.account_keys[:2] == [AUTHORITY, VALIDATOR]  # both sign
        assert transaction.message.header.num_required_signatures == 2
        assert transaction.verify_with_results() == [True, True]
    calls = [(data, accounts) for _, instructions in built for program_id, data, accounts in instructions
             if program_id == PROGRAM_ID]  # fmt: skip
    expected = [
        energy.mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=7),  # the two plain ones, merged
        energy.mint_generation(wallet=WALLET, authority=AUTHORITY, meter_id=METER, window_start_ms=WINDOW, amount=5),
        energy.mint_generation(
            wallet=WALLET, authority=AUTHORITY, meter_id=METER, window_start_ms=WINDOW + 900_000, amount=7
        ),
    ]
    assert calls == [(bytes(e.data), [m.pubkey for m in e.accounts]) for e in expected]
    assert sorted((r.key, r.generation) for item in signed for r in item.requests) == [
        ("a", first), ("b", second), ("plain-1", None), ("plain-2", None),
    ]  # fmt: skip
    # The wallet's token account does not exist yet: every transaction minting a generation to it also
    # creates it (idempotently), since the transactions may land in any order.
    destination = energy.user_token_account(WALLET)
    for _, instructions in built:
        programs = [program_id for program_id, _, _ in instructions]
        if PROGRAM_ID in programs:
            creates = [a for p, _, a in instructions if p == ASSOCIATED_TOKEN_PROGRAM_ID]
            assert creates and all(a[1] == destination for a in creates)
            assert programs.index(ASSOCIATED_TOKEN_PROGRAM_ID) < programs.index(PROGRAM_ID)
    client.close()


def test_every_transaction_minting_generations_to_a_new_wallet_creates_its_account(settings, tmp_path, localnet):
    """Transactions may land in any order: the one creating the token account cannot be the only one."""
    client = anchor_client(settings, tmp_path, localnet)
    energy = EnergyTokenProgram(PROGRAM_ID, registry_authority=AUTHORITY, rec_validator=VALIDATOR)
    destination = energy.user_token_account(WALLET)
    requests = [MintRequest(str(WALLET), 1, generation=Generation(METER, WINDOW + i * 900_000)) for i in range(16)]
    built = mints(client.build_mints(requests, memo="many"))
    assert len(built) > 1
    windows = []
    for _, instructions in built:
        programs = [program_id for program_id, _, _ in instructions]
        assert programs.count(PROGRAM_ID) >= 1
        creates = [accounts for p, _, accounts in instructions if p == ASSOCIATED_TOKEN_PROGRAM_ID]
        assert creates and all(accounts[1] == destination for accounts in creates)
        assert programs.index(ASSOCIATED_TOKEN_PROGRAM_ID) < programs.index(PROGRAM_ID)
        windows += [int.from_bytes(data[24:32], "little") for p, data, _ in instructions if p == PROGRAM_ID]
    assert sorted(windows) == [WINDOW + i * 900_000 for i in range(16)]  # each window once
    client.close()


def test_requests_without_a_generation_still_build_mint_tokens_direct(settings, tmp_path, localnet):
    client = anchor_client(settings, tmp_path, localnet)
    energy = EnergyTokenProgram(PROGRAM_ID, registry_authority=AUTHORITY, rec_validator=VALIDATOR)
    signed = client.build_mints([MintRequest(str(WALLET), 2**64 - 2), MintRequest(str(WALLET), 5)], memo="plain")
    calls = [data for _, instructions in mints(signed) for p, data, _ in instructions if p == PROGRAM_ID]
    # u64 still splits a wallet's total, into mint_tokens_direct instructions only.
    assert calls == [
        bytes(energy.mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=2**64 - 2).data),
        bytes(energy.mint_tokens_direct(wallet=WALLET, authority=AUTHORITY, amount=5).data),
    ]
    client.close()


def test_an_spl_client_mints_requests_with_a_generation_like_any_other(localnet):
    authority = Keypair.from_seed(bytes([7]) * 32)
    mint = Keypair.from_seed(bytes([11]) * 32).pubkey()
    client = ChainClient(rpc_url=localnet.url, authority=authority, mint=mint, decimals=9)
    client.rpc.call("requestAirdrop", [str(AUTHORITY), 10**9])
    requests = [
        MintRequest(str(WALLET), 5, generation=Generation(METER, WINDOW)),
        MintRequest(str(WALLET), 7, generation=Generation(METER, WINDOW + 900_000)),
    ]
    ((transaction, instructions),) = mints(client.build_mints(requests, memo="spl"))
    (mint_to,) = [(data, accounts) for p, data, accounts in instructions if p == TOKEN_PROGRAM_ID]
    # MintToChecked (14) of the merged 12 base units at 9 decimals: the SPL path has no per-window record.
    assert mint_to[0] == bytes([14]) + (12).to_bytes(8, "little") + bytes([9])
    assert transaction.message.header.num_required_signatures == 1
    client.close()


def test_the_anchor_strategy_refuses_a_rec_validator_that_is_the_authority(settings, tmp_path):
    anchor_settings(settings, tmp_path, "http://127.0.0.1:1")
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rec_validator_keypair_path=settings.CHAIN.keypair_path)
    with pytest.raises(WrongAuthority) as caught:
        client_from_settings()
    assert caught.value.code == "rec_validator_is_authority" and caught.value.permanent
    assert "REC_VALIDATOR_KEYPAIR_PATH" in caught.value.message
