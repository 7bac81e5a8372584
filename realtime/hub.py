"""Process-local fan-out: one channel-layer subscription per group per process, not one per connection.

With a channel per connection, Channels wakes every consumer separately for every layer message (a
buffer queue, several tasks and an ``asyncio.wait`` per connection per message); at 500 connections that
bookkeeping, not the sockets, was most of the fan-out's CPU (see bench/ws.py and docs/REALTIME.md). Here:

1. The first local connection of a group makes the hub create a layer channel and ``group_add`` it;
   later connections only join the hub's member set (after the first join has completed, so nobody is
   greeted before its events can arrive). The last one to leave discards the channel from the group.
2. One reader task per group receives each layer message once, encodes each event once, and pushes the
   frames to every member, which filters them and queues them for its own writer task. A slow client
   therefore delays only itself: the reader never waits on a socket.
3. Group memberships are re-added every ``refresh_secs``: channels-redis expires them after a day, and a
   restarted Redis forgets them at once. A reader that loses Redis keeps retrying and re-joins its group
   before it reads again; the WebSocket connections stay open meanwhile (they do not read the layer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Protocol

from gridtoken.events import LAYER_MESSAGE_TYPE

logger = logging.getLogger(__name__)

RETRY_SECS = 1.0


def encode(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"))


class Member(Protocol):
    def push(self, frames: list[tuple[dict, str]]) -> None: ...


class Feed:
    """One group's subscription in this process."""

    def __init__(self) -> None:
        self.members: set[Member] = set()
        self.channel: str | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.reader: asyncio.Task | None = None
        self.stale = False  # the layer may have lost our membership: re-join before reading again


class Hub:
    def __init__(self, layer, *, refresh_secs: float) -> None:
        self.layer = layer
        self.refresh_secs = refresh_secs
        self.feeds: dict[str, Feed] = {}
        self.refresher: asyncio.Task | None = None

    async def join(self, group: str, member: Member) -> None:
        feed = self.feeds.get(group)
        if feed is not None:
            feed.members.add(member)
            await asyncio.shield(feed.ready)
            return
        feed = self.feeds[group] = Feed()
        feed.members.add(member)
        try:
            feed.channel = await self.layer.new_channel()
            await self.layer.group_add(group, feed.channel)
        except BaseException as error:
            self.feeds.pop(group, None)
            feed.ready.set_exception(error)
            feed.ready.exception()  # retrieved: the joiners re-raise it; nobody else needs the warning
            raise
        feed.reader = asyncio.get_running_loop().create_task(self.read(group, feed))
        feed.ready.set_result(None)
        if self.refresher is None:
            self.refresher = asyncio.get_running_loop().create_task(self.refresh())

    async def leave(self, group: str, member: Member) -> None:
        feed = self.feeds.get(group)
        if feed is None or member not in feed.members:
            return
        feed.members.discard(member)
        if feed.members or not feed.ready.done() or feed.ready.exception() is not None:
            return
        del self.feeds[group]
        feed.reader.cancel()
        if not self.feeds and self.refresher is not None:
            self.refresher.cancel()
            self.refresher = None
        try:
            await self.layer.group_discard(group, feed.channel)
        except Exception:  # the membership expires on its own; nothing reads the channel any more
            logger.warning("group discard failed", exc_info=True, extra={"group": group})

    async def read(self, group: str, feed: Feed) -> None:
        while True:
            if feed.stale and not await self.rejoin(group, feed):
                await asyncio.sleep(RETRY_SECS)
                continue
            try:
                message = await self.layer.receive(feed.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A cancelled read can surface as a connection error (redis-py closes the socket it was
                # reading and channels-redis re-raises what that caused): a reader told to stop must stop,
                # not retry forever on behalf of a group nobody here listens to any more.
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError from None
                # Redis gone: keep the connections open, and re-join once it is back (a restarted Redis has
                # forgotten every group). Events published meanwhile are lost: the pages resynchronise.
                logger.warning("channel layer receive failed; retrying", exc_info=True, extra={"group": group})
                feed.stale = True
                await asyncio.sleep(RETRY_SECS)
                continue
            if message.get("type") != LAYER_MESSAGE_TYPE:
                continue
            frames = [(event, encode(event)) for event in message.get("events", [])]
            for member in list(feed.members):
                member.push(frames)

    async def rejoin(self, group: str, feed: Feed) -> bool:
        try:
            await self.layer.group_add(group, feed.channel)
        except Exception:
            logger.warning("group re-join failed", exc_info=True, extra={"group": group})
            feed.stale = True
            return False
        feed.stale = False
        return True

    async def refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_secs)
            for group, feed in list(self.feeds.items()):
                if feed.ready.done() and feed.ready.exception() is None:
                    await self.rejoin(group, feed)


# One hub per event loop and channel layer (tests switch both; uvicorn has one of each per process).
_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hub_for(layer, *, refresh_secs: float) -> Hub:
    per_loop = _hubs.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    hub = per_loop.get(layer)
    if hub is None:
        hub = per_loop[layer] = Hub(layer, refresh_secs=refresh_secs)
    return hub
