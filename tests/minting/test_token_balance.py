"""``manage.py token_balance`` against the local chain: the wallet's tokens on chain next to its minted readings."""

from dataclasses import replace
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from solders.pubkey import Pubkey

from meters.models import MeterReading
from minting.services.automatic import readings_mint_due
from tests.conftest import free_port
from tests.localnet.helpers import mint_to
from tests.minting.pipeline_harness import make_meter, make_readings, use_chain

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(settings, localnet, tmp_path):
    return use_chain(settings, localnet, tmp_path)


def balance(*args) -> str:
    out = StringIO()
    call_command("token_balance", *args, stdout=out)
    return out.getvalue()


def mismatch(*args) -> tuple[CommandError, str]:
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("token_balance", *args, stdout=out)
    return raised.value, out.getvalue()


def minted_world():
    meter, other = make_meter(), make_meter()
    make_readings([meter], 3, kwh="1.25")
    make_readings([other], 2, kwh="0.5")
    result = readings_mint_due()
    assert result.minted == 5
    return meter, other


def test_a_wallet_found_by_username_serial_or_address_matches_its_minted_readings(chain):
    meter, _ = minted_world()

    by_user = balance(meter.owner.username)
    by_serial = balance(meter.serial)
    by_wallet = balance(meter.wallet_address)
    supply = balance("--supply")

    for output in (by_user, by_serial, by_wallet):
        assert f"wallet {meter.wallet_address}: chain 3.750000000 tokens" in output
        assert "database 3.750000000 (3 minted readings, 3.750000000 kWh): match" in output
    assert by_user.startswith(f"Mint {chain.client().mint} on {chain.url} (confirmed)")
    assert "mint supply: chain 4.750000000 tokens" in supply and "(5 minted readings" in supply
    assert supply.rstrip().endswith(": match")


def test_tokens_on_chain_the_database_does_not_know_of_are_a_mismatch_with_exit_code_1(chain):
    meter, other = minted_world()
    client = chain.client()
    client.execute([mint_to(client.mint, Pubkey.from_string(meter.wallet_address), client.payer, 1)])

    error, output = mismatch(meter.owner.username, other.serial, "--supply")

    assert error.returncode == 1 and "differ" in str(error)
    assert f"wallet {meter.wallet_address}: chain 3.750000001 tokens" in output
    assert "MISMATCH by 0.000000001" in output
    assert f"wallet {other.wallet_address}: chain 1.000000000 tokens" in output  # the other still matches
    assert "mint supply: chain 4.750000001 tokens" in output


def test_a_minted_reading_the_chain_never_saw_is_a_mismatch(chain):
    meter, _ = minted_world()
    reading = MeterReading.objects.filter(meter=meter).first()
    MeterReading.objects.filter(pk=reading.pk).update(token_amount=reading.token_amount + 5)

    error, output = mismatch(meter.serial)

    assert error.returncode == 1
    assert "database 3.750000005" in output and "MISMATCH by -0.000000005" in output


def test_tokens_being_minted_are_named_as_the_likely_difference(chain):
    meter, _ = minted_world()
    reading = MeterReading.objects.filter(meter=meter).first()
    # As between a batch landing and the worker marking its readings: tokens on chain, reading still minting.
    MeterReading.objects.filter(pk=reading.pk).update(status=MeterReading.Status.MINTING, minted=False)

    error, output = mismatch(meter.serial, "--wait", "1")

    assert error.returncode == 1
    assert "database 2.500000000 (2 minted readings" in output
    assert "within the 1.250000000 of 1 readings being minted (try --wait)" in output


def test_an_unknown_subject_or_an_unreachable_chain_exits_2(chain, settings):
    error, _ = mismatch("nobody-at-all")
    assert error.returncode == 2 and "no username, meter serial or wallet address" in str(error)

    meter, _ = minted_world()
    settings.CHAIN = replace(settings.CHAIN, rpc_url=f"http://127.0.0.1:{free_port()}", rpc_timeout_secs=1)
    error, output = mismatch(meter.serial)
    assert error.returncode == 2 and f"meter {meter.serial} wallet {meter.wallet_address}: not yet:" in output
