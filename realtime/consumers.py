"""The events WebSocket: pushes each user's events to that user, and every event to operators.

Client messages only shape this connection (ping, subscribe); they never touch the database. Events arrive
from the channel layer as ``{"type": "events.deliver", "events": [...]}`` (see ``gridtoken.events``), through
this process's ``realtime.hub`` (one subscription per group, not per connection), and leave as one JSON
text frame per event that passes the connection's filter, written by the connection's own writer task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from gridtoken import events, observability
from realtime.auth import CLOSE_RATE_LIMITED, CLOSE_TRY_AGAIN, CLOSE_UNAUTHENTICATED, offered_token_subprotocol
from realtime.filters import EventFilter, FilterError, parse_filter
from realtime.hub import encode, hub_for
from realtime.throttle import TokenBucket

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_MESSAGE_CHARS = 16_384


def reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def decode(text: str):
    return json.loads(text, parse_float=Decimal, parse_constant=reject_constant)


class EventsConsumer(AsyncWebsocketConsumer):
    # Events come from this process's hub, not from a layer channel per connection: with no layer alias,
    # Channels neither creates one nor keeps a receive pending on Redis for every connection, so a Redis
    # outage does not drop the sockets (the hub retries and re-joins).
    channel_layer_alias = None
    # Knobs are class attributes so ``as_asgi(...)`` can set them per route or per test.
    messages_per_second = 10.0
    message_burst = 10.0
    # Rate-limited messages a client may send before it is disconnected; one strike is forgiven per second,
    # so a client slightly over the limit only sees error frames, while a flood is closed within moments.
    flood_strikes = 20.0
    strikes_forgiven_per_second = 1.0
    # How often this process re-adds its group memberships (lost when Redis restarts; expired after a day).
    group_refresh_secs = 60.0
    clock = staticmethod(time.monotonic)

    user_id: str | None = None
    counted = False  # in the gridtoken_websocket_connections gauge

    def __init__(self, **options) -> None:
        """``as_asgi(messages_per_second=..., clock=...)`` overrides the knobs above (Channels passes them here)."""
        super().__init__()
        for name, value in options.items():
            if not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} has no option {name!r}")
            setattr(self, name, value)

    async def dispatch(self, message: dict) -> None:
        """Channels runs ``close_old_connections`` in a worker thread before every handler. No handler here
        touches the database (authentication ran in the middleware), so that thread hop per client frame is
        skipped; it also guarantees that client messages cannot reach the database by accident."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        user = self.scope.get("user")
        subprotocol = "token" if offered_token_subprotocol(self.scope) else None
        if user is None or not user.is_authenticated or not user.is_active:
            await self.accept(subprotocol)
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = str(user.pk)
        self.is_operator = bool(user.is_staff)
        self.filter = EventFilter()
        self.inbound = TokenBucket(capacity=self.message_burst, rate=self.messages_per_second, clock=self.clock)
        self.strikes = TokenBucket(capacity=self.flood_strikes, rate=self.strikes_forgiven_per_second, clock=self.clock)
        # Operators see everyone's events through one group; joining their own user group as well would
        # deliver their own events twice.
        self.joined = [events.OPERATORS_GROUP] if self.is_operator else [events.user_group(self.user_id)]
        # Events that arrive between joining and the greeting wait in the outbox; the writer starts after it.
        self.outbox: asyncio.Queue[list[str]] = asyncio.Queue()
        self.writer: asyncio.Task | None = None
        self.hub = hub_for(get_channel_layer(), refresh_secs=self.group_refresh_secs)
        try:
            for group in self.joined:
                await self.hub.join(group, self)
        except Exception:
            logger.warning("joining event groups failed", exc_info=True, extra={"user_id": self.user_id})
            self.user_id = None
            await self.accept(subprotocol)
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        await self.accept(subprotocol)
        await observability.aws_connected()
        self.counted = True
        await self.send_message(
            {
                "type": "connected",
                "protocol": PROTOCOL_VERSION,
                "user_id": self.user_id,
                "username": user.get_username(),
                "is_operator": self.is_operator,
                "auth": self.scope.get("auth_method", "session"),
                "server_time": events.rfc3339(),
                "filters": self.filter.as_dict(),
                "limits": {"messages_per_second": self.messages_per_second, "burst": self.message_burst},
            }
        )
        self.writer = asyncio.get_running_loop().create_task(self.write_frames())

    async def disconnect(self, code) -> None:
        if self.counted:
            self.counted = False
            await observability.aws_disconnected()
        if self.user_id is None:
            return
        if self.writer is not None:
            self.writer.cancel()
        for group in self.joined:
            await self.hub.leave(group, self)

    # Outbound -----------------------------------------------------------------------------------------

    def push(self, frames: list[tuple[dict, str]]) -> None:
        """Called by the hub for every layer message of this connection's group; never waits on the socket."""
        wanted = [frame for event, frame in frames if self.filter.matches(event)]
        if wanted:
            self.outbox.put_nowait(wanted)

    async def write_frames(self) -> None:
        while True:
            for frame in await self.outbox.get():
                await self.send(text_data=frame)

    async def send_message(self, message: dict) -> None:
        await self.send(text_data=encode(message))

    async def send_error(self, code: str, message: str, field: str | None = None) -> None:
        error = {"type": "error", "code": code, "message": message}
        if field is not None:
            error["field"] = field
        await self.send_message(error)

    # Inbound ------------------------------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.user_id is None:
            return  # refused in connect; the close is on its way
        if not self.inbound.take():
            if not self.strikes.take():
                await self.close(code=CLOSE_RATE_LIMITED)
                return
            await self.send_error("rate_limited", f"at most {self.messages_per_second:g} messages per second")
            return
        if text_data is None:
            await self.send_error("binary_not_supported", "send JSON text frames")
            return
        if len(text_data) > MAX_MESSAGE_CHARS:
            await self.send_error("message_too_large", f"messages are limited to {MAX_MESSAGE_CHARS} characters")
            return
        try:
            message = decode(text_data)
        except ValueError:
            await self.send_error("invalid_json", "the message is not valid JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.send_error("invalid_message", 'a message is a JSON object with a string "type"')
            return
        handler = {"ping": self.on_ping, "subscribe": self.on_subscribe}.get(message["type"])
        if handler is None:
            await self.send_error("unknown_type", f"unknown message type {message['type'][:64]!r}", field="type")
            return
        await handler(message)

    async def on_ping(self, message: dict) -> None:
        pong = {"type": "pong", "server_time": events.rfc3339()}
        if isinstance(message.get("id"), str | int) and not isinstance(message.get("id"), bool):
            pong["id"] = message["id"]
        await self.send_message(pong)

    async def on_subscribe(self, message: dict) -> None:
        try:
            self.filter = parse_filter(message, is_operator=self.is_operator)
        except FilterError as error:
            await self.send_error("invalid_filter", str(error), field=error.field)
            return
        await self.send_message({"type": "subscribed", "filters": self.filter.as_dict()})
