"""The signing interface against a real PKCS#11 token (SoftHSM2, one per test) and the keypair file backend."""

import dataclasses
import io
import os
from pathlib import Path

import pkcs11
import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pkcs11 import Attribute, KeyType, ObjectClass, TokenFlag
from pkcs11.exceptions import AttributeSensitive
from pkcs11.util.ec import encode_named_curve_parameters
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from minting.chain import MintRequest
from minting.chain.configured import client_from_settings
from minting.chain.errors import SignerUnavailable
from minting.chain.signer import ED25519_OID, Pkcs11Signer, pkcs11_keygen, sign_transaction
from tests.conftest import pkcs11_reinitialize
from tests.minting.test_chain_anchor import PROGRAM_ID, WALLET


def token_session(config, *, login: bool):
    """A session of the test's own. Log in only while no signer is: PKCS#11 login state is the process's, so a
    second login fails, and closing a logged-in session logs the signers' session out too."""
    token = pkcs11.lib(str(config.module)).get_token(token_label=config.token_label)
    return token.open(user_pin=config.pin if login else None, rw=True)


def import_key(config, keypair: Keypair, label: str) -> None:
    """Put a keypair file's key into the token (test only: real keys are generated inside it), so the two
    backends can be compared signature for signature."""
    common = {
        Attribute.KEY_TYPE: KeyType.EC_EDWARDS, Attribute.LABEL: label, Attribute.TOKEN: True,
        Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID),
    }  # fmt: skip
    with token_session(config, login=True) as session:
        session.create_object({**common, Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.SIGN: True,
                               Attribute.VALUE: bytes(keypair)[:32]})  # fmt: skip
        session.create_object({**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                               Attribute.EC_POINT: b"\x04\x20" + bytes(keypair.pubkey())})  # fmt: skip


def messages(payer):
    instruction = transfer(TransferParams(from_pubkey=payer, to_pubkey=Keypair().pubkey(), lamports=1))
    blockhash = Hash.new_unique()
    return [
        Message.new_with_blockhash([instruction], payer, blockhash),
        MessageV0.try_compile(payer, [instruction], [], blockhash),
    ]


def test_the_hsm_signs_exactly_what_the_keypair_file_signs(softhsm):
    keypair = Keypair()
    import_key(softhsm, keypair, "imported")
    signer = Pkcs11Signer(softhsm, "imported")

    assert signer.pubkey() == keypair.pubkey()
    for data in (b"", b"x", bytes(range(256)) * 5):
        assert signer.sign_message(data) == keypair.sign_message(data)  # Ed25519 is deterministic
    for message in messages(keypair.pubkey()):
        from_hsm = sign_transaction(message, [signer])
        assert bytes(from_hsm) == bytes(sign_transaction(message, [keypair]))
        assert bytes(from_hsm) == bytes(VersionedTransaction(message, [keypair]))  # solders' own signing
        assert from_hsm.verify_with_results() == [True]


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=1232))
def test_for_any_message_the_hsm_signature_is_the_keypair_files(softhsm, data):
    keypair = Keypair.from_seed(bytes(range(32)))
    if not list(_labelled(softhsm, "seeded")):  # one import for every example (the fixture is per test)
        import_key(softhsm, keypair, "seeded")
    signature = Pkcs11Signer(softhsm, "seeded").sign_message(data)
    assert signature == keypair.sign_message(data) and signature.verify(keypair.pubkey(), data)


def _labelled(config, label: str):
    with token_session(config, login=False) as session:
        return list(session.get_objects({Attribute.LABEL: label}))


def test_a_transaction_is_signed_by_each_required_signer_in_the_message_order(softhsm):
    pkcs11_keygen(softhsm, "authority")
    hsm, file_key = Pkcs11Signer(softhsm, "authority"), Keypair()
    instruction = transfer(TransferParams(from_pubkey=file_key.pubkey(), to_pubkey=Keypair().pubkey(), lamports=1))
    message = Message.new_with_blockhash([instruction], hsm.pubkey(), Hash.new_unique())

    signed = sign_transaction(message, [file_key, hsm])  # given in another order than the message's

    assert signed.verify_with_results() == [True, True]
    assert bytes(signed) == bytes(VersionedTransaction.populate(message, [
        hsm.sign_message(bytes(message)), file_key.sign_message(bytes(message))
    ]))  # fmt: skip
    with pytest.raises(ValueError, match=str(file_key.pubkey())):
        sign_transaction(message, [hsm])


def test_signer_keygen_makes_a_non_extractable_key_inside_the_token_and_prints_its_address(softhsm, settings):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, signer=softhsm)
    out = io.StringIO()

    call_command("signer_keygen", stdout=out)

    address = out.getvalue().strip()
    signer = Pkcs11Signer(softhsm, "authority")
    assert str(signer.pubkey()) == address
    assert softhsm.pin not in out.getvalue()
    with token_session(softhsm, login=False) as session:  # the signer's login serves it
        private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label="authority")
        assert private[Attribute.EXTRACTABLE] is False and private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.SENSITIVE] is True and private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.TOKEN] is True and private[Attribute.SIGN] is True
        assert private[Attribute.DERIVE] is False and private[Attribute.DECRYPT] is False
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]
    assert signer.sign_message(b"m").verify(signer.pubkey(), b"m")

    with pytest.raises(CommandError, match="already holds a key with this label"):
        call_command("signer_keygen", stdout=io.StringIO())
    second = io.StringIO()
    call_command("signer_keygen", "--label", "rec-validator", stdout=second)
    assert second.getvalue().strip() not in ("", address)


def test_signer_keygen_with_the_file_backend_says_what_to_configure():
    with pytest.raises(CommandError, match="SIGNER_BACKEND=pkcs11"):
        call_command("signer_keygen", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("changes", "code", "hint"),
    [
        ({"token_label": "no-such-token"}, "signer_token_missing", "is not present"),
        ({"pin": "a-wrong-pin"}, "signer_locked", "refuses the PIN"),
        ({"key_label": "no-such-key"}, "signer_key_missing", "signer_keygen"),
    ],
)
def test_a_missing_token_a_refused_pin_or_a_missing_key_is_a_signer_fault_that_never_shows_the_pin(
    softhsm, changes, code, hint
):
    pkcs11_keygen(softhsm, "authority")
    pkcs11_reinitialize(softhsm.module)  # a fresh process: nobody logged in yet

    signer = Pkcs11Signer(dataclasses.replace(softhsm, **changes), changes.get("key_label", "authority"))
    with pytest.raises(SignerUnavailable) as caught:
        signer.pubkey()

    assert caught.value.code == code and hint in caught.value.message
    assert not caught.value.permanent  # minting probes again with back-off
    assert softhsm.pin not in caught.value.message and "a-wrong-pin" not in caught.value.message


def set_may_sign(config, label: str, allowed: bool) -> None:
    """What an HSM administrator revoking (or restoring) the key's sign permission does."""
    with token_session(config, login=False) as session:
        key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label=label)
        key[Attribute.SIGN] = allowed


def test_a_token_that_refuses_to_sign_is_a_signer_fault_and_signing_resumes_once_it_allows_it(softhsm):
    pkcs11_keygen(softhsm, "authority")
    signer = Pkcs11Signer(softhsm, "authority")
    set_may_sign(softhsm, "authority", False)

    with pytest.raises(SignerUnavailable) as caught:
        signer.sign_message(b"m")
    assert caught.value.code == "signer_refused"
    with pytest.raises(SignerUnavailable, match="may not sign") as fresh:
        Pkcs11Signer(softhsm, "authority").sign_message(b"m")
    assert fresh.value.code == "signer_refused"

    set_may_sign(softhsm, "authority", True)
    assert signer.sign_message(b"m").verify(signer.pubkey(), b"m")


def test_a_session_lost_with_the_token_is_opened_again_on_the_next_signature(softhsm):
    pkcs11_keygen(softhsm, "authority")
    signer = Pkcs11Signer(softhsm, "authority")

    pkcs11_reinitialize(softhsm.module)  # every session handle of the process is gone

    assert signer.sign_message(b"m").verify(signer.pubkey(), b"m")


def test_a_signer_never_shows_its_pin(softhsm):
    pkcs11_keygen(softhsm, "authority")
    assert softhsm.pin not in repr(softhsm)
    assert softhsm.pin not in repr(Pkcs11Signer(softhsm, "authority"))


def test_the_anchor_strategy_co_signs_with_a_rec_validator_key_in_the_token_or_says_the_signer_fault(
    settings, localnet, softhsm
):
    authority, validator = pkcs11_keygen(softhsm, "authority"), pkcs11_keygen(softhsm, "rec-validator")
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, mint_strategy="anchor")
    settings.CHAIN = dataclasses.replace(
        settings.CHAIN, rpc_url=localnet.url, energy_token_program_id=str(PROGRAM_ID), rec_validator_keypair_path=None,
        signer=dataclasses.replace(softhsm, rec_validator_key_label="rec-validator"),
    )  # fmt: skip
    client = client_from_settings()
    client.rpc.call("requestAirdrop", [str(authority), 10**9])  # the fee payer must be able to pay

    (signed,) = client.build_mints([MintRequest(str(WALLET), 5)], memo="anchor")

    transaction = VersionedTransaction.from_bytes(signed.raw)
    assert transaction.message.account_keys[:2] == [authority, validator]
    assert transaction.verify_with_results() == [True, True]

    set_may_sign(softhsm, "rec-validator", False)
    with pytest.raises(SignerUnavailable) as refused:
        client.build_mints([MintRequest(str(WALLET), 5)], memo="anchor")
    assert refused.value.code == "signer_refused" and "rec-validator" in refused.value.message
    set_may_sign(softhsm, "rec-validator", True)
    client.close()
    aside = token_unplugged(softhsm)
    pkcs11_reinitialize(softhsm.module)  # a worker started while the HSM is unplugged
    with pytest.raises(SignerUnavailable) as missing:
        client_from_settings()  # the program's accounts need both addresses
    assert missing.value.code == "signer_token_missing"
    token_plugged_back(aside)
    client = client_from_settings()
    (signed,) = client.build_mints([MintRequest(str(WALLET), 5)], memo="anchor again")
    assert VersionedTransaction.from_bytes(signed.raw).verify_with_results() == [True, True]
    client.close()


def token_unplugged(config) -> Path:
    """What unplugging the HSM is to SoftHSM2: its token directory gone (moved aside, kept for the return)."""
    tokens = Path(os.environ["SOFTHSM2_CONF"]).parent / "softhsm-tokens"
    aside = tokens.with_name("softhsm-tokens.unplugged")
    tokens.rename(aside)
    tokens.mkdir()
    return aside


def token_plugged_back(aside: Path) -> None:
    tokens = aside.with_name("softhsm-tokens")
    tokens.rmdir()
    aside.rename(tokens)


def test_a_signer_built_while_the_token_is_missing_reads_its_address_once_the_token_is_back(softhsm):
    address = pkcs11_keygen(softhsm, "authority")
    aside = token_unplugged(softhsm)
    pkcs11_reinitialize(softhsm.module)  # a process started while the HSM is unplugged

    signer = Pkcs11Signer(softhsm, "authority")  # builds: nothing asks the token yet

    for ask in (signer.pubkey, lambda: signer.sign_message(b"m")):
        with pytest.raises(SignerUnavailable) as caught:
            ask()
        assert caught.value.code == "signer_token_missing"
    token_plugged_back(aside)
    assert signer.pubkey() == address  # the library looks for the token again: no restart
    assert signer.sign_message(b"m").verify(address, b"m")


def test_a_token_unplugged_under_a_signing_process_is_missing_and_signs_again_once_back(softhsm):
    pkcs11_keygen(softhsm, "authority")
    signer = Pkcs11Signer(softhsm, "authority")
    assert signer.sign_message(b"before").verify(signer.pubkey(), b"before")
    aside = token_unplugged(softhsm)

    with pytest.raises(SignerUnavailable) as caught:
        signer.sign_message(b"m")
    assert caught.value.code == "signer_token_missing"  # not signer_refused: the handles died with the token

    token_plugged_back(aside)
    assert signer.sign_message(b"after").verify(signer.pubkey(), b"after")


def pin_count_low(config) -> bool:
    """The token's own record of a wrong PIN since the last good login (CKF_USER_PIN_COUNT_LOW): how a test sees
    whether a login was tried."""
    token = pkcs11.lib(str(config.module)).get_token(token_label=config.token_label)
    return bool(token.flags & TokenFlag.USER_PIN_COUNT_LOW)


def good_login(config) -> None:
    """A correct login and logout, which clears the token's wrong-PIN record (nobody else is logged in)."""
    token_session(config, login=True).close()
    assert not pin_count_low(config)


def test_a_refused_pin_is_never_tried_again_and_a_pin_file_is_read_again_once_it_changes(softhsm, tmp_path):
    pkcs11_keygen(softhsm, "authority")
    pin_file = tmp_path / "pin"
    pin_file.write_text("a-wrong-pin\n")
    from_file = dataclasses.replace(softhsm, pin="a-wrong-pin", pin_file=pin_file)
    pkcs11_reinitialize(softhsm.module)  # a fresh process, nobody logged in

    def refused(signer) -> str:
        with pytest.raises(SignerUnavailable) as caught:
            signer.pubkey()
        assert caught.value.code == "signer_locked" and "a-wrong-pin" not in caught.value.message
        return caught.value.message

    signer = Pkcs11Signer(from_file, "authority")
    assert "refuses the PIN" in refused(signer) and pin_count_low(softhsm)
    good_login(softhsm)
    for _ in range(3):  # every probe of a paused pipeline
        assert "not tried again" in refused(signer) and str(pin_file) in refused(signer)
    assert not pin_count_low(softhsm)  # the token saw no second wrong PIN

    pin_file.write_text("another-wrong-pin\n")  # a changed file is tried, once
    assert "refuses the PIN" in refused(signer) and pin_count_low(softhsm)
    good_login(softhsm)
    assert "not tried again" in refused(signer) and not pin_count_low(softhsm)

    pin_file.unlink()  # a secret being remounted
    assert "cannot be read" in refused(signer) and not pin_count_low(softhsm)
    pin_file.write_text(softhsm.pin + "\n")  # the operator's fix: no restart
    assert signer.sign_message(b"m").verify(signer.pubkey(), b"m")

    pkcs11_reinitialize(softhsm.module)  # a restart
    from_environment = dataclasses.replace(softhsm, pin="a-wrong-pin")  # SIGNER_PKCS11_PIN: fixed until a restart
    assert "refuses the PIN" in refused(Pkcs11Signer(from_environment, "authority"))
    good_login(softhsm)
    assert "SIGNER_PKCS11_PIN and restart" in refused(Pkcs11Signer(from_environment, "authority"))
    assert not pin_count_low(softhsm)
    assert Pkcs11Signer(softhsm, "authority").sign_message(b"m")  # the right PIN is tried: it is another PIN
