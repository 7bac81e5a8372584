"""Which key signs the platform's transactions: a keypair file (development, the local chain) or a key inside a
PKCS#11 token (an HSM). Read once from the environment and validated; the PIN is never shown (``repr=False``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from config.environment import ConfigError, Env

SIGNER_BACKENDS = ("file", "pkcs11")
LABEL_MAX = 32  # a PKCS#11 token label is at most 32 bytes (CK_TOKEN_INFO.label)


@dataclass(frozen=True)
class SignerConfig:
    backend: str
    module: Path | None = None  # the vendor's PKCS#11 library (.so)
    token_label: str = ""
    key_label: str = ""  # the mint authority (and fee payer)
    rec_validator_key_label: str = ""  # the REC validator co-signer, when it lives in the token too
    pin: str = field(default="", repr=False)
    pin_file: Path | None = None  # read again at each login, so a PIN fixed in the file needs no restart

    @classmethod
    def from_env(cls, env: Env) -> SignerConfig:
        backend = env.str("SIGNER_BACKEND", "file", choices=SIGNER_BACKENDS)
        if backend == "file":
            return cls(backend=backend)
        module, pin_file = env.raw("SIGNER_PKCS11_MODULE"), env.raw("SIGNER_PKCS11_PIN_FILE")
        if module is None or not Path(module).is_file():
            raise ConfigError("SIGNER_PKCS11_MODULE", module, "the path of the HSM vendor's PKCS#11 library (.so)")
        return cls(
            backend=backend,
            module=Path(module),
            token_label=_label(env, "SIGNER_PKCS11_TOKEN_LABEL", ""),
            key_label=_label(env, "SIGNER_PKCS11_KEY_LABEL", "gridtoken-authority"),
            rec_validator_key_label=env.raw("SIGNER_PKCS11_REC_VALIDATOR_KEY_LABEL") or "",
            pin=_pin(env),
            pin_file=Path(pin_file) if pin_file else None,
        )


def _label(env: Env, name: str, default: str) -> str:
    value = env.str(name, default)
    if not value or len(value.encode()) > LABEL_MAX:
        raise ConfigError(name, value, f"a label of 1 to {LABEL_MAX} bytes")
    return value


def _pin(env: Env) -> str:
    """SIGNER_PKCS11_PIN_FILE (a mounted secret) or SIGNER_PKCS11_PIN; an error never repeats the PIN itself."""
    path, pin = env.raw("SIGNER_PKCS11_PIN_FILE"), env.raw("SIGNER_PKCS11_PIN")
    if path is not None and pin is not None:
        raise ConfigError("SIGNER_PKCS11_PIN", "(set)", "unset: SIGNER_PKCS11_PIN_FILE is set, one source only")
    if path is None:
        if pin is None:
            raise ConfigError("SIGNER_PKCS11_PIN_FILE", None, "a file holding the user PIN (or SIGNER_PKCS11_PIN)")
        return pin
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError("SIGNER_PKCS11_PIN_FILE", path, f"a readable file holding the PIN ({exc.strerror})") from None
    if not text:
        raise ConfigError("SIGNER_PKCS11_PIN_FILE", path, "a file holding the PIN (it is empty)")
    return text
