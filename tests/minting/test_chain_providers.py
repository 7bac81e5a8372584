"""The provider pool against three front-ends of one local chain, each given its own fault plan.

The pool's clock is a plain counter the tests move, so back-offs are exact without sleeping; every request goes
to the real local chain.
"""

from __future__ import annotations

import pytest
from solders.signature import Signature

from config.providers import RpcEndpoint
from minting.chain import MintRequest, NodeBehind, RpcUnavailable
from minting.chain.providers import ProviderPool
from tests.conftest import Localnet, free_port, rpc_call, wait_until
from tests.minting.test_chain_support import balance, new_client, wallets

LATEST = ("getLatestBlockhash", [{"commitment": "confirmed"}])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def front_ends(tmp_path_factory):
    chain = Localnet(tmp_path_factory.mktemp("providers"), slot_ms=10, front_ends=3).start()
    wait_until(lambda: rpc_call(chain.url, "getSlot")["result"] > 300, message="300 slots: a 250-slot lag's past")
    yield chain
    chain.stop()


@pytest.fixture(autouse=True)
def no_faults(front_ends):
    yield
    for number in (1, 2, 3):
        front_ends.set_faults({}, front_end=number)


@pytest.fixture
def clock():
    return Clock()


def pool_of(urls, clock, **options) -> ProviderPool:
    endpoints = [url if isinstance(url, RpcEndpoint) else RpcEndpoint(url=url) for url in urls]
    return ProviderPool(endpoints, timeout=2.0, probe_secs=2.0, probe_max_secs=8.0, clock=clock, **options)


def state(pool: ProviderPool, number: int):
    return pool.states()[number - 1]


def health(pool: ProviderPool, number: int) -> tuple[str, str, dict[str, int]]:
    provider = state(pool, number)
    return provider.state, provider.code, provider.errors


def test_reads_go_around_a_provider_that_is_down_and_probe_it_back_in_after_its_backoff(front_ends, clock):
    front_ends.set_faults({"http": {"status": 503}}, front_end=1)
    pool = pool_of(front_ends.urls[:2], clock)

    for _ in range(4):
        assert pool.call(*LATEST)["value"]["blockhash"]
    down = state(pool, 1)
    assert (down.state, down.code, down.errors) == ("out", "rpc_unavailable", {"rpc_unavailable": 1})  # asked once

    front_ends.set_faults({}, front_end=1)
    clock.now += 2.0
    assert state(pool, 1).state == "probing"
    pool.call(*LATEST)  # the probe: a real read, no extra request
    assert (state(pool, 1).state, state(pool, 1).code) == ("in", "")


def test_a_rate_limiting_provider_is_out_for_a_backoff_that_doubles_while_it_keeps_refusing(front_ends, clock):
    front_ends.set_faults({"http": {"status": 429}}, front_end=2)
    pool = pool_of([front_ends.urls[1], front_ends.urls[0]], clock)

    pool.call(*LATEST)
    assert (state(pool, 1).code, state(pool, 1).out_for_secs) == ("rpc_rate_limited", 2.0)
    clock.now += 2.0
    pool.call(*LATEST)
    assert (state(pool, 1).state, state(pool, 1).out_for_secs) == ("out", 4.0)
    clock.now += 100.0
    pool.call(*LATEST)
    assert state(pool, 1).out_for_secs == 8.0  # probe_max_secs
    assert state(pool, 1).errors == {"rpc_rate_limited": 3}
    assert state(pool, 2).state == "in"


def test_an_answer_from_a_lagging_provider_is_not_believed_and_the_provider_is_taken_out(front_ends, clock):
    front_ends.set_faults({"lag": {"slots": 250}}, front_end=1)
    pool = pool_of(front_ends.urls[:2], clock)
    fresh = pool.call(*LATEST)["context"]["slot"]  # whichever answers, the next read must have seen this slot

    method, (config,) = LATEST
    answer = pool.call(method, [{**config, "minContextSlot": fresh}])
    assert answer["context"]["slot"] >= fresh
    pool.call(*LATEST)  # with equal weights the lagging provider is asked at least once in three reads
    lagging = state(pool, 1)
    assert (lagging.state, lagging.code) == ("out", "rpc_lagging")
    assert lagging.lag_slots >= 150
    assert state(pool, 2).state == "in"


def test_when_no_provider_has_seen_the_slot_asked_for_the_answer_is_not_yet(front_ends, clock):
    pool = pool_of(front_ends.urls, clock)
    tip = pool.call(*LATEST)["context"]["slot"]
    method, (config,) = LATEST
    with pytest.raises(NodeBehind):
        pool.call(method, [{**config, "minContextSlot": tip + 100_000}])
    assert {s.state for s in pool.states()} == {"in"}  # behind one read's demand is no fault of theirs


def test_when_every_provider_fails_the_error_is_rpc_providers_out_and_names_hosts_only(front_ends, clock):
    front_ends.set_faults({"http": {"status": 503}}, front_end=1)
    front_ends.set_faults({"http": {"status": 429}}, front_end=2)
    pool = pool_of([f"{front_ends.urls[0]}/v2/secret-key-1", f"{front_ends.urls[1]}?api-key=secret-key-2"], clock)

    with pytest.raises(RpcUnavailable) as raised:
        pool.call(*LATEST)
    assert raised.value.code == "rpc_providers_out"
    assert "rpc_unavailable" in raised.value.message and "rpc_rate_limited" in raised.value.message
    assert "secret-key" not in raised.value.message
    assert front_ends.urls[1].removeprefix("http://") in raised.value.message
    # Every provider out and none due: the one due first is still asked (and fails again), never nobody.
    with pytest.raises(RpcUnavailable):
        pool.call(*LATEST)
    assert state(pool, 1).errors == {"rpc_unavailable": 2}


def test_one_provider_answers_every_call_of_a_pinned_block(front_ends, clock):
    """A null status and the ledger start that proves it must come from one node: no failover inside."""
    front_ends.set_faults({"http": {"status": 503, "methods": ["minimumLedgerSlot"]}}, front_end=1)
    primary, standby = RpcEndpoint(url=front_ends.urls[0]), RpcEndpoint(url=front_ends.urls[1], weight=0)
    pool = pool_of([primary, standby], clock)

    with pool.one_provider(), pytest.raises(RpcUnavailable):
        pool.call(*LATEST)  # the primary answers: the block is its
        pool.call("minimumLedgerSlot")
    assert isinstance(pool.call("minimumLedgerSlot"), int)  # outside, the standby answers for it


def test_reads_follow_the_weights_and_roles(front_ends, clock):
    endpoints = [
        RpcEndpoint(url=front_ends.urls[0], weight=3),
        RpcEndpoint(url=front_ends.urls[1]),
        RpcEndpoint(url=front_ends.urls[2], role="send"),
    ]
    pool = pool_of(endpoints, clock)
    firsts = [pool._read_order()[0].number for _ in range(8)]
    assert (firsts.count(1), firsts.count(2), firsts.count(3)) == (6, 2, 0)


@pytest.mark.parametrize("dropping", [1, 2])
def test_sends_go_to_every_provider_so_one_that_drops_them_loses_nothing(front_ends, clock, dropping):
    front_ends.set_faults({"drop_sends": {"all": True}}, front_end=dropping)
    pool = pool_of(front_ends.urls[:2], clock)
    client = new_client(front_ends.urls[2], rpc=pool)  # its mint is created through the pool too
    targets = wallets(3)

    signed = client.build_mints([MintRequest(wallet, 5, f"r{i}") for i, wallet in enumerate(targets)], memo="p")
    assert client.send_many(signed) == {item.signature: None for item in signed}
    for item in signed:
        assert client.confirm(item).err is None
    assert [balance(front_ends.urls[2], client.mint, wallet) for wallet in targets] == [5, 5, 5]


def test_a_provider_nobody_listens_on_is_out_and_the_next_answers(front_ends, clock):
    pool = pool_of([f"http://127.0.0.1:{free_port()}", front_ends.urls[0]], clock)
    assert pool.call(*LATEST)["value"]["blockhash"]
    assert (state(pool, 1).state, state(pool, 1).code) == ("out", "rpc_unavailable")


def test_a_batch_of_reads_goes_to_one_provider_and_around_one_that_is_down(front_ends, clock):
    """What recording a landed batch's cost does: one JSON-RPC batch of getTransaction, one answer per call."""
    client = new_client(front_ends.urls[2])
    (signed,) = client.build_mints([MintRequest(wallets(1)[0], 7, "cost")], memo="c")
    client.send_many([signed])
    assert client.confirm(signed).err is None
    front_ends.set_faults({"http": {"status": 503}}, front_end=1)
    pool = pool_of(front_ends.urls[:2], clock)
    config = {"encoding": "base64", "commitment": "confirmed", "maxSupportedTransactionVersion": 0}

    landed, unknown = pool.call_batch(
        "getTransaction", [([signed.signature, config], None), ([str(Signature.default()), config], None)]
    )

    assert landed["meta"]["fee"] >= 5000 and unknown is None
    assert (state(pool, 1).code, state(pool, 2).state) == ("rpc_unavailable", "in")


def test_a_lagging_provider_is_believed_again_only_next_to_a_fresh_slot_from_another_provider(front_ends, clock):
    """With the others out nobody shows the tip: the lagging view catching up with the stale best slot proves
    nothing (its blockhashes are still 250 slots old), so the pool says every provider is out."""
    front_ends.set_faults({"lag": {"slots": 250}}, front_end=2)
    pool = pool_of(front_ends.urls, clock)
    for _ in range(3):  # each provider is asked first once in three reads
        assert pool.call(*LATEST)["context"]["slot"] > 250  # never the lagging view
    assert health(pool, 2) == ("out", "rpc_lagging", {"rpc_lagging": 1})

    front_ends.set_faults({"http": {"status": 503}}, front_end=1)
    front_ends.set_faults({"http": {"status": 429}}, front_end=3)
    stale = pool.top_slot
    wait_until(lambda: rpc_call(front_ends.urls[1], "getSlot")["result"] > stale, message="its view passes the top")
    method, (config,) = LATEST
    for _ in range(3):
        clock.now += 10.0  # every provider due for its probe
        with pytest.raises(RpcUnavailable) as raised:
            pool.call(method, [{**config, "minContextSlot": stale}])
        assert raised.value.code == "rpc_providers_out"
    assert health(pool, 2) == ("out", "rpc_lagging", {"rpc_lagging": 1})
    assert pool.top_slot == stale

    front_ends.set_faults({}, front_end=1)
    clock.now += 10.0
    pool.call(*LATEST)  # provider 1's probe: in again
    clock.now += 10.0
    pool.call(*LATEST)  # provider 2's probe, measured against provider 1's answer in the same call: still lagging
    assert (state(pool, 1).state, health(pool, 2)) == ("in", ("out", "rpc_lagging", {"rpc_lagging": 2}))
    assert state(pool, 2).lag_slots >= 150

    front_ends.set_faults({}, front_end=2)  # caught up
    clock.now += 10.0
    pool.call(*LATEST)
    assert (state(pool, 2).state, state(pool, 2).code) == ("in", "")
