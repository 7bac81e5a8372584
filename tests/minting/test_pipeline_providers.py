"""The pipeline minting through three RPC providers (three front-ends of one local chain), each misbehaving its
own way in turn: one down, one lagging 250 slots, one answering HTTP 429; real Celery workers.

It ends with the usual proof: every reading minted exactly once, balances and supply equal the readings, and no
reading charged an attempt for the providers' trouble.
"""

import dataclasses

import pytest

from config.providers import RpcEndpoint
from gridtoken import observability
from meters.models import MeterReading
from minting.models import MintingControl
from minting.triggers import mint_soon
from tests.minting.pipeline_harness import (
    assert_minted_exactly_once,
    celery_processes_fixture,  # noqa: F401 (the celery_processes fixture)
    make_meter,
    make_readings,
    set_tokenization,
    use_chain,
    wait_until,
)
from tests.minting.test_pipeline_cluster import assert_platform_charged_nothing, minted

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
SLOT_MS = 10  # a 250-slot lag is 2.5 s: longer than a blockhash lives (1.5 s)
DOWN, LAGGING, RATE_LIMITED = {"http": {"status": 503}}, {"lag": {"slots": 250}}, {"http": {"status": 429}}


def provider_states() -> dict[int, set[str]]:
    """Provider number -> the states the workers report for it."""
    states: dict[int, set[str]] = {}
    for view in observability.rpc_providers_reports():
        for provider in view:
            states.setdefault(provider["number"], set()).add(provider["state"])
    return states


def test_minting_through_three_providers_in_turn_down_lagging_and_rate_limited_is_exactly_once(
    settings, make_localnet, tmp_path, celery_processes
):
    set_tokenization(settings, batch_size=10, trigger_debounce_ms=100)
    localnet = make_localnet(slot_ms=SLOT_MS, front_ends=3)
    chain = use_chain(settings, localnet, tmp_path)
    endpoints = tuple(RpcEndpoint(url=url) for url in localnet.urls)
    settings.CHAIN = dataclasses.replace(
        settings.CHAIN, rpc=dataclasses.replace(settings.CHAIN.rpc, endpoints=endpoints)
    )
    observability.redis_client().delete(observability.RPC_ERRORS_KEY, observability.RPC_STATES_KEY)
    env = {
        "SOLANA_RPC_URL": "",
        "SOLANA_RPC_URLS": ",".join(localnet.urls),
        "SOLANA_KEYPAIR_PATH": str(chain.keypair_path),
        "SOLANA_RPC_PROBE_SECS": "1",
        "SOLANA_RPC_PROBE_MAX_SECS": "2",
        "TOKENIZATION_POLLING_INTERVAL_SECS": "1",
    }
    meters = [make_meter() for _ in range(4)]

    # 1. Provider 1 down, provider 2 lagging: reads and sends go through provider 3.
    localnet.set_faults(DOWN, front_end=1)
    localnet.set_faults(LAGGING, front_end=2)
    celery_processes(env=env)
    celery_processes("beat", env=env)
    first = make_readings(meters, 30)
    mint_soon()
    wait_until(lambda: minted(first), interval=1.0, message="minted past a down and a lagging provider")
    # Reported out, or due for its probe (reports come on a change and every 10 s of use).
    wait_until(lambda: provider_states().get(1, {"in"}) <= {"out", "probing"}, message="provider 1 reported out")

    # 2. Provider 3 rate limits too: every provider is out, minting pauses with one code and charges nothing.
    localnet.set_faults(RATE_LIMITED, front_end=3)
    second = make_readings(meters, 20)
    mint_soon()
    wait_until(
        lambda: MintingControl.objects.filter(chain_error_code="rpc_providers_out").exists(),
        message="the pause names every provider out",
    )
    assert not MeterReading.objects.filter(id__in=[r.id for r in second], status="minted").exists()

    # 3. Provider 1 comes back (probed in), provider 3 goes down, provider 2 still lags: minting resumes.
    localnet.set_faults({}, front_end=1)
    localnet.set_faults(DOWN, front_end=3)
    wait_until(lambda: minted(second), interval=1.0, message="minted again once provider 1 answers")
    third = make_readings(meters, 20)
    mint_soon()
    wait_until(lambda: minted(third), interval=1.0, message="minted through the provider probed back in")
    assert MintingControl.objects.get().chain_failures == 0

    for front_end in (1, 2, 3):
        localnet.set_faults({}, front_end=front_end)
    errors = observability.rpc_provider_error_counts()
    assert errors.get((1, "rpc_unavailable")), errors  # each provider really was taken out for its fault
    assert errors.get((2, "rpc_lagging")), errors
    assert errors.get((3, "rpc_rate_limited")), errors
    readings = first + second + third
    assert_platform_charged_nothing(readings)
    assert_minted_exactly_once(chain.client(), readings)
