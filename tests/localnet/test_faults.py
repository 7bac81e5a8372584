"""Fault modes of ``manage.py localnet`` (docs/LOCALNET.md): what a client sees from a misbehaving RPC pool.

Most tests run against a *frozen* chain: restored from a ledger at slot 300 and ticking once an hour, so a
lag of N slots is exactly N and every status's age is known. Fork vanishing and finality need slots to pass,
so those tests start a private ticking chain. Every test leaves the faults cleared.
"""

import base64
import json
import os
import signal
import threading
import time

import httpx
import pytest
from django.core.management import CommandError, call_command
from solana.exceptions import SolanaRpcException
from solana.rpc.api import Client
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from localnet import ledger
from localnet.faults import CONTROL_METHODS, HTTP_FAULT_BODIES, RPC_METHODS, FaultPlanError, Faults
from localnet.server import _STATUS_TEXT, build_dispatcher
from localnet.state import LocalChain
from tests.conftest import Localnet, free_port, rpc_call, wait_until
from tests.localnet.helpers import SOL, pay, signed

FROZEN_SLOT = 300
OLD_SLOT = 10  # where the frozen chain's oldest transaction landed


@pytest.fixture(scope="module")
def frozen_net(tmp_path_factory):
    """A localnet process at slot 300 whose slots do not advance during the tests; knows its slot hashes."""
    path = tmp_path_factory.mktemp("frozen")
    chain = LocalChain()
    for _ in range(OLD_SLOT):
        chain.advance_slot()
    old_signature = chain.request_airdrop(Keypair().pubkey(), SOL)
    for _ in range(FROZEN_SLOT - OLD_SLOT):
        chain.advance_slot()
    ledger.save(chain, path / "ledger.bin")
    net = Localnet(path, slot_ms=3_600_000).start()
    net.slot_hashes = {slot: str(blockhash) for slot, blockhash in chain.slot_hashes}
    net.old_signature = old_signature
    yield net
    net.stop()


@pytest.fixture
def frozen(frozen_net):
    yield frozen_net
    frozen_net.set_faults({})


def rpc(net: Localnet, method: str, *params) -> dict:
    """The whole JSON-RPC answer (result or error), as a client receives it."""
    return rpc_call(net.url, method, list(params))


def result(net: Localnet, method: str, *params):
    answer = rpc(net, method, *params)
    assert "error" not in answer, answer
    return answer["result"]


def funded(net: Localnet, lamports: int = SOL) -> Keypair:
    payer = Keypair()
    result(net, "requestAirdrop", str(payer.pubkey()), lamports)
    return payer


def transfer(net: Localnet, payer: Keypair, blockhash: str | None = None) -> tuple[VersionedTransaction, str]:
    """A signed transfer of 1000 lamports to a new account, and that account's address."""
    recipient = Keypair().pubkey()
    if blockhash is None:
        blockhash = result(net, "getLatestBlockhash")["value"]["blockhash"]
    return signed(payer, [pay(payer, recipient, 1000)], Hash.from_string(blockhash)), str(recipient)


def send(net: Localnet, transaction: VersionedTransaction, **config) -> dict:
    encoded = base64.b64encode(bytes(transaction)).decode()
    return rpc(net, "sendTransaction", encoded, {"encoding": "base64", **config})


def statuses(net: Localnet, *signatures, search: bool = True) -> dict:
    return result(net, "getSignatureStatuses", [str(s) for s in signatures], {"searchTransactionHistory": search})


def transaction_of(net: Localnet, signature: str, **config) -> dict | None:
    return result(
        net, "getTransaction", signature, {"encoding": "base64", "maxSupportedTransactionVersion": 0, **config}
    )


def balance(net: Localnet, address: str) -> int:
    return result(net, "getBalance", address)["value"]


# -- the plan --------------------------------------------------------------------------------------------


def test_every_rpc_method_is_classified_and_every_http_fault_status_has_a_reason_phrase():
    methods = set(build_dispatcher(LocalChain()).methods)
    assert methods == RPC_METHODS | CONTROL_METHODS
    assert set(HTTP_FAULT_BODIES) <= set(_STATUS_TEXT)


def test_a_plan_comes_back_normalised_and_the_description_says_what_is_left(frozen):
    plan = {
        "lag": {"slots": 20, "methods": ["getSlot"]},
        "drop_sends": {"count": 2},
        "fork": {"count": 1},
        "history": {"mode": "gap", "slots": 50},
        "http": {"status": 503, "seconds": 60, "methods": ["getVersion"]},
        "finality": {},
    }
    assert frozen.set_faults(plan) == {
        "lag": {"slots": 20, "methods": ["getSlot"], "every": 1},
        "drop_sends": {"count": 2},
        "fork": {"count": 1, "vanish_after_slots": 5},
        "history": {"mode": "gap", "slots": 50},
        "http": {"status": 503, "seconds": 60, "count": None, "methods": ["getVersion"], "body": None},
        "finality": {"confirmed_after": 1, "finalized_after": 32},
    }
    payer = funded(frozen)
    send(frozen, transfer(frozen, payer)[0])
    described = frozen.faults()
    assert described["drop_sends"] == {"count": 2, "remaining": 1}
    assert described["fork"]["remaining"] == 1
    assert 0 < described["http"]["seconds_left"] <= 60
    assert frozen.set_faults({}) == {} and frozen.faults() == {}


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"lag": {"slots": 512}}, "lag.slots must be an integer 1..511"),
        ({"lag": {"slots": 5, "methods": ["sendTransaction"]}}, "lag.methods: sendTransaction is never lagged"),
        ({"lag": {"slots": 5, "methods": ["getSignatureStatus"]}}, "lag.methods: getSignatureStatus is not one"),
        ({"drop_sends": {"count": 0}}, "drop_sends.count must be an integer at least 1"),
        ({"drop_sends": {"all": True, "count": 3}}, "drop_sends takes either"),
        ({"fork": {"count": 1, "vanish_after": 5}}, "fork.vanish_after is not a setting of fork"),
        ({"history": {"mode": "archive"}}, 'history.mode must be "unavailable" or "gap"'),
        ({"http": {"status": 418}}, "http.status must be one of"),
        ({"http": {"status": 200}}, "http.body is needed with status 200"),
        ({"finality": {"confirmed_after": 10, "finalized_after": 5}}, "finality.finalized_after must be"),
        ({"partition": {}}, "partition is not a fault mode"),
        ({"congestion": {"min_microlamports": 0}}, "congestion.min_microlamports must be an integer 1.."),
        ({"congestion": {"min_microlamports": 5, "seconds": -1}}, "congestion.seconds must be a positive number"),
        ({"congestion": {"min_microlamports": 5, "count": 0}}, "congestion.count must be an integer at least 1"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_key_and_the_old_plan_stays(frozen, plan, message):
    frozen.set_faults({"drop_sends": {"count": 1}})
    answer = rpc(frozen, "localnet_setFaults", plan)
    assert answer["error"]["code"] == -32602
    assert message in answer["error"]["message"]
    assert frozen.faults() == {"drop_sends": {"count": 1, "remaining": 1}}


# -- lag -------------------------------------------------------------------------------------------------


def test_a_lagging_replica_answers_from_its_own_tip_with_current_account_data(frozen):
    lagged = FROZEN_SLOT - 100
    payer = funded(frozen)
    airdrop = result(frozen, "requestAirdrop", str(payer.pubkey()), SOL)
    frozen.set_faults({"lag": {"slots": 100}})

    assert result(frozen, "getSlot") == lagged
    assert result(frozen, "getBlockHeight") == lagged
    assert result(frozen, "getEpochInfo")["absoluteSlot"] == lagged
    latest = result(frozen, "getLatestBlockhash")
    assert latest["context"]["slot"] == lagged
    assert latest["value"] == {"blockhash": frozen.slot_hashes[lagged], "lastValidBlockHeight": lagged + 150}
    assert result(frozen, "isBlockhashValid", frozen.slot_hashes[FROZEN_SLOT])["value"] is False  # newer
    assert result(frozen, "isBlockhashValid", frozen.slot_hashes[lagged])["value"] is True

    behind = rpc(frozen, "getSlot", {"minContextSlot": FROZEN_SLOT})["error"]
    assert behind == {
        "code": -32016, "message": "Minimum context slot has not been reached", "data": {"contextSlot": lagged},
    }  # fmt: skip
    assert rpc(frozen, "getBalance", str(payer.pubkey()), {"minContextSlot": lagged + 1})["error"]["code"] == -32016
    account_balance = result(frozen, "getBalance", str(payer.pubkey()))
    assert account_balance == {"context": {"slot": lagged, "apiVersion": "2.1.0"}, "value": 2 * SOL}

    not_yet = statuses(frozen, airdrop)
    assert not_yet["context"]["slot"] == lagged and not_yet["value"] == [None]
    old = statuses(frozen, frozen.old_signature)["value"][0]
    assert old["slot"] == OLD_SLOT and old["confirmationStatus"] == "finalized"

    transaction, recipient = transfer(frozen, payer, frozen.slot_hashes[lagged])
    assert result(frozen, "sendTransaction", base64.b64encode(bytes(transaction)).decode(), {"encoding": "base64"})
    assert balance(frozen, recipient) == 1000  # sends go to the leader: never lagged
    frozen.set_faults({})
    assert statuses(frozen, airdrop, transaction.signatures[0])["value"][1]["slot"] == FROZEN_SLOT


def test_lag_on_every_second_call_alternates_like_a_round_robin_pool(frozen):
    frozen.set_faults({"lag": {"slots": 30, "methods": ["getSlot", "getBlockHeight"], "every": 2}})
    answers = [result(frozen, "getSlot"), result(frozen, "getBlockHeight"), result(frozen, "getSlot")]
    assert answers == [FROZEN_SLOT - 30, FROZEN_SLOT, FROZEN_SLOT - 30]
    assert result(frozen, "getLatestBlockhash")["context"]["slot"] == FROZEN_SLOT  # not a listed method


def test_a_replica_lagging_past_blockhash_expiry_hands_out_a_blockhash_the_leader_refuses(frozen):
    frozen.set_faults({"lag": {"slots": 200, "methods": ["getLatestBlockhash", "isBlockhashValid"]}})
    latest = result(frozen, "getLatestBlockhash")["value"]
    assert latest["lastValidBlockHeight"] == FROZEN_SLOT - 200 + 150 < result(frozen, "getBlockHeight")
    assert result(frozen, "isBlockhashValid", latest["blockhash"])["value"] is True  # at the replica's height
    transaction, recipient = transfer(frozen, funded(frozen), latest["blockhash"])
    refused = send(frozen, transaction)["error"]
    assert refused["code"] == -32002 and refused["data"]["err"] == "BlockhashNotFound"
    assert balance(frozen, recipient) == 0


# -- sends -----------------------------------------------------------------------------------------------


def test_dropped_sends_answer_the_signature_and_a_resend_after_the_count_lands_once(frozen):
    payer = funded(frozen)
    transaction, recipient = transfer(frozen, payer)
    frozen.set_faults({"drop_sends": {"count": 2}})
    for _ in range(2):
        assert send(frozen, transaction)["result"] == str(transaction.signatures[0])
        assert statuses(frozen, transaction.signatures[0])["value"] == [None]
    assert balance(frozen, recipient) == 0 and balance(frozen, str(payer.pubkey())) == SOL
    assert frozen.faults()["drop_sends"]["remaining"] == 0

    assert send(frozen, transaction)["result"] == str(transaction.signatures[0])
    assert statuses(frozen, transaction.signatures[0])["value"][0]["slot"] == FROZEN_SLOT
    assert balance(frozen, recipient) == 1000
    replay = send(frozen, transaction)["error"]
    assert replay["code"] == -32002 and replay["data"]["err"] == "AlreadyProcessed"


def test_each_transaction_of_a_batch_counts_against_drop_sends(frozen):
    payer = funded(frozen)
    (first, to_first), (second, to_second), (third, to_third) = (transfer(frozen, payer) for _ in range(3))
    frozen.set_faults({"drop_sends": {"count": 2}})
    batch = [
        {"jsonrpc": "2.0", "id": i, "method": "sendTransaction",
         "params": [base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}]}
        for i, tx in enumerate((first, second, third))
    ]  # fmt: skip
    answers = httpx.post(frozen.url, json=batch).json()
    assert [answer["result"] for answer in answers] == [str(tx.signatures[0]) for tx in (first, second, third)]
    assert [balance(frozen, to) for to in (to_first, to_second, to_third)] == [0, 0, 1000]


def test_drop_all_drops_every_send_until_cleared_and_preflight_still_answers(frozen):
    payer = funded(frozen, 10_000)
    frozen.set_faults({"drop_sends": {"all": True}})
    transaction, recipient = transfer(frozen, payer)
    for _ in range(3):
        assert send(frozen, transaction)["result"] == str(transaction.signatures[0])
    assert balance(frozen, recipient) == 0
    broke = Keypair()  # no lamports for the fee: the node refuses it before it would be dropped
    refused = send(frozen, transfer(frozen, broke)[0])["error"]
    assert refused["code"] == -32002

    frozen.set_faults({})
    send(frozen, transaction)
    assert balance(frozen, recipient) == 1000


def test_a_send_seen_on_a_minority_fork_shows_processed_vanishes_and_a_resend_then_lands(make_localnet):
    net = make_localnet(slot_ms=50)
    payer = funded(net)
    net.set_faults({"fork": {"count": 2, "vanish_after_slots": 40}})
    transaction, recipient = transfer(net, payer)
    signature = transaction.signatures[0]
    assert send(net, transaction)["result"] == str(signature)
    seen = statuses(net, signature)["value"][0]
    assert seen["confirmations"] == 0 and seen["err"] is None and seen["confirmationStatus"] == "processed"
    send(net, transaction)  # ignored while it is on the fork
    assert statuses(net, signature, search=False)["value"][0]["slot"] == seen["slot"]
    assert net.faults()["fork"]["on_fork"] == 1 and net.faults()["fork"]["remaining"] == 1

    wait_until(lambda: statuses(net, signature)["value"] == [None], interval=0.05, message="the fork vanishing")
    assert balance(net, recipient) == 0 and "on_fork" not in net.faults()["fork"]
    assert statuses(net, signature)["value"] == [None]

    send(net, transaction)  # the blockhash is still valid: the cluster executes it now, not a second fork
    landed = statuses(net, signature)["value"][0]
    assert landed["slot"] > seen["slot"] and landed["confirmationStatus"] == "finalized"
    assert balance(net, recipient) == 1000 and net.faults()["fork"]["remaining"] == 1
    net.set_faults({})


# -- history ---------------------------------------------------------------------------------------------


def test_a_node_without_transaction_history_refuses_history_searches_with_32011(frozen):
    payer = funded(frozen)
    transaction, _ = transfer(frozen, payer)
    send(frozen, transaction)
    frozen.set_faults({"history": {"mode": "unavailable"}})
    signature = str(transaction.signatures[0])
    refused = rpc(frozen, "getSignatureStatuses", [signature], {"searchTransactionHistory": True})["error"]
    assert refused == {"code": -32011, "message": "Transaction history is not available from this node"}
    assert rpc(frozen, "getTransaction", signature, {"encoding": "base64"})["error"]["code"] == -32011
    assert statuses(frozen, signature, search=False)["value"][0]["slot"] == FROZEN_SLOT  # the status cache
    frozen.set_faults({})
    assert transaction_of(frozen, signature)["slot"] == FROZEN_SLOT


def test_a_pruned_node_forgets_old_statuses_and_reports_where_its_ledger_starts(frozen):
    assert result(frozen, "minimumLedgerSlot") == 0 and result(frozen, "getFirstAvailableBlock") == 0
    recent = result(frozen, "requestAirdrop", str(Keypair().pubkey()), SOL)
    frozen.set_faults({"history": {"mode": "gap", "slots": 50}})
    assert result(frozen, "minimumLedgerSlot") == FROZEN_SLOT - 50
    assert result(frozen, "getFirstAvailableBlock") == FROZEN_SLOT - 50
    old, new = statuses(frozen, frozen.old_signature, recent)["value"]
    assert old is None and new["slot"] == FROZEN_SLOT
    assert transaction_of(frozen, frozen.old_signature) is None
    frozen.set_faults({})
    assert statuses(frozen, frozen.old_signature)["value"][0]["slot"] == OLD_SLOT


# -- http ------------------------------------------------------------------------------------------------


def test_an_http_spell_answers_its_status_for_count_requests_and_spares_the_control_methods(frozen):
    frozen.set_faults({"http": {"status": 403, "count": 2}})
    assert frozen.faults()["http"]["remaining"] == 2  # control requests do not count
    forbidden = httpx.post(frozen.url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"})
    assert forbidden.status_code == 403 and forbidden.headers["content-type"].startswith("application/json")
    assert forbidden.json() == {
        "jsonrpc": "2.0", "error": {"code": -32052, "message": "API key is not allowed to access blockchain"},
        "id": None,
    }  # fmt: skip
    with pytest.raises(SolanaRpcException) as raised:  # what solana-py's Client makes of it
        Client(frozen.url).get_slot()
    assert isinstance(raised.value.__cause__, httpx.HTTPStatusError)
    assert raised.value.__cause__.response.status_code == 403
    assert frozen.faults()["http"]["remaining"] == 0
    assert Client(frozen.url).get_slot().value == FROZEN_SLOT


def test_a_429_spell_sends_retry_after_and_hits_only_its_methods_judging_a_batch_by_its_first(frozen):
    frozen.set_faults({"http": {"status": 429, "methods": ["sendTransaction", "getBalance"]}})
    assert httpx.post(frozen.url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"}).status_code == 200
    payer = funded(frozen)  # requestAirdrop is not a listed method
    limited = httpx.post(
        frozen.url,
        json=[
            {"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": [str(payer.pubkey())]},
            {"jsonrpc": "2.0", "id": 2, "method": "getSlot"},
        ],
    )
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == 429
    transaction, recipient = transfer(frozen, payer)
    with pytest.raises(SolanaRpcException):
        Client(frozen.url).send_raw_transaction(bytes(transaction))
    frozen.set_faults({})
    assert balance(frozen, recipient) == 0  # a refused request never reached the chain


def test_a_200_spell_can_answer_an_html_page(frozen):
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    frozen.set_faults({"http": {"status": 200, "body": page, "count": 1}})
    answer = httpx.post(frozen.url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"})
    assert answer.status_code == 200 and answer.text == page
    assert answer.headers["content-type"].startswith("text/html")
    assert Client(frozen.url).get_slot().value == FROZEN_SLOT


def test_a_spell_with_seconds_ends_by_itself_and_spares_the_health_endpoint(frozen):
    frozen.set_faults({"http": {"status": 503, "seconds": 0.3}})
    assert 0 <= frozen.faults()["http"]["seconds_left"] <= 0.3
    assert httpx.get(f"{frozen.url}/health").text == "ok"  # a GET, not a JSON-RPC request
    wait_until(lambda: frozen.faults()["http"]["seconds_left"] == 0, interval=0.05, message="the spell ending")
    assert Client(frozen.url).get_slot().value == FROZEN_SLOT


# -- the fee market --------------------------------------------------------------------------------------


def priced(net: Localnet, payer: Keypair, microlamports: int, units: int = 10_000) -> tuple[VersionedTransaction, str]:
    """A transfer of 1000 lamports to a new account at a compute-unit price, and that account's address."""
    recipient = Keypair().pubkey()
    blockhash = Hash.from_string(result(net, "getLatestBlockhash")["value"]["blockhash"])
    budget = [set_compute_unit_limit(units), set_compute_unit_price(microlamports)]
    return signed(payer, [*budget, pay(payer, recipient, 1000)], blockhash), str(recipient)


def fees(net: Localnet, *accounts: str) -> list[dict]:
    params = [list(accounts)] if accounts else []
    return result(net, "getRecentPrioritizationFees", *params)


def test_a_congestion_spell_drops_cheaper_sends_and_the_fees_answer_its_price(frozen):
    payer = funded(frozen)
    quiet = [{"slot": slot, "prioritizationFee": 0} for slot in range(FROZEN_SLOT - 149, FROZEN_SLOT + 1)]
    assert fees(frozen) == quiet
    cheap, to_cheap = priced(frozen, payer, 4_999)
    frozen.set_faults({"congestion": {"min_microlamports": 5_000, "count": 2}})
    assert send(frozen, cheap)["result"] == str(cheap.signatures[0])  # accepted, never scheduled
    assert statuses(frozen, cheap.signatures[0])["value"] == [None] and balance(frozen, to_cheap) == 0
    assert frozen.faults()["congestion"] == {
        "min_microlamports": 5_000, "seconds": None, "count": 2, "active": True, "remaining": 1
    }  # fmt: skip
    answer = fees(frozen, str(payer.pubkey()), to_cheap)
    assert len(answer) == 150 and answer[-1] == {"slot": FROZEN_SLOT, "prioritizationFee": 5_000}

    paying, to_paying = priced(frozen, payer, 5_000, units=10_000)
    before = balance(frozen, str(payer.pubkey()))
    send(frozen, paying)
    assert balance(frozen, to_paying) == 1000
    fee = 5_000 + 50  # a signature, and 10,000 units at 5,000 micro-lamports
    assert transaction_of(frozen, str(paying.signatures[0]))["meta"]["fee"] == fee
    assert before - balance(frozen, str(payer.pubkey())) == fee + 1000
    message = base64.b64encode(bytes(paying.message)).decode()
    assert result(frozen, "getFeeForMessage", message)["value"] == fee

    send(frozen, cheap)  # the second drop uses up the count: the spell is over
    assert balance(frozen, to_cheap) == 0 and frozen.faults()["congestion"]["active"] is False
    send(frozen, cheap)
    assert balance(frozen, to_cheap) == 1000
    assert fees(frozen)[-1]["prioritizationFee"] == 5_000  # the spell's slots keep their price in the answer
    too_many = rpc(frozen, "getRecentPrioritizationFees", [str(Keypair().pubkey())] * 129)["error"]
    assert too_many["code"] == -32602 and "max 128" in too_many["message"]


def test_a_congestion_spell_with_seconds_ends_by_itself(make_localnet):
    net = make_localnet(slot_ms=20)
    payer = funded(net)
    net.set_faults({"congestion": {"min_microlamports": 100, "seconds": 0.4}})
    cheap, to_cheap = priced(net, payer, 0)
    send(net, cheap)
    wait_until(lambda: not net.faults()["congestion"]["active"], interval=0.05, message="the spell ending")
    answer = fees(net)
    priced_slots = [entry["slot"] for entry in answer if entry["prioritizationFee"] == 100]
    assert priced_slots and answer[-1]["prioritizationFee"] == 0  # the spell's slots, then a quiet market
    send(net, cheap)
    assert balance(net, to_cheap) == 1000
    net.set_faults({})


# -- finality --------------------------------------------------------------------------------------------


def test_without_a_finality_fault_a_landed_transaction_is_finalized_at_once(frozen):
    signature = result(frozen, "requestAirdrop", str(Keypair().pubkey()), SOL)
    status = statuses(frozen, signature)["value"][0]
    assert status["confirmations"] is None and status["confirmationStatus"] == "finalized"


def test_finality_by_age_processed_then_confirmed_then_finalized(make_localnet):
    net = make_localnet(slot_ms=10)
    net.set_faults({"finality": {"confirmed_after": 3, "finalized_after": 12}})
    signature = result(net, "requestAirdrop", str(Keypair().pubkey()), SOL)
    first = statuses(net, signature)
    seen = []

    def finalized() -> bool:
        answer = statuses(net, signature)
        seen.append((answer["context"]["slot"] - answer["value"][0]["slot"], answer["value"][0]))
        return seen[-1][1]["confirmationStatus"] == "finalized"

    wait_until(finalized, interval=0.01, message="finalized")
    first_age = first["context"]["slot"] - first["value"][0]["slot"]
    seen.insert(0, (first_age, first["value"][0]))
    for age, status in seen:
        expected = "processed" if age < 3 else "confirmed" if age < 12 else "finalized"
        assert status["confirmationStatus"] == expected
        assert status["confirmations"] == (age if age < 12 else None)
    net.set_faults({})


def test_get_transaction_waits_for_the_commitment_it_asks_for(frozen):
    signature = result(frozen, "requestAirdrop", str(Keypair().pubkey()), SOL)
    frozen.set_faults({"finality": {"confirmed_after": 0, "finalized_after": 1}})
    status = statuses(frozen, signature)["value"][0]
    assert (status["confirmations"], status["confirmationStatus"]) == (0, "confirmed")
    assert transaction_of(frozen, signature) is None  # finalized by default
    found = transaction_of(frozen, signature, commitment="confirmed")
    assert found["slot"] == FROZEN_SLOT


# -- the command -----------------------------------------------------------------------------------------


def test_the_command_starts_with_a_plan_from_a_file_and_logs_it(tmp_path, capsys):
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"history": {"mode": "unavailable"}}))
    port = free_port()
    described = {}

    def describe_then_stop() -> None:
        url = f"http://127.0.0.1:{port}"
        described.update(wait_until(lambda: _faults_or_none(url), timeout=30, interval=0.05))
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=describe_then_stop, daemon=True)
    thread.start()
    call_command("localnet", "--port", str(port), "--faults", f"@{plan}")
    thread.join()
    assert described == {"history": {"mode": "unavailable"}}
    assert 'localnet faults set: {"history":{"mode":"unavailable"}}' in capsys.readouterr().out.splitlines()


def _faults_or_none(url: str) -> dict | None:
    try:
        return rpc_call(url, "localnet_getFaults", timeout=1)["result"]
    except OSError:
        time.sleep(0.05)
        return None


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("{lag", "--faults: not valid JSON"),
        ('{"lag": {"slots": 0}}', "--faults: lag.slots must be an integer 1..511"),
        ("@/nonexistent/faults.json", "--faults: cannot read /nonexistent/faults.json"),
    ],
)
def test_the_command_refuses_a_bad_fault_plan(option, message):
    with pytest.raises(CommandError, match=message):
        call_command("localnet", "--faults", option)


def test_faults_log_every_change_in_process():
    lines: list[str] = []
    faults = Faults(LocalChain(), on_change=lines.append)
    faults.set({"drop_sends": {"all": True}})
    faults.set({})
    with pytest.raises(FaultPlanError, match="drop_sends takes either"):
        faults.set({"drop_sends": {"all": False}})
    assert lines == ['localnet faults set: {"drop_sends":{"all":true}}', "localnet faults cleared"]
