"""The ChainClient the settings describe: settings.CHAIN, its signers (a key file or an HSM) and the recorded mint."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Hashable

from django.conf import settings
from solders.pubkey import Pubkey

from gridtoken import observability
from minting.chain.anchor import EnergyTokenProgram
from minting.chain.client import ChainClient
from minting.chain.errors import NotInitialised, PermanentChainError, WrongAuthority
from minting.chain.instructions import TOKEN_PROGRAM_ID
from minting.chain.providers import ProviderPool
from minting.chain.signer import authority_signer, rec_validator_signer

NOT_INITIALISED = "no energy token mint is recorded: run python manage.py chain_init"


def rpc_pool() -> ProviderPool:
    """The configured providers (SOLANA_RPC_URLS or SOLANA_RPC_URL), reporting their health for /metrics."""
    chain = settings.CHAIN
    return ProviderPool(
        chain.rpc_endpoints,
        timeout=float(chain.rpc_timeout_secs),
        max_connections=chain.concurrent_batches + 4,
        max_lag_slots=chain.rpc.max_lag_slots,
        probe_secs=chain.rpc.probe_secs,
        probe_max_secs=chain.rpc.probe_max_secs,
        on_report=_report_states,
        on_error=lambda provider, error: observability.rpc_provider_error(provider.number, error.code),
    )


def _report_states(pool: ProviderPool) -> None:
    observability.rpc_providers_report([dataclasses.asdict(state) for state in pool.states()])


def client_from_settings() -> ChainClient:
    chain, tokenization = settings.CHAIN, settings.TOKENIZATION
    authority = authority_signer()
    common = {
        "rpc": rpc_pool(),
        "authority": authority,
        "commitment": chain.commitment,
        "priority_fee_microlamports": chain.priority_fee_microlamports,
        "fees": chain.fees,
        "concurrent_batches": chain.concurrent_batches,
        "timeout": float(chain.rpc_timeout_secs),
    }
    if tokenization.mint_strategy == "anchor":
        if not chain.energy_token_program_id:
            raise NotInitialised(
                "TOKENIZATION_MINT_STRATEGY=anchor needs ENERGY_TOKEN_PROGRAM_ID", code="anchor_not_configured"
            )
        rec_validator = rec_validator_signer()
        if rec_validator is None:
            raise NotInitialised(
                "TOKENIZATION_MINT_STRATEGY=anchor needs REC_VALIDATOR_KEYPAIR_PATH or "
                "SIGNER_PKCS11_REC_VALIDATOR_KEY_LABEL (the REC validator co-signs)",
                code="anchor_not_configured",
            )
        if rec_validator.pubkey() == authority.pubkey():
            # mint_generation refuses it on chain (RecValidatorIsAuthority): the co-signature must be a second key.
            raise WrongAuthority(
                f"the REC validator's key (REC_VALIDATOR_KEYPAIR_PATH or SIGNER_PKCS11_REC_VALIDATOR_KEY_LABEL) is "
                f"the authority's {authority.pubkey()}: the REC validator must be a different, registered key",
                code="rec_validator_is_authority",
            )
        program = EnergyTokenProgram(
            Pubkey.from_string(chain.energy_token_program_id),
            # The platform authority is the registry's authority in this deployment (see docs/CHAIN.md).
            registry_authority=authority.pubkey(),
            rec_validator=rec_validator.pubkey(),
        )
        return ChainClient(
            **common, mint=program.mint, decimals=tokenization.decimals, anchor=program, rec_validator=rec_validator
        )
    mint, decimals, token_program = recorded_mint()
    if decimals != tokenization.decimals:
        raise PermanentChainError(
            f"the recorded mint {mint} has {decimals} decimals but TOKENIZATION_DECIMALS is {tokenization.decimals}: "
            "minted amounts would be off by a power of ten; run python manage.py chain_init for a matching mint",
            code="decimals_mismatch",
        )
    return ChainClient(**common, mint=mint, decimals=decimals, token_program=token_program, lookup_tables=True)


def recorded_mint() -> tuple[str, int, str]:
    """(address, decimals, token program) of the newest TokenMint row, else of ENERGY_TOKEN_MINT."""
    from minting.models import TokenMint

    row = TokenMint.objects.order_by("-created_at", "-id").first()
    if row is not None:
        return row.address, row.decimals, row.token_program
    if settings.CHAIN.energy_token_mint:
        return settings.CHAIN.energy_token_mint, settings.TOKENIZATION.decimals, str(TOKEN_PROGRAM_ID)
    raise NotInitialised(NOT_INITIALISED)


class KeptClient:
    """A process's ChainClient (kept: it pools connections and remembers token accounts), rebuilt when its key
    (the settings, the recorded mint) changes.

    Build first, then swap: a build that raises (a keypair file gone for a moment, a bad mint row) leaves the
    previous client and key in place, so the next call builds again instead of finding half a cache.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Hashable = None
        self._client: ChainClient | None = None

    def get(self, key: Hashable, build: Callable[[], ChainClient]) -> ChainClient:
        with self._lock:
            if self._client is None or self._key != key:
                client = build()
                old, self._client, self._key = self._client, client, key
                if old is not None:
                    old.close()
            return self._client
