"""python manage.py chain_init against the real localnet, and client_from_settings() on what it records."""

import dataclasses
import io
import json
import stat

import pytest
from django.core.management import CommandError, call_command
from solders.keypair import Keypair

from minting.chain import ChainClient, MintRequest, NotInitialised, PermanentChainError
from minting.chain.configured import client_from_settings
from minting.chain.instructions import TOKEN_PROGRAM_ID
from minting.chain.setup import _fund, is_local
from minting.models import TokenMint
from tests.conftest import free_port
from tests.minting.test_chain_support import SOL, balance, create_mint, land, new_client, supply, wallets

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain_settings(settings, tmp_path, localnet):
    """Point CHAIN at the session localnet with a keypair path of the test's own."""

    def configure(**changes):
        base = {"rpc_url": localnet.url, "keypair_path": tmp_path / ".secrets" / "authority.json"}
        settings.CHAIN = dataclasses.replace(settings.CHAIN, **{"energy_token_mint": None, **base, **changes})
        return settings.CHAIN

    configure()
    return configure


def chain_init(*args) -> str:
    out = io.StringIO()
    call_command("chain_init", *args, stdout=out)
    return out.getvalue()


def test_chain_init_creates_a_private_keypair_a_funded_authority_and_a_recorded_mint(chain_settings, localnet):
    output = chain_init()

    path = chain_settings().keypair_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    secret = json.loads(path.read_text())
    authority = Keypair.from_bytes(bytes(secret))
    row = TokenMint.objects.get()
    assert (row.decimals, row.token_program, row.authority, row.rpc_url) == (
        9, str(TOKEN_PROGRAM_ID), str(authority.pubkey()), localnet.url
    )  # fmt: skip
    client = client_from_settings()
    assert client.verify_mint().mint_authority == str(authority.pubkey())
    assert client.rpc.call("getBalance", [str(authority.pubkey())])["value"] >= 99 * SOL
    assert f"created the mint {row.address}" in output and "airdropped 100 SOL" in output
    assert str(secret) not in output and str(secret[:8])[1:-1] not in output


def test_a_second_chain_init_changes_nothing(chain_settings):
    chain_init()
    keypair_before = chain_settings().keypair_path.read_bytes()
    row = TokenMint.objects.get()

    output = chain_init()

    assert chain_settings().keypair_path.read_bytes() == keypair_before
    assert list(TokenMint.objects.all()) == [row]
    assert "nothing to do" in output and "airdropped" not in output and "created" not in output


def test_chain_init_on_a_fresh_chain_replaces_a_recorded_mint_that_does_not_exist_there(chain_settings, make_localnet):
    chain_init()
    stale = TokenMint.objects.get()
    fresh = make_localnet()
    chain_settings(rpc_url=fresh.url)

    output = chain_init()

    assert f"the recorded mint {stale.address} does not exist on {fresh.url}" in output
    newest = TokenMint.objects.order_by("-created_at").first()
    assert newest.address != stale.address and newest.rpc_url == fresh.url
    assert client_from_settings().verify_mint().supply == 0


def test_new_mint_creates_another_mint_even_when_one_is_in_place(chain_settings):
    chain_init()
    chain_init("--new-mint")
    assert TokenMint.objects.values("address").distinct().count() == 2


def test_energy_token_mint_is_verified_and_adopted(chain_settings, localnet):
    chain_init()
    client = client_from_settings()
    adopted = create_mint(client)
    chain_settings(energy_token_mint=str(adopted))

    output = chain_init()

    assert f"adopted the mint {adopted}" in output
    assert TokenMint.objects.order_by("-created_at").first().address == str(adopted)
    assert "nothing to do" in chain_init()


def test_energy_token_mint_with_another_mint_authority_is_refused_with_what_to_do(chain_settings, localnet):
    chain_init()
    foreign = new_client(localnet.url).mint
    chain_settings(energy_token_mint=str(foreign))
    with pytest.raises(CommandError, match=r"not .* \(our key\); point SOLANA_KEYPAIR_PATH"):
        chain_init()


def test_energy_token_mint_that_does_not_exist_is_refused(chain_settings):
    chain_settings(energy_token_mint=str(Keypair().pubkey()))
    with pytest.raises(CommandError, match=r"does not exist .*unset ENERGY_TOKEN_MINT"):
        chain_init()
    chain_settings(energy_token_mint="not-an-address")
    with pytest.raises(CommandError, match="is not a Solana address"):
        chain_init()


def test_a_recorded_mint_with_other_decimals_or_authority_is_refused(chain_settings, settings, tmp_path):
    chain_init()
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, decimals=6)
    with pytest.raises(CommandError, match="--new-mint"):
        chain_init()
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, decimals=9)
    chain_settings(keypair_path=tmp_path / "other.json")
    with pytest.raises(CommandError, match="restore the keypair"):
        chain_init()


def test_chain_init_says_how_to_start_the_chain_when_it_is_unreachable(chain_settings):
    chain_settings(rpc_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CommandError, match=r"cannot reach .*start it with python manage\.py localnet"):
        chain_init()


def test_the_anchor_strategy_creates_no_mint(chain_settings, settings):
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, mint_strategy="anchor")
    assert "anchor strategy" in chain_init()
    assert not TokenMint.objects.exists()


def test_from_settings_mints_through_the_recorded_mint(chain_settings, localnet):
    chain_init()
    client = client_from_settings()
    (wallet,) = wallets(1)
    land(client, client.build_mints([MintRequest(wallet, 2_010_000_000)], memo="settings"))
    assert balance(localnet.url, client.mint, wallet) == 2_010_000_000
    assert supply(localnet.url, client.mint) == 2_010_000_000
    assert client.lookup_tables is not None and client.commitment == "confirmed"


def test_from_settings_without_a_keypair_or_mint_says_to_run_chain_init(chain_settings, tmp_path):
    with pytest.raises(NotInitialised, match=r"run python manage\.py chain_init"):
        client_from_settings()
    chain_settings().keypair_path.parent.mkdir(mode=0o700)
    chain_settings().keypair_path.write_text(json.dumps(list(bytes(Keypair()))))
    with pytest.raises(NotInitialised, match=r"run python manage\.py chain_init") as caught:
        client_from_settings()
    assert caught.value.permanent and caught.value.code == "not_initialised"


def test_from_settings_falls_back_to_energy_token_mint(chain_settings):
    chain_init()
    TokenMint.objects.all().delete()
    address = str(Keypair().pubkey())
    chain_settings(energy_token_mint=address)
    assert str(client_from_settings().mint) == address


def test_from_settings_refuses_a_recorded_mint_with_other_decimals(chain_settings, settings):
    chain_init()
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, decimals=6)
    with pytest.raises(PermanentChainError) as caught:
        client_from_settings()
    assert caught.value.code == "decimals_mismatch"


@pytest.mark.parametrize("content", ["[1, 2, 3]", "not json", json.dumps([0] * 64)])
def test_a_malformed_keypair_file_is_a_permanent_invalid_keypair(chain_settings, content):
    path = chain_settings().keypair_path
    path.parent.mkdir(mode=0o700)
    path.write_text(content)
    with pytest.raises(PermanentChainError) as caught:
        client_from_settings()
    assert caught.value.code == "invalid_keypair"


def test_a_low_balance_off_a_local_chain_is_reported_not_airdropped(localnet):
    client = ChainClient(rpc_url=localnet.url, authority=Keypair(), mint=Keypair().pubkey(), decimals=9)
    lines = []
    _fund(client, False, lines.append)
    assert lines == [f"balance 0 SOL is low: fund {client.authority.pubkey()} with SOL to pay fees and rent"]
    assert client.rpc.call("getBalance", [str(client.authority.pubkey())])["value"] == 0


def test_only_localnet_or_a_loopback_rpc_counts_as_local():
    assert is_local("http://127.0.0.1:8899", "devnet") and is_local("https://rpc.example.com", "localnet")
    assert not is_local("https://api.devnet.solana.com", "devnet")
