"""The HTTP server in-process (so coverage sees it): JSON-RPC envelope, HTTP/1.1 handling, ticking, saving."""

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
from solana.rpc.api import Client
from solana.rpc.core import RPCException
from solders.keypair import Keypair

from localnet import ledger
from localnet.rpc import Dispatcher
from localnet.server import LocalnetServer, SlotTicker, run_server
from localnet.state import LocalChain
from tests.localnet.helpers import SOL, create_ata, create_mint_instructions, mint_to, pay, signed


class ServedChain:
    """A ``LocalnetServer`` on a free port, its asyncio loop in a background thread."""

    def __init__(self, tmp_path, *, slot_ms: int = 20, more_ports: tuple[int, ...] = ()) -> None:
        self.lines: list[str] = []
        self.chain = LocalChain()
        self.server = LocalnetServer(
            self.chain, port=0, more_ports=more_ports, slot_ms=slot_ms, ledger_path=tmp_path / "ledger.bin",
            save_interval=0.05, status_interval=0.05, out=self.lines.append,
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(run_server(self.server, install_signal_handlers=False),)
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.lines and time.monotonic() < deadline:
            time.sleep(0.01)
        self.url = self.server.url

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.request_stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def served(tmp_path):
    served = ServedChain(tmp_path)
    yield served
    if served.thread.is_alive():
        served.stop()


def raw_http(url: str, payload: bytes) -> bytes:
    """Send raw bytes on one connection and read until the server closes it or goes quiet."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(payload)
        connection.settimeout(0.5)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def post(body: bytes, extra: str = "") -> bytes:
    return f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_the_server_announces_its_url_and_solana_py_mints_through_it(served):
    assert served.lines[0] == f"localnet listening on {served.url}"
    client = Client(served.url)
    payer, mint, owner = Keypair(), Keypair(), Keypair().pubkey()
    client.confirm_transaction(client.request_airdrop(payer.pubkey(), 10 * SOL).value)
    rent = client.get_minimum_balance_for_rent_exemption(82).value
    blockhash = client.get_latest_blockhash().value.blockhash
    instructions = create_mint_instructions(payer.pubkey(), mint.pubkey(), rent=rent, decimals=6)
    instructions += [
        create_ata(payer.pubkey(), owner, mint.pubkey()),
        mint_to(mint.pubkey(), owner, payer.pubkey(), 2_500_001, 6),
    ]
    signature = client.send_transaction(signed(payer, instructions, blockhash, mint)).value
    client.confirm_transaction(signature)
    assert client.get_token_supply(mint.pubkey()).value.amount == "2500001"
    assert client.get_token_supply(mint.pubkey()).value.ui_amount_string == "2.500001"
    with pytest.raises(RPCException, match="AlreadyProcessed"):
        client.send_transaction(signed(payer, instructions, blockhash, mint))


def test_slots_advance_on_the_timer_and_the_ledger_is_saved_periodically(served):
    start = served.chain.slot
    deadline = time.monotonic() + 10
    while served.chain.slot < start + 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served.chain.slot >= start + 5
    assert served.chain.block_height == served.chain.slot
    while not served.server.ledger_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ledger.read(served.server.ledger_path).meta["slot"] > start
    while not any(line.startswith("localnet slot") for line in served.lines) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(line.startswith("localnet slot") for line in served.lines)


def test_stopping_saves_the_final_state(served):
    recipient = Keypair().pubkey()
    served.chain.request_airdrop(recipient, 321)
    served.stop()
    assert (
        served.lines[-1] == f"localnet stopped at slot {served.chain.slot}; ledger saved to {served.server.ledger_path}"
    )
    assert ledger.load_or_create(served.server.ledger_path).get_balance(recipient) == 321
    assert not served.server.save_if_changed()


def test_an_unwritable_ledger_is_reported_and_retried(tmp_path):
    chain = LocalChain()
    server = LocalnetServer(chain, ledger_path=tmp_path / "missing-dir" / "ledger.bin", out=lambda line: None)
    chain.dirty = True
    assert not server.save_if_changed()
    assert chain.dirty
    assert not LocalnetServer(chain, ledger_path=None).save_if_changed(force=True)


def test_keep_alive_connections_answer_pipelined_requests_in_order(served):
    bodies = [json.dumps({"jsonrpc": "2.0", "id": i, "method": "getHealth"}).encode() for i in range(3)]
    received = raw_http(served.url, b"".join(post(body) for body in bodies))
    assert received.count(b"HTTP/1.1 200 OK") == 3
    answers = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in received.split(b"HTTP/1.1 ")[1:]]
    assert [answer["id"] for answer in answers] == [0, 1, 2]


def test_http_edge_cases_are_answered_like_a_web_server(served):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getSlot"}).encode()
    assert raw_http(served.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"ok")
    options = raw_http(served.url, b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert options.startswith(b"HTTP/1.1 204") and b"Access-Control-Allow-Methods" in options
    assert raw_http(served.url, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw_http(served.url, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").startswith(b"HTTP/1.1 411")
    assert raw_http(served.url, b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n").startswith(b"HTTP/1.1 413")
    assert raw_http(served.url, b"POST / HTTP/1.1\r\nbroken header\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_http(served.url, b"X" * 70_000).startswith(b"HTTP/1.1 431")
    closing = raw_http(served.url, post(body, "Connection: close\r\n"))
    assert b"Connection: close" in closing and b'"result"' in closing
    old = raw_http(served.url, b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert b"Connection: close" in old
    continued = raw_http(
        served.url, post(b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: %d" % len(body))
    )
    assert continued.startswith(b"HTTP/1.1 100 Continue")
    notification = raw_http(served.url, post(json.dumps({"jsonrpc": "2.0", "method": "getSlot"}).encode()))
    assert notification.endswith(b"Content-Length: 0\r\nAccess-Control-Allow-Origin: *\r\n\r\n")


def test_httpx_sees_cors_and_json_content_types(served):
    response = httpx.post(served.url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"jsonrpc": "2.0", "result": "ok", "id": 1}


def test_the_envelope_answers_json_rpc_errors_with_standard_codes(served):
    def send(payload):
        return httpx.post(served.url, content=payload).json() if payload is not None else None

    assert send(b"{not json") == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
    assert send(b"[]")["error"]["code"] == -32600
    assert send(b'"text"')["error"] == {"code": -32600, "message": "Invalid request"}
    assert send(b'{"id": 4, "method": "getSlot"}') == {
        "jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid request"}, "id": 4,
    }  # fmt: skip
    assert send(b'{"jsonrpc":"2.0","id":"x","method":"getBlocks"}')["error"] == {
        "code": -32601,
        "message": "Method not found",
    }
    assert send(b'{"jsonrpc":"2.0","id":1,"method":"getSlot","params":{"a":1}}')["error"]["code"] == -32602
    assert send(b'{"jsonrpc":"2.0","id":1,"method":"getBalance","params":[]}')["error"]["code"] == -32602
    batch = send(
        b'[{"jsonrpc":"2.0","id":1,"method":"getHealth"},{"jsonrpc":"2.0","method":"getSlot"},'
        b'{"jsonrpc":"2.0","id":2,"method":"nope"},{"jsonrpc":"2.0","id":3,"method":"getSlot","params":[null]}]'
    )
    assert [answer["id"] for answer in batch] == [1, 2, 3]
    assert batch[0]["result"] == "ok" and batch[1]["error"]["code"] == -32601 and isinstance(batch[2]["result"], int)
    notifications = httpx.post(served.url, content=b'[{"jsonrpc":"2.0","method":"getSlot"}]')
    assert notifications.status_code == 200 and notifications.content == b""


def test_a_handler_bug_answers_internal_error_and_is_reported(served):
    reported = []

    def broken(params):
        raise ZeroDivisionError

    dispatcher = Dispatcher({"broken": broken}, on_error=lambda method, error: reported.append((method, error)))
    answer = json.loads(dispatcher.handle_body(b'{"jsonrpc":"2.0","id":9,"method":"broken"}'))
    assert answer == {"jsonrpc": "2.0", "error": {"code": -32603, "message": "Internal error"}, "id": 9}
    assert reported[0][0] == "broken"
    assert dispatcher.handle_body(b'{"jsonrpc":"2.0","method":"broken"}') is None
    assert dispatcher.handle_body(b'{"jsonrpc":"2.0","method":"unknown"}') is None


def test_a_sol_transfer_through_the_server_is_exact(served):
    client = Client(served.url)
    payer, recipient = Keypair(), Keypair().pubkey()
    served.chain.request_airdrop(payer.pubkey(), SOL)
    blockhash = client.get_latest_blockhash().value.blockhash
    client.confirm_transaction(
        client.send_transaction(signed(payer, [pay(payer, recipient, 250_000)], blockhash)).value
    )
    assert client.get_balance(recipient).value == 250_000
    assert client.get_balance(payer.pubkey()).value == SOL - 250_000 - 5000


def test_a_ticker_held_up_resumes_at_its_pace_instead_of_bursting():
    chain = LocalChain()
    ticker = SlotTicker(chain, slot_ms=1)
    with chain.lock:
        ticker.start()
        time.sleep(0.05)  # the ticker waits for the lock while 50 slots' worth of time passes
        held_at = chain.slot
    deadline = time.monotonic() + 10
    while chain.slot < held_at + 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    ticker.stop()
    assert chain.slot >= held_at + 3


def rpc(url: str, method: str, params: list | None = None) -> httpx.Response:
    return httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})


def test_several_front_ends_serve_one_chain_each_with_its_own_fault_plan(tmp_path):
    served = ServedChain(tmp_path, more_ports=(0, 0))
    try:
        first, second, third = served.server.urls
        assert served.lines[0] == f"localnet listening on {first}, {second}, {third}"
        assert rpc(second, "localnet_setFaults", [{"http": {"status": 503}}]).status_code == 200
        # the line, not the last one: the slot ticker may print between
        [faults] = [line for line in served.lines if line.startswith("localnet faults set: ")]
        assert faults.startswith('localnet faults set: {"http":{"status":503') and faults.endswith("(front-end 2)")

        payer = Keypair()
        Client(first).confirm_transaction(Client(first).request_airdrop(payer.pubkey(), 3 * SOL).value)
        assert rpc(second, "getBalance", [str(payer.pubkey())]).status_code == 503  # its own plan
        assert rpc(third, "getBalance", [str(payer.pubkey())]).json()["result"]["value"] == 3 * SOL  # one chain
        assert rpc(first, "localnet_getFaults").json()["result"] == {}
    finally:
        served.stop()
