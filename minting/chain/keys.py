"""Keypair files in solana-keygen's format: a JSON array of the 64 secret-key bytes. Secrets are never logged."""

from __future__ import annotations

import json
import os
from pathlib import Path

from solders.keypair import Keypair

from minting.chain.errors import NotInitialised, PermanentChainError


def load_keypair(path: Path, *, setting: str = "SOLANA_KEYPAIR_PATH") -> Keypair:
    try:
        numbers = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NotInitialised(
            f"no keypair at {path} ({setting}): run python manage.py chain_init to create one"
        ) from None
    except (OSError, ValueError) as exc:
        raise PermanentChainError(f"cannot read the keypair at {path}: {exc}", code="invalid_keypair") from None
    if not isinstance(numbers, list) or len(numbers) != 64 or not all(isinstance(n, int) for n in numbers):
        raise PermanentChainError(
            f"the keypair at {path} is not a JSON array of 64 byte values (solana-keygen format)",
            code="invalid_keypair",
        )
    try:
        return Keypair.from_bytes(bytes(numbers))
    except ValueError as exc:
        raise PermanentChainError(f"the keypair at {path} is not valid: {exc}", code="invalid_keypair") from None


def create_keypair(path: Path) -> Keypair:
    """A new keypair written to ``path`` with mode 0600 (parent directories 0700); never overwrites."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    keypair = Keypair()
    # O_EXCL: two processes racing to initialise must not both write (and one silently lose its key).
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(list(bytes(keypair)), handle)
    return keypair
