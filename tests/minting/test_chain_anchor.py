"""The anchor strategy's instruction, byte for byte. The energy_token program binary is not available here, so
its instruction is checked exactly instead of executed (docs/CHAIN.md)."""

import dataclasses
import hashlib
import json

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from minting.chain import ChainClient, InvalidMint, MintRequest, NotInitialised
from minting.chain.anchor import EnergyTokenProgram, load_idl
from minting.chain.instructions import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID
from minting.services import chain_client

PROGRAM_ID = Pubkey.from_string("94G1r674LmRDmLN2UPjDFD8Eh7zT8JaSaxv9v68GyEur")
AUTHORITY = Keypair.from_seed(bytes([7]) * 32).pubkey()
REGISTRY = Keypair.from_seed(bytes([8]) * 32).pubkey()
VALIDATOR = Keypair.from_seed(bytes([9]) * 32).pubkey()
WALLET = Keypair.from_seed(bytes([10]) * 32).pubkey()


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
    (instruction,) = idl.instructions
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
    client = ChainClient.from_settings()
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
        ChainClient.from_settings()
    assert caught.value.code == "anchor_not_configured" and caught.value.permanent
