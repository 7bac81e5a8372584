"""The one signing interface every platform transaction goes through, and its two backends.

A ``Signer`` has a public key and signs message bytes. A Solana signature is plain Ed25519 over the serialised
message, so both backends give the same signature for the same key and message:

- ``file`` (SIGNER_BACKEND=file): solders' ``Keypair`` read from SOLANA_KEYPAIR_PATH; it already is a Signer.
- ``pkcs11``: ``Pkcs11Signer``, an Ed25519 key inside a PKCS#11 token (an HSM; SoftHSM2 in development) that
  signs with CKM_EDDSA. The private key never leaves the token; this process holds a session and a handle.

A token that is missing, locked or refuses to sign raises ``SignerUnavailable``: a platform fault that pauses
minting without charging any reading (docs/OPERATIONS.md, "Minting paused").
"""

from __future__ import annotations

import gc
import hashlib
import threading
from collections.abc import Sequence
from typing import Protocol

import pkcs11
from django.conf import settings
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from config.signer import SignerConfig
from minting.chain.errors import SignerUnavailable
from minting.chain.keys import load_keypair

ED25519_OID = "1.3.101.112"  # RFC 8410 id-Ed25519, the EC_PARAMS of an Ed25519 key in PKCS#11 3.0
_FAULTS: tuple[tuple[tuple[type[Exception], ...], str, str], ...] = (
    (
        (p11.NoSuchToken, p11.TokenNotPresent, p11.TokenNotRecognised, p11.DeviceRemoved, p11.DeviceError),
        "signer_token_missing",
        "is not present: check that the HSM is connected and SIGNER_PKCS11_TOKEN_LABEL",
    ),
    (
        (p11.PinIncorrect, p11.PinLocked, p11.PinExpired, p11.PinInvalid, p11.PinLenRange, p11.UserPinNotInitialized),
        "signer_locked",
        "refuses the PIN or is locked: check SIGNER_PKCS11_PIN_FILE (or the PIN's state on the HSM)",
    ),
    (
        (p11.NoSuchKey, p11.MultipleObjectsReturned),
        "signer_key_missing",
        "holds no single Ed25519 key pair with this label: run python manage.py signer_keygen, or fix "
        "SIGNER_PKCS11_KEY_LABEL",
    ),
)


class Signer(Protocol):
    def pubkey(self) -> Pubkey: ...

    def sign_message(self, message: bytes) -> Signature: ...


def sign_transaction(message: Message | MessageV0, signers: Sequence[Signer]) -> VersionedTransaction:
    """``message`` signed by ``signers`` (each required signer once, in the message's order)."""
    by_key = {signer.pubkey(): signer for signer in signers}
    data = to_bytes_versioned(message)
    required = message.account_keys[: message.header.num_required_signatures]
    missing = [str(key) for key in required if key not in by_key]
    if missing:
        raise ValueError(f"no signer for {', '.join(missing)}")
    return VersionedTransaction.populate(message, [by_key[key].sign_message(data) for key in required])


class Pkcs11Signer:
    """An Ed25519 key in a PKCS#11 token, found by its label, signing over the process's session with the token.

    Building one touches no token: the address is read at the first ``pubkey()`` or signature, so a process
    starts (and reads the chain) while its token is missing or locked, and signs once the token is back."""

    def __init__(self, config: SignerConfig, key_label: str) -> None:
        self._config, self._label = config, key_label
        self._where = f"the PKCS#11 token {config.token_label!r} (key {key_label!r})"
        self._public: Pubkey | None = None
        self._session = self._key = None  # the private key's handle, valid in that session

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self._where}, {self._public or 'address not read yet'})"

    def pubkey(self) -> Pubkey:
        if self._public is None:
            self._public = _in_session(self._config, self._where, self._find_public)
        return self._public

    def sign_message(self, message: bytes) -> Signature:
        expected = self.pubkey()

        def sign(session):
            if self._session is not session:  # a new session: find the key again, and make sure it is the same
                if self._find_public(session) != expected:
                    raise SignerUnavailable(
                        f"{self._where} holds another key than {expected} now: restore it, or restart with the "
                        "new one (it must be the mint authority)",
                        code="signer_key_missing",
                    )
                key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label=self._label)
                if not hasattr(key, "sign"):  # python-pkcs11 leaves sign() off a key whose CKA_SIGN is false
                    raise SignerUnavailable(f"{self._where} may not sign (CKA_SIGN is false)", code="signer_refused")
                self._key, self._session = key, session
            return self._key.sign(message, mechanism=Mechanism.EDDSA)

        return Signature.from_bytes(_in_session(self._config, self._where, sign))

    def _find_public(self, session) -> Pubkey:
        return public_key(session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC_EDWARDS, label=self._label))


# One logged-in session per token and process: PKCS#11 login state is per application, so a second login
# fails (CKR_USER_ALREADY_LOGGED_IN) and closing any logged-in session logs every other one out.
_sessions: dict[tuple[str, str], object] = {}
_lock = threading.RLock()  # one operation at a time on a session (PKCS#11 sessions are not shared safely)
# The token judged the PIN itself: trying the same one again only brings the token closer to locking.
_PIN_REFUSED = (p11.PinIncorrect, p11.PinExpired, p11.PinInvalid, p11.PinLenRange)
_refused_pins: dict[tuple[str, str], tuple[bytes, str]] = {}  # per token: its serial, the sha256 of the PIN refused


def _in_session(config: SignerConfig, where: str, operation):
    """``operation(session)`` on the process's session with the token. Any failure but a refused PIN is tried
    once more after starting afresh as a new process would (``_reset``): a token unplugged and back, or
    plugged in after the library looked for it, is found then. Every PKCS#11 failure becomes SignerUnavailable."""
    with _lock:
        try:
            try:
                return operation(_session(config))
            except _PIN_REFUSED:
                raise
            except p11.PKCS11Error:
                _reset(config)
                return operation(_session(config))
        except p11.PKCS11Error as exc:
            raise signer_fault(exc, where) from None


def _session(config: SignerConfig):
    key = (str(config.module), config.token_label)
    session = _sessions.get(key)
    if session is not None:
        return session
    token = pkcs11.lib(str(config.module)).get_token(token_label=config.token_label)
    pin = _login_pin(config)
    refusal = (token.serial, hashlib.sha256(pin.encode()).hexdigest())  # another token (a replaced HSM) is tried
    if _refused_pins.get(key) == refusal:
        fix = f"put the right PIN in {config.pin_file}" if config.pin_file else "set SIGNER_PKCS11_PIN and restart"
        raise SignerUnavailable(
            f"the PKCS#11 token {config.token_label!r} refused this PIN, which is not tried again (a token locks "
            f"after a few wrong PINs): {fix}",
            code="signer_locked",
        )
    try:
        _sessions[key] = token.open(user_pin=pin, rw=True)  # rw: signer_keygen stores keys through it
    except _PIN_REFUSED:
        _refused_pins[key] = refusal
        raise
    _refused_pins.pop(key, None)
    return _sessions[key]


def _login_pin(config: SignerConfig) -> str:
    """The PIN to log in with: SIGNER_PKCS11_PIN_FILE read again at every login (an operator fixes the file, no
    restart), else the PIN the process started with."""
    if config.pin_file is None:
        return config.pin
    try:
        pin = config.pin_file.read_text().strip()
    except OSError as exc:
        raise SignerUnavailable(
            f"SIGNER_PKCS11_PIN_FILE {config.pin_file} cannot be read ({exc.strerror}): restore the mounted secret",
            code="signer_locked",
        ) from None
    if not pin:
        raise SignerUnavailable(f"SIGNER_PKCS11_PIN_FILE {config.pin_file} is empty: put the PIN in it",
                                code="signer_locked")  # fmt: skip
    return pin


def _reset(config: SignerConfig) -> None:
    """Forget the module's sessions and initialise the library again: a token's slot list, and SoftHSM2's view
    of its token directory, are read at initialisation, and handles found before an unplug stay invalid."""
    module = str(config.module)
    for key in [key for key in _sessions if key[0] == module]:
        del _sessions[key]  # their handles end with the library's finalisation
    gc.collect()  # searches left unfinished on old sessions end now, before a new session can reuse a handle
    pkcs11.lib(module).reinitialize()


def signer_fault(error: p11.PKCS11Error, where: str) -> SignerUnavailable:
    for types, code, hint in _FAULTS:
        if isinstance(error, types):
            return SignerUnavailable(f"{where} {hint} ({type(error).__name__})", code=code)
    return SignerUnavailable(f"{where} refused to sign: {type(error).__name__} {error}".strip(), code="signer_refused")


def public_key(key) -> Pubkey:
    """The Solana address of a PKCS#11 Ed25519 public key (CKA_EC_POINT: a DER OCTET STRING, or the bare 32 bytes
    some tokens return)."""
    point = bytes(key[Attribute.EC_POINT])
    return Pubkey.from_bytes(point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point)


def authority_signer() -> Signer:
    """The mint authority and fee payer as configured: SOLANA_KEYPAIR_PATH's keypair or the HSM's key."""
    chain = settings.CHAIN
    if chain.signer.backend == "pkcs11":
        return Pkcs11Signer(chain.signer, chain.signer.key_label)
    return load_keypair(chain.keypair_path)


def rec_validator_signer() -> Signer | None:
    """The REC validator co-signer: the HSM's key when SIGNER_PKCS11_REC_VALIDATOR_KEY_LABEL names one, else
    REC_VALIDATOR_KEYPAIR_PATH's keypair, else none."""
    chain = settings.CHAIN
    if chain.signer.backend == "pkcs11" and chain.signer.rec_validator_key_label:
        return Pkcs11Signer(chain.signer, chain.signer.rec_validator_key_label)
    if chain.rec_validator_keypair_path is None:
        return None
    return load_keypair(chain.rec_validator_keypair_path, setting="REC_VALIDATOR_KEYPAIR_PATH")


def pkcs11_keygen(config: SignerConfig, label: str) -> Pubkey:
    """A new Ed25519 key pair generated inside the token under ``label``: the private key is sensitive,
    non-extractable and may only sign. Refuses a label the token already holds (two keys, one label, would make
    every later lookup ambiguous). Returns the public key (the Solana address)."""
    where = f"the PKCS#11 token {config.token_label!r} (key {label!r})"

    def generate(session) -> Pubkey:
        if list(session.get_objects({Attribute.LABEL: label, Attribute.KEY_TYPE: KeyType.EC_EDWARDS})):
            raise SignerUnavailable(f"{where} already holds a key with this label", code="signer_key_exists")
        parameters = session.create_domain_parameters(
            KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)}, local=True
        )
        public, _ = parameters.generate_keypair(
            store=True, label=label, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            public_template={Attribute.VERIFY: True},
            private_template={
                Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                Attribute.DECRYPT: False, Attribute.DERIVE: False, Attribute.UNWRAP: False,
            },
        )  # fmt: skip
        return public_key(public)

    return _in_session(config, where, generate)
