"""Transport and protocol failures the localnet never produces (HTTP 429/5xx, garbage, slowness, a status that
flips as a blockhash expires) come from a scripted HTTP server on loopback: a fake, because a real node
cannot be made to misbehave on cue."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.transaction import VersionedTransaction

from minting.chain import (
    ChainClient,
    InsufficientFunds,
    MintRequest,
    NodeBehind,
    RpcBadResponse,
    RpcRejected,
    RpcTimeout,
    RpcUnavailable,
    SignedMint,
    WrongAuthority,
)
from minting.chain import instructions as ix
from minting.chain.records import SignatureStatus

BLOCKHASH = str(Hash.new_unique())


class ScriptedRpc:
    """``routes[method](params) -> (http status, body)``; a list of answers is served in order."""

    def __init__(self) -> None:
        self.routes: dict = {}
        self.calls: list[str] = []
        self.batch: list[dict | None] = []  # answers to a JSON-RPC batch, by position (None: unanswered)
        self.whole_batch: object = None  # one answer for the whole batch instead
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if isinstance(request, list):
                    self.answer_batch(request)
                    return
                scripted.calls.append(request["method"])
                route = scripted.routes[request["method"]]
                status, body = route.pop(0) if isinstance(route, list) else route(request["params"])
                if not isinstance(body, str):
                    body = json.dumps({"jsonrpc": "2.0", "id": request["id"], **body})
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def answer_batch(self, requests):
                if scripted.whole_batch is not None:
                    answer = scripted.whole_batch
                    body = answer if isinstance(answer, str) else json.dumps(answer)
                else:
                    answers = [
                        {"jsonrpc": "2.0", "id": request["id"], **scripted.batch[i]}
                        for i, request in enumerate(requests)
                        if scripted.batch[i] is not None
                    ]
                    body = json.dumps(answers)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


def result(value):
    return 200, {"result": value}


def status(err=None, confirmation="finalized"):
    return {"slot": 3, "confirmations": None, "err": err, "confirmationStatus": confirmation}


@pytest.fixture
def rpc():
    scripted = ScriptedRpc()
    yield scripted
    scripted.server.shutdown()


@pytest.fixture
def client(rpc):
    client = ChainClient(rpc_url=rpc.url, authority=Keypair(), mint=Keypair().pubkey(), decimals=9, timeout=0.5)
    rpc.routes["getLatestBlockhash"] = lambda p: result({"context": {"slot": 1}, "value": {
        "blockhash": BLOCKHASH, "lastValidBlockHeight": 150}})  # fmt: skip
    rpc.routes["getEpochInfo"] = lambda p: epoch(10)
    rpc.routes["minimumLedgerSlot"] = lambda p: result(0)
    yield client
    client.close()


def epoch(height, slot=None):
    return result({"absoluteSlot": height if slot is None else slot, "blockHeight": height, "epoch": 0,
                   "slotIndex": height, "slotsInEpoch": 432000, "transactionCount": 1})  # fmt: skip


def statuses(*values, slot=3):
    return result({"context": {"slot": slot}, "value": list(values)})


def echo_signature(params):
    transaction = VersionedTransaction.from_bytes(base64.b64decode(params[0]))
    return result(str(transaction.signatures[0]))


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        ((429, "slow down"), RpcUnavailable, "rpc_rate_limited"),
        ((503, "maintenance"), RpcUnavailable, "rpc_unavailable"),
        ((403, '{"error": "API key not allowed"}'), RpcUnavailable, "rpc_unauthorized"),
        ((401, "unauthorized"), RpcUnavailable, "rpc_unauthorized"),
        ((404, "no such path"), RpcUnavailable, "rpc_http_error"),
        ((413, "too large"), RpcUnavailable, "rpc_http_error"),
        ((200, {"error": {"code": -32099, "message": "provider quota"}}), RpcUnavailable, "rpc_error"),
        ((200, {"error": {"code": -32601, "message": "Method not found"}}), RpcRejected, "rpc_method_not_found"),
        ((200, "<html>proxy error</html>"), RpcBadResponse, "rpc_bad_response"),
        ((200, "[1, 2]"), RpcBadResponse, "rpc_bad_response"),
        ((200, {"error": "broken"}), RpcBadResponse, "rpc_bad_response"),
        ((200, {}), RpcBadResponse, "rpc_bad_response"),
        ((200, {"error": {"code": -32005, "message": "Node is behind by 9 slots"}}), NodeBehind, "node_behind"),
    ],
)
def test_http_and_protocol_failures_are_typed(rpc, client, answer, error, code):
    """Provider errors (HTTP, unknown codes, garbage) are transient: the platform's, never a transaction's."""
    rpc.routes["getEpochInfo"] = lambda params: answer
    with pytest.raises(error) as caught:
        client.get_block_height()
    assert caught.value.code == code
    assert caught.value.permanent == (error is RpcRejected)


def test_a_node_slower_than_the_timeout_is_transient_rpc_timeout(rpc, client):
    rpc.routes["getEpochInfo"] = lambda params: (time.sleep(1.0), epoch(1))[1]
    with pytest.raises(RpcTimeout) as caught:
        client.get_block_height()
    assert not caught.value.permanent


def test_a_result_without_its_value_is_a_bad_response(rpc, client):
    rpc.routes["getLatestBlockhash"] = lambda params: result({"blockhash": BLOCKHASH})
    with pytest.raises(RpcBadResponse, match="without a context slot"):
        client.latest_blockhash()


def test_send_raw_refuses_an_answer_naming_another_signature(rpc, client):
    rpc.routes["sendTransaction"] = lambda params: result("1" * 64)
    signed = SignedMint("x", bytes(_transaction(client)), 150, (), "")
    with pytest.raises(RpcBadResponse):
        client.send_raw(signed.raw)


def test_execute_raises_the_typed_error_of_a_transaction_that_failed_on_chain(rpc, client):
    rpc.routes["sendTransaction"] = echo_signature
    rpc.routes["getSignatureStatuses"] = lambda params: result(
        {"context": {"slot": 3}, "value": [status({"InstructionError": [0, {"Custom": 4}]})]}
    )
    mint = ix.mint_to_checked(
        mint=client.mint, destination=Keypair().pubkey(), authority=client.authority.pubkey(), amount=1, decimals=9
    )
    with pytest.raises(WrongAuthority):
        client.execute([mint])


def test_confirm_returns_a_transaction_that_lands_just_as_its_blockhash_expires(rpc, client):
    rpc.routes["getEpochInfo"] = lambda params: epoch(151)
    rpc.routes["getSignatureStatuses"] = [statuses(None), statuses(status(), slot=151)]
    signed = SignedMint("sig", b"", 150, (), "")
    assert client.confirm(signed).err is None
    assert rpc.calls.count("getSignatureStatuses") == 2


def test_confirm_waits_until_the_configured_commitment(rpc, client):
    rpc.routes["getSignatureStatuses"] = [
        statuses(status(confirmation="processed")),
        statuses(status(confirmation="confirmed")),
    ]
    assert client.confirm(SignedMint("sig", b"", 150, (), ""), poll=0.01).confirmation_status == "confirmed"


def test_a_status_without_a_confirmation_level_is_rooted_only_without_a_confirmation_count():
    assert SignatureStatus("sig", 1, None, None).reached("finalized")
    assert not SignatureStatus("sig", 1, None, None, confirmations=3).reached("confirmed")
    assert not SignatureStatus("sig", 1, None, "processed").reached("confirmed")


def test_a_status_read_from_a_node_behind_the_transactions_own_slot_is_asked_again(rpc, client):
    rpc.routes["getSignatureStatuses"] = [statuses(None, slot=2), statuses(status(), slot=9)]
    outcomes = client.outcomes([SignedMint("sig", b"", 150, (), "", context_slot=5)])
    assert list(outcomes.landed) == ["sig"] and outcomes.blocked is None


def test_a_lagging_status_read_never_proves_a_transaction_expired(rpc, client):
    """The height is past the last valid block height, but the status node's context is behind the slot at
    which that height was seen: its null means nothing yet."""
    rpc.routes["getEpochInfo"] = lambda params: epoch(400, slot=410)
    rpc.routes["getSignatureStatuses"] = lambda params: statuses(None, slot=160)
    outcomes = client.outcomes([SignedMint("sig", b"", 150, (), "", context_slot=5)])
    assert (outcomes.expired, outcomes.undecided, outcomes.blocked.code) == (set(), ["sig"], "node_behind")


def test_a_height_read_behind_the_batchs_own_slot_decides_nothing(rpc, client):
    seen = []
    rpc.routes["getEpochInfo"] = lambda params: (seen.append(params[0]), (200, {"error": {
        "code": -32016, "message": "Minimum context slot has not been reached"}}))[1]  # fmt: skip
    rpc.routes["getSignatureStatuses"] = lambda params: statuses(None, slot=100)
    outcomes = client.outcomes([SignedMint("sig", b"", 150, (), "", context_slot=77)])
    assert seen[0]["minContextSlot"] == 77 and seen[0]["commitment"] == "confirmed"
    assert (outcomes.expired, outcomes.undecided, outcomes.blocked.code) == (
        set(),
        ["sig"],
        "min_context_slot_not_reached",
    )


def test_a_node_whose_ledger_starts_after_the_transaction_cannot_prove_it_expired(rpc, client):
    rpc.routes["getEpochInfo"] = lambda params: epoch(400)
    rpc.routes["getSignatureStatuses"] = lambda params: statuses(None, slot=400)
    rpc.routes["minimumLedgerSlot"] = lambda params: result(300)
    outcomes = client.outcomes([SignedMint("old", b"", 150, (), "", context_slot=5)])
    assert (outcomes.expired, outcomes.blocked.code) == (set(), "history_unavailable")
    rpc.routes["minimumLedgerSlot"] = lambda params: result(0)
    assert client.outcomes([SignedMint("old", b"", 150, (), "", context_slot=5)]).expired == {"old"}


def test_a_node_without_history_is_transient_history_unavailable(rpc, client):
    def answer(params):
        if params[1]["searchTransactionHistory"]:
            return 200, {"error": {"code": -32011, "message": "Transaction history is not available from this node"}}
        return statuses(None)

    rpc.routes["getEpochInfo"] = lambda params: epoch(400)
    rpc.routes["getSignatureStatuses"] = answer
    outcomes = client.outcomes([SignedMint("sig", b"", 150, (), "")])
    assert outcomes.blocked.code == "history_unavailable" and not outcomes.blocked.permanent
    assert outcomes.undecided == ["sig"]


def test_a_failed_status_makes_the_client_forget_known_token_accounts(rpc, client):
    client._known_accounts.add(Keypair().pubkey())
    rpc.routes["getSignatureStatuses"] = lambda params: result({"context": {"slot": 3}, "value": [status("x")]})
    client.get_signature_statuses(["sig"])
    assert client._known_accounts == set()


def test_build_mints_validates_the_memo_and_the_merged_amount(client):
    wallet = str(Keypair().pubkey())
    assert client.build_mints([], memo="empty") == []
    with pytest.raises(ValueError, match="memo"):
        client.build_mints([MintRequest(wallet, 1)], memo="")
    with pytest.raises(ValueError, match="memo"):
        client.build_mints([MintRequest(wallet, 1)], memo="m" * 200)


def test_a_wallets_amounts_beyond_one_u64_are_split_over_instructions(rpc, client):
    wallet = str(Keypair().pubkey())
    rpc.routes["getMultipleAccounts"] = lambda params: result(
        {"context": {"slot": 1}, "value": [{"data": ["", "base64"]}]}
    )
    rpc.routes["getBalance"] = lambda params: result({"context": {"slot": 1}, "value": 10**9})
    (signed,) = client.build_mints([MintRequest(wallet, 2**63, "a"), MintRequest(wallet, 2**63, "b")], memo="big")
    assert [r.key for r in signed.requests] == ["a", "b"]
    assert signed.instruction_wallets == (wallet, wallet, None) and signed.context_slot == 1


def test_a_fee_payer_that_cannot_pay_is_refused_before_anything_is_signed(rpc, client):
    wallet = str(Keypair().pubkey())
    rpc.routes["getMultipleAccounts"] = lambda params: result({"context": {"slot": 1}, "value": [None]})
    rpc.routes["getMinimumBalanceForRentExemption"] = lambda params: result(2_039_280)
    rpc.routes["getBalance"] = lambda params: result({"context": {"slot": 1}, "value": 2_000_000})
    with pytest.raises(InsufficientFunds, match="2000000 lamports") as caught:
        client.build_mints([MintRequest(wallet, 5)], memo="dry")
    assert caught.value.permanent and client.payer_lamports == 2_000_000


def _transaction(client):
    message = Message.new_with_blockhash([ix.memo("x")], client.authority.pubkey(), Hash.from_string(BLOCKHASH))
    return VersionedTransaction(message, [client.authority])


def signed_batch(client, count):
    blockhash = Hash.from_string(BLOCKHASH)
    items = []
    for index in range(count):
        message = Message.new_with_blockhash([ix.memo(f"b:{index}")], client.authority.pubkey(), blockhash)
        transaction = VersionedTransaction(message, [client.authority])
        items.append(SignedMint(str(transaction.signatures[0]), bytes(transaction), 150, (), f"b:{index}"))
    return items


def test_send_many_reads_each_answer_of_a_batch_on_its_own(rpc, client):
    items = signed_batch(client, 4)

    preflight = {"code": -32002, "message": "Transaction simulation failed", "data": {"err": "AlreadyProcessed"}}
    expired = {"code": -32002, "message": "Transaction simulation failed", "data": {"err": "BlockhashNotFound"}}
    rpc.batch = [
        {"result": items[0].signature},
        {"error": preflight},
        {"error": expired},
        None,  # left unanswered
    ]
    outcomes = client.send_many(items)
    assert outcomes[items[0].signature] is None
    assert outcomes[items[1].signature] is None  # already processed: it landed before
    assert outcomes[items[2].signature].code == "blockhash_expired"
    assert outcomes[items[3].signature].code == "rpc_bad_response"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no batches"}}, "rpc_invalid_request"),
        ({"jsonrpc": "2.0", "id": None, "result": "odd"}, "rpc_bad_response"),
        ("7", "rpc_bad_response"),
    ],
)  # fmt: skip
def test_a_batch_refused_as_a_whole_gives_every_transaction_that_error(rpc, client, answer, code):
    items = signed_batch(client, 3)
    rpc.whole_batch = answer
    outcomes = client.send_many(items)
    assert {error.code for error in outcomes.values()} == {code}


def test_error_messages_name_the_provider_host_never_its_api_key():
    client = ChainClient(
        rpc_url="http://127.0.0.1:1/v2/SECRETKEY?api-key=SECRET2", authority=Keypair(), mint=Keypair().pubkey(),
        decimals=9, timeout=0.5,
    )  # fmt: skip
    with pytest.raises(RpcUnavailable) as caught:
        client.get_block_height()
    assert "http://127.0.0.1:1" in str(caught.value) and "SECRET" not in str(caught.value)
