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
    rpc.routes["getBlockHeight"] = lambda p: result(10)
    yield client
    client.close()


def echo_signature(params):
    transaction = VersionedTransaction.from_bytes(base64.b64decode(params[0]))
    return result(str(transaction.signatures[0]))


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        ((429, "slow down"), RpcUnavailable, "rpc_rate_limited"),
        ((503, "maintenance"), RpcUnavailable, "rpc_unavailable"),
        ((404, "no such path"), RpcRejected, "rpc_http_error"),
        ((200, "<html>proxy error</html>"), RpcBadResponse, "rpc_bad_response"),
        ((200, "[1, 2]"), RpcBadResponse, "rpc_bad_response"),
        ((200, {"error": "broken"}), RpcBadResponse, "rpc_bad_response"),
        ((200, {}), RpcBadResponse, "rpc_bad_response"),
        ((200, {"error": {"code": -32005, "message": "Node is behind by 9 slots"}}), NodeBehind, "node_behind"),
    ],
)
def test_http_and_protocol_failures_are_typed(rpc, client, answer, error, code):
    rpc.routes["getBlockHeight"] = lambda params: answer
    with pytest.raises(error) as caught:
        client.get_block_height()
    assert caught.value.code == code
    assert caught.value.permanent == (error is RpcRejected)


def test_a_node_slower_than_the_timeout_is_transient_rpc_timeout(rpc, client):
    rpc.routes["getBlockHeight"] = lambda params: (time.sleep(1.0), result(1))[1]
    with pytest.raises(RpcTimeout) as caught:
        client.get_block_height()
    assert not caught.value.permanent


def test_a_result_without_its_value_is_a_bad_response(rpc, client):
    rpc.routes["getLatestBlockhash"] = lambda params: result({"blockhash": BLOCKHASH})
    with pytest.raises(RpcBadResponse, match="getLatestBlockhash returned no value"):
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
    rpc.routes["getBlockHeight"] = lambda params: result(151)
    landed = result({"context": {"slot": 3}, "value": [status()]})
    rpc.routes["getSignatureStatuses"] = [result({"context": {"slot": 3}, "value": [None]}), landed, landed]
    signed = SignedMint("sig", b"", 150, (), "")
    assert client.confirm(signed).err is None
    assert rpc.calls.count("getSignatureStatuses") == 3


def test_confirm_waits_until_the_configured_commitment(rpc, client):
    def answer(confirmation):
        return result({"context": {"slot": 3}, "value": [status(confirmation=confirmation)]})

    rpc.routes["getSignatureStatuses"] = [answer("processed"), answer("confirmed")]
    assert client.confirm(SignedMint("sig", b"", 150, (), ""), poll=0.01).confirmation_status == "confirmed"


def test_a_status_without_a_confirmation_level_is_rooted():
    assert SignatureStatus("sig", 1, None, None).reached("finalized")
    assert not SignatureStatus("sig", 1, None, "processed").reached("confirmed")


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
    with pytest.raises(ValueError, match="more than one u64"):
        client.build_mints([MintRequest(wallet, 2**63), MintRequest(wallet, 2**63)], memo="big")


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
