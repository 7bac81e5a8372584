"""Signatures per second: the keypair file backend against a PKCS#11 token (SoftHSM2).

    python bench/signer.py [--signatures 5000] [--module /usr/lib/softhsm/libsofthsm2.so]

Creates a throw-away SoftHSM2 token in a temporary directory (its own SOFTHSM2_CONF), generates the Ed25519 key
inside it as signer_keygen does, and signs, one after the other in this process, ``--signatures`` messages the
size of a full packed transaction (1,100 bytes; a signature's cost barely depends on it) with each backend
through the Signer interface the pipeline uses; then whole transactions through ``sign_transaction``. Prints
signatures/s, microseconds each, and the readings/s a signer alone would allow at the packed batches' measured
19 and 49 readings per transaction (docs/BENCHMARKS.md, "Chain"). Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")

from solders.hash import Hash  # noqa: E402
from solders.keypair import Keypair  # noqa: E402
from solders.message import Message  # noqa: E402
from solders.pubkey import Pubkey  # noqa: E402

from config.signer import SignerConfig  # noqa: E402
from minting.chain import instructions as ix  # noqa: E402
from minting.chain.signer import Pkcs11Signer, pkcs11_keygen, sign_transaction  # noqa: E402

MESSAGE_BYTES = 1_100
READINGS_PER_TX = (19, 49)


def token(directory: Path, module: Path) -> SignerConfig:
    tokens = directory / "tokens"
    tokens.mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the library is loaded: it reads the file when initialised
    pin = secrets.token_hex(8)  # a throw-away token's PIN (softhsm2-util takes it only as an argument)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin", pin, "--pin", pin],
        check=True, capture_output=True,
    )  # fmt: skip
    return SignerConfig(backend="pkcs11", module=module, token_label="bench", key_label="authority", pin=pin)


def mint_message(payer: Pubkey, mints: int) -> Message:
    """A transaction message like a packed batch's: ``mints`` MintToChecked instructions and a memo."""
    mint = Keypair().pubkey()
    instructions = [
        ix.mint_to_checked(mint=mint, destination=Keypair().pubkey(), authority=payer, amount=1, decimals=9)
        for _ in range(mints)
    ]
    return Message.new_with_blockhash([*instructions, ix.memo("gridtoken:bench:0")], payer, Hash.new_unique())


def rate(work, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        work()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signatures", type=int, default=5000)
    parser.add_argument("--module", type=Path, default=Path("/usr/lib/softhsm/libsofthsm2.so"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config = token(Path(directory), args.module)
        pkcs11_keygen(config, config.key_label)
        signers = {"file (Keypair)": Keypair(), "pkcs11 (SoftHSM2)": Pkcs11Signer(config, config.key_label)}
        data = os.urandom(MESSAGE_BYTES)
        print(f"{args.signatures} signatures of {MESSAGE_BYTES} bytes, then {args.signatures} transactions, each")
        print("backend            | sign_message/s | us each | sign_transaction/s | readings/s at 19 / 49 a tx")
        for name, signer in signers.items():
            message = mint_message(signer.pubkey(), 18)
            signatures = rate(lambda s=signer: s.sign_message(data), args.signatures)
            transactions = rate(lambda s=signer, m=message: sign_transaction(m, [s]), args.signatures)
            allowed = " / ".join(f"{transactions * n:,.0f}" for n in READINGS_PER_TX)
            print(f"{name:<18} | {signatures:>14,.0f} | {1e6 / signatures:>7.0f} | {transactions:>18,.0f} | {allowed}")


if __name__ == "__main__":
    main()
