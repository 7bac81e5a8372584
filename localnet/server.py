"""The HTTP side: a small HTTP/1.1 keep-alive server on asyncio, a slot ticker thread, periodic ledger saves.

asyncio's ``Protocol`` rather than ``http.server``: the standard server spends more time parsing headers than
LiteSVM spends executing a single-mint transaction. Requests are answered in order on each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from localnet import ledger
from localnet.faults import JSON_CONTENT, Faults, HttpReply
from localnet.methods import ClusterMethods
from localnet.rpc import Dispatcher
from localnet.state import LocalChain
from localnet.transactions import TransactionMethods

logger = logging.getLogger("localnet")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 50 * 1024 * 1024
_STATUS_TEXT = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
                411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
                431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
                503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip
_CORS = b"Access-Control-Allow-Origin: *\r\n"


def build_dispatcher(chain: LocalChain, faults: Faults | None = None) -> Dispatcher:
    faults = Faults(chain) if faults is None else faults
    methods = {
        **ClusterMethods(chain, faults).handlers(), **TransactionMethods(chain, faults).handlers(),
        **faults.handlers(),
    }  # fmt: skip
    return Dispatcher(methods, on_error=lambda method, error: logger.exception("%s failed", method, exc_info=error))


def _response(status: int, body: bytes, content_type: bytes, keep_alive: bool, headers: bytes = b"") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT[status]}\r\nContent-Type: ".encode()
        + content_type
        + f"\r\nContent-Length: {len(body)}\r\n".encode()
        + _CORS
        + headers
        + (b"" if keep_alive else b"Connection: close\r\n")
        + b"\r\n"
    )
    return head + body


class HttpRpcProtocol(asyncio.Protocol):
    """One connection: parses pipelined HTTP/1.1 requests from a buffer and answers each in turn."""

    def __init__(self, handle_post: Callable[[bytes], HttpReply]) -> None:
        self.handle_post = handle_post
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.continue_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._fail(431)
                return
            try:
                method, version, headers = _parse_head(bytes(self.buffer[:end]))
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._fail(400)
                return
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._fail(411)
                return
            if length > MAX_BODY_BYTES or length < 0:
                self._fail(413)
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                if headers.get("expect", "").lower() == "100-continue" and not self.continue_sent:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.continue_sent = True
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self.continue_sent = False
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
            self.transport.write(self._answer(method, body, keep_alive))
            if not keep_alive:
                self.transport.close()

    def _answer(self, method: str, body: bytes, keep_alive: bool) -> bytes:
        if method == "POST":
            status, answer, content_type, headers = self.handle_post(body)
            return _response(status, answer, content_type, keep_alive, headers)
        if method == "GET":  # the validator's health endpoint, for load balancers and humans
            return _response(200, b"ok", b"text/plain", keep_alive)
        if method == "OPTIONS":  # CORS preflight from browser clients
            return _response(204, b"", b"text/plain", keep_alive)[:-2] + (
                b"Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n"
                b"Access-Control-Allow-Headers: content-type, solana-client\r\n\r\n"
            )
        return _response(405, b"", b"text/plain", keep_alive)

    def _fail(self, status: int) -> None:
        assert self.transport is not None
        self.transport.write(_response(status, b"", b"text/plain", False))
        self.transport.close()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, _target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, separator, value = line.partition(":")
        if not separator:
            raise ValueError(f"malformed header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return method, version, headers


class SlotTicker(threading.Thread):
    """Advances the chain one slot every ``slot_ms``; behind schedule it skips ahead rather than bursting."""

    def __init__(self, chain: LocalChain, slot_ms: int) -> None:
        super().__init__(name="localnet-slots", daemon=True)
        self.chain = chain
        self.interval = slot_ms / 1000
        self.stopped = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self.stopped.wait(max(0.0, next_at - time.monotonic())):
            self.chain.advance_slot()
            next_at += self.interval
            if time.monotonic() - next_at > 10 * self.interval:
                next_at = time.monotonic() + self.interval

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class FrontEnd:
    """One RPC front-end of the chain: its own port and fault plan, like one provider of a pool in front of the
    same cluster (``--port`` given several times)."""

    def __init__(self, chain: LocalChain, port: int, out: Callable[[str], None]) -> None:
        self.port = port
        self.faults = Faults(chain, on_change=out)
        self.dispatcher = build_dispatcher(chain, self.faults)
        self.server: asyncio.AbstractServer | None = None

    def handle_post(self, body: bytes) -> HttpReply:
        """A JSON-RPC request body's reply: the http fault's, if one is on, else the dispatcher's answer."""
        fault = self.faults.http_reply(body)
        if fault is not None:
            return fault
        return HttpReply(200, self.dispatcher.handle_body(body) or b"", JSON_CONTENT)


class LocalnetServer:
    """Serves ``chain`` over HTTP on one port per front-end; ticks slots; saves the ledger every ``save_interval``
    s and on stop. ``faults`` is the first front-end's plan."""

    def __init__(
        self,
        chain: LocalChain,
        *,
        host: str = "127.0.0.1",
        port: int = 8899,
        more_ports: Sequence[int] = (),
        slot_ms: int = 400,
        ledger_path: Path | None = None,
        save_interval: float = 10.0,
        status_interval: float = 60.0,
        out: Callable[[str], None] = print,
    ) -> None:
        self.chain = chain
        self.host = host
        self.ledger_path = ledger_path
        self.save_interval = save_interval
        self.status_interval = status_interval
        self.out = out
        ports = [port, *more_ports]
        self.front_ends = [
            FrontEnd(chain, each, out if len(ports) == 1 else _on_port(out, place))
            for place, each in enumerate(ports, start=1)
        ]
        self.faults = self.front_ends[0].faults
        self.dispatcher = self.front_ends[0].dispatcher
        self.ticker = SlotTicker(chain, slot_ms)
        self.stop_requested: asyncio.Event | None = None
        self._saved_at_slot = chain.slot
        self._next_save_at = 0.0
        self._save_lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.front_ends[0].port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.host}:{front_end.port}" for front_end in self.front_ends]

    def handle_post(self, body: bytes) -> HttpReply:
        return self.front_ends[0].handle_post(body)

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        for front_end in self.front_ends:
            front_end.server = await loop.create_server(
                lambda front_end=front_end: HttpRpcProtocol(front_end.handle_post),
                self.host, front_end.port, reuse_address=True,
            )  # fmt: skip
            front_end.port = front_end.server.sockets[0].getsockname()[1]
        self.ticker.start()
        return ", ".join(self.urls)

    def request_stop(self) -> None:
        if self.stop_requested is not None:
            self.stop_requested.set()

    async def serve(self) -> None:
        """Run until ``request_stop``; saves and reports on the way."""
        assert self.stop_requested is not None
        loop = asyncio.get_running_loop()
        last_status = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), timeout=self.save_interval)
            if self.stop_requested.is_set():
                return
            await loop.run_in_executor(None, self.save_if_changed)
            if self.status_interval and time.monotonic() - last_status >= self.status_interval:
                last_status = time.monotonic()
                self.out(self.status_line())

    async def stop(self) -> None:
        for front_end in self.front_ends:
            if front_end.server is not None:
                front_end.server.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(front_end.server.wait_closed(), timeout=2)
        if self.ticker.is_alive():
            self.ticker.stop()
        self.save_if_changed(force=True)

    def save_if_changed(self, force: bool = False) -> bool:
        """Write the ledger when transactions landed or slots passed since the last save.

        A periodic save rewrites the whole file, so after a slow one the next waits 20 times as long: saving
        never takes more than about 5% of the time, however large the history grows.
        """
        if self.ledger_path is None:
            return False
        with self._save_lock:
            unchanged = not self.chain.dirty and self.chain.slot == self._saved_at_slot
            if not force and (unchanged or time.monotonic() < self._next_save_at):
                return False
            started = time.monotonic()
            snapshot = ledger.capture(self.chain)
            try:
                ledger.write(self.ledger_path, snapshot)
            except OSError:
                self.chain.dirty = True
                logger.exception("could not save the ledger to %s", self.ledger_path)
                return False
            self._saved_at_slot = snapshot.meta["slot"]
            self._next_save_at = time.monotonic() + 20 * (time.monotonic() - started)
            return True

    def status_line(self) -> str:
        chain = self.chain
        return (
            f"localnet slot {chain.slot} height {chain.block_height} transactions {chain.transaction_count} "
            f"signatures {len(chain.history)} accounts {len(chain.accounts)}"
        )


def _on_port(out: Callable[[str], None], place: int) -> Callable[[str], None]:
    return lambda line: out(f"{line} (front-end {place})")


async def run_server(server: LocalnetServer, install_signal_handlers: bool = True) -> None:
    """Start, announce the URL, serve until SIGTERM/SIGINT (or ``request_stop``), then stop and save."""
    import signal

    url = await server.start()
    server.out(f"localnet listening on {url}")
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.request_stop)
    try:
        await server.serve()
    finally:
        await server.stop()
        saved = f"; ledger saved to {server.ledger_path}" if server.ledger_path else ""
        server.out(f"localnet stopped at slot {server.chain.slot}{saved}")
