"""chain_init's service: the authority key, SOL for fees on a local chain, the energy token mint and its record; and
the hand-over of the mint authority to another key (``mint_authority_set``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from django.conf import settings
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from spl.token.instructions import InitializeMintParams, initialize_mint

from minting.chain import instructions as ix
from minting.chain.client import ChainClient
from minting.chain.configured import client_from_settings, rpc_pool
from minting.chain.decoding import MINT_ACCOUNT_SIZE
from minting.chain.errors import InvalidMint, RpcBadResponse, RpcTimeout, RpcUnavailable, WrongAuthority
from minting.chain.instructions import TOKEN_PROGRAM_ID
from minting.chain.keys import create_keypair, load_keypair
from minting.chain.records import SignedMint
from minting.chain.signer import Signer, authority_signer
from minting.models import TokenMint

LAMPORTS_PER_SOL = 1_000_000_000
LOW_BALANCE = 10 * LAMPORTS_PER_SOL
AIRDROP = 100 * LAMPORTS_PER_SOL
NO_EXPIRY = 2**63 - 1
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class SetupError(Exception):
    """chain_init cannot go on; the message says what to do next."""


def is_local(rpc_url: str, cluster: str) -> bool:
    return cluster == "localnet" or urlsplit(rpc_url).hostname in LOOPBACK_HOSTS


def initialise_chain(*, new_mint: bool = False, out: Callable[[str], None] = print) -> TokenMint | None:
    """Idempotent set-up of the configured cluster; returns the TokenMint in use (None for the anchor strategy).

    1. The authority: the keypair at SOLANA_KEYPAIR_PATH, created (mode 0600) when missing; or, with
       SIGNER_BACKEND=pkcs11, the HSM's key (created beforehand by ``signer_keygen``, never here).
    2. The RPC answers; on a local chain the authority gets SOL when its balance is low.
    3. The mint: ENERGY_TOKEN_MINT verified and adopted, else the recorded mint verified, else (or when the
       recorded one does not exist on this chain, or ``new_mint``) a new mint, recorded as a TokenMint row.
    """
    chain, tokenization = settings.CHAIN, settings.TOKENIZATION
    authority = _authority(chain, out)
    client = ChainClient(
        rpc=rpc_pool(), authority=authority, mint=authority.pubkey(), decimals=tokenization.decimals,
        commitment=chain.commitment, timeout=float(chain.rpc_timeout_secs),
    )  # fmt: skip
    try:
        _fund(client, is_local(chain.rpc_url, chain.cluster), out)
        if tokenization.mint_strategy == "anchor":
            out("anchor strategy: the energy_token program owns its mint (PDA of b'mint_2022'); no mint created")
            return None
        return _mint(client, chain.energy_token_mint, new_mint, out)
    except (RpcUnavailable, RpcTimeout) as error:
        hint = (
            "start it with python manage.py localnet"
            if is_local(chain.rpc_url, chain.cluster)
            else ("check SOLANA_RPC_URL and the node")
        )
        raise SetupError(f"cannot reach {client.rpc.where}: {hint} ({error})") from error
    finally:
        client.close()


def _authority(chain, out: Callable[[str], None]) -> Signer:
    if chain.signer.backend == "pkcs11":
        authority = authority_signer()
        out(f"authority {authority.pubkey()} (key {chain.signer.key_label!r} in the PKCS#11 token)")
        return authority
    path = chain.keypair_path
    if path.exists():
        authority = load_keypair(path)
        out(f"authority {authority.pubkey()} (keypair {path})")
    else:
        authority = create_keypair(path)
        out(f"created the authority keypair {authority.pubkey()} at {path} (mode 0600)")
    return authority


def _fund(client: ChainClient, local: bool, out: Callable[[str], None]) -> None:
    payer = client.authority.pubkey()
    balance = _lamports(client.rpc.call("getBalance", [str(payer), {"commitment": client.commitment}]))
    if balance >= LOW_BALANCE:
        out(f"balance {balance / LAMPORTS_PER_SOL:g} SOL")
        return
    if not local:
        out(f"balance {balance / LAMPORTS_PER_SOL:g} SOL is low: fund {payer} with SOL to pay fees and rent")
        return
    signature = client.rpc.call("requestAirdrop", [str(payer), AIRDROP])
    client.confirm(SignedMint(signature, b"", NO_EXPIRY, (), ""))
    out(f"airdropped {AIRDROP // LAMPORTS_PER_SOL} SOL to {payer}")


def _mint(client: ChainClient, configured: str | None, new_mint: bool, out: Callable[[str], None]) -> TokenMint:
    if configured:
        return _adopt(client, configured, out)
    recorded = TokenMint.objects.order_by("-created_at", "-id").first()
    if recorded is None or new_mint:
        return _create(client, out)
    client.mint = Pubkey.from_string(recorded.address)
    if client.account_data(client.mint) is None:
        out(f"the recorded mint {recorded.address} does not exist on {client.rpc.where} (a fresh chain?)")
        return _create(client, out)
    try:
        client.verify_mint()
    except InvalidMint as error:
        raise SetupError(f"{error}; run python manage.py chain_init --new-mint to create another") from None
    except WrongAuthority as error:
        raise SetupError(
            f"{error}: restore the keypair that created it at {settings.CHAIN.keypair_path} (or the HSM key, "
            "SIGNER_PKCS11_KEY_LABEL), or run python manage.py chain_init --new-mint"
        ) from None
    out(f"mint {recorded.address} is in place ({client.decimals} decimals); nothing to do")
    return recorded


def _adopt(client: ChainClient, address: str, out: Callable[[str], None]) -> TokenMint:
    try:
        client.mint = Pubkey.from_string(address)
    except ValueError:
        raise SetupError(f"ENERGY_TOKEN_MINT={address!r} is not a Solana address") from None
    try:
        info = client.verify_mint()
    except InvalidMint as error:
        raise SetupError(f"ENERGY_TOKEN_MINT: {error}; unset ENERGY_TOKEN_MINT to create a new mint") from None
    except WrongAuthority as error:
        raise SetupError(
            f"ENERGY_TOKEN_MINT: {error}; point SOLANA_KEYPAIR_PATH (or SIGNER_PKCS11_KEY_LABEL) at the mint "
            "authority's key"
        ) from None
    recorded = TokenMint.objects.order_by("-created_at", "-id").first()
    if recorded is not None and (recorded.address, recorded.rpc_url) == (address, client.rpc_url):
        out(f"mint {address} (ENERGY_TOKEN_MINT) is in place; nothing to do")
        return recorded
    out(f"adopted the mint {address} (ENERGY_TOKEN_MINT, {info.decimals} decimals)")
    return _record(client, info.token_program)


def _create(client: ChainClient, out: Callable[[str], None]) -> TokenMint:
    mint = Keypair()
    payer = client.authority.pubkey()
    rent = _lamports(client.rpc.call("getMinimumBalanceForRentExemption", [MINT_ACCOUNT_SIZE]))
    instructions = [
        create_account(
            CreateAccountParams(
                from_pubkey=payer, to_pubkey=mint.pubkey(), lamports=rent, space=MINT_ACCOUNT_SIZE,
                owner=TOKEN_PROGRAM_ID,
            )
        ),
        initialize_mint(
            InitializeMintParams(
                decimals=client.decimals, program_id=TOKEN_PROGRAM_ID, mint=mint.pubkey(), mint_authority=payer,
            )
        ),
    ]  # fmt: skip
    client.execute(instructions, [mint])
    client.mint = mint.pubkey()
    client.verify_mint()
    out(f"created the mint {mint.pubkey()} ({client.decimals} decimals, mint authority {payer}) on {client.rpc.where}")
    return _record(client, str(TOKEN_PROGRAM_ID))


def _record(client: ChainClient, token_program: str) -> TokenMint:
    return TokenMint.objects.create(
        address=str(client.mint), decimals=client.decimals, token_program=token_program,
        authority=str(client.authority.pubkey()), rpc_url=client.rpc_url,
    )  # fmt: skip


def mint_authority_set(*, new_authority: Pubkey, out: Callable[[str], None] = print) -> None:
    """Hand the recorded energy token mint's authority to ``new_authority``; see ``authority_hand_over``. The key
    rotation procedure around it (pause, fund the new key, switch the signer, restart) is in docs/OPERATIONS.md,
    "Key rotation"."""
    if settings.TOKENIZATION.mint_strategy == "anchor":
        raise SetupError("the anchor strategy's mint authority is the program's PDA: there is no key to hand over")
    client = client_from_settings()
    try:
        authority_hand_over(client=client, new_authority=new_authority, kinds=(ix.MINT_TOKENS,), out=out)
    finally:
        client.close()
    TokenMint.objects.filter(address=str(client.mint)).update(authority=str(new_authority))


def authority_hand_over(
    *, client: ChainClient, new_authority: Pubkey, kinds: Sequence[int], out: Callable[[str], None]
) -> None:
    """Give ``client.mint``'s authorities of ``kinds`` (``MINT_TOKENS``, ``PERMANENT_DELEGATE``) to ``new_authority``
    in one transaction signed by the client's key, which must hold them now; idempotent.

    1. The mint's authority is already ``new_authority`` (nothing to do), or ours (``verify_mint``).
    2. One SetAuthority per kind, in one transaction with preflight, confirmed at SOLANA_COMMITMENT.
    3. The mint is read back: its mint authority must be ``new_authority``.
    """
    if client.mint_info().mint_authority == str(new_authority):
        out(f"the mint authority of {client.mint} is {new_authority} already; nothing to do")
        return
    client.verify_mint()
    client.execute([
        ix.set_authority(
            account=client.mint, current=client.payer, new=new_authority, kind=kind, token_program=client.token_program
        )
        for kind in kinds
    ])  # fmt: skip
    if client.mint_info().mint_authority != str(new_authority):
        raise SetupError(f"the mint authority of {client.mint} is not {new_authority} after SetAuthority")
    out(f"the mint authority of {client.mint} is now {new_authority} (was {client.payer})")


def _lamports(result: object) -> int:
    """An RPC lamport amount, bare (getMinimumBalanceForRentExemption) or in a context (getBalance)."""
    value = result.get("value") if isinstance(result, dict) else result
    if isinstance(value, bool) or not isinstance(value, int):
        raise RpcBadResponse(f"expected a lamport amount, got {result!r}")
    return value
