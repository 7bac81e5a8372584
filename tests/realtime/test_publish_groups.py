"""``events.publish`` against a private, real Redis: groups nobody listens to cost one pipelined membership count
and no group lookups; a group with a listener still gets its events."""

import asyncio

import pytest
import redis
from channels.layers import get_channel_layer

from gridtoken import events
from tests.realtime.conftest import received_event
from tests.realtime.test_hub import PrivateRedis

pytestmark = pytest.mark.django_db


@pytest.fixture
def quiet_redis(settings):
    """A Redis no one else talks to, so its command statistics are this test's alone."""
    server = PrivateRedis().start()
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [{"address": server.url}]}}}
    yield redis.Redis.from_url(server.url)
    server.stop()


def calls(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()}


def test_a_publish_to_groups_nobody_listens_to_only_counts_their_members(quiet_redis, meter):
    quiet_redis.config_resetstat()
    events.publish([received_event(meter)])  # the owner's group and the operators' group, both empty
    made = calls(quiet_redis)
    assert made.get("zcard") == 2
    assert not {"zrange", "zremrangebyscore", "eval", "evalsha"} & made.keys()


async def test_a_group_with_a_listener_still_gets_its_events(quiet_redis, meter):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.user_group(meter.owner_id), channel)
    event = received_event(meter)
    events.publish([event])
    message = await layer.receive(channel)
    # receive() leaves a task popping its backup copy; let it finish before the private server stops
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_clean_receive_backup"))
    assert (message["type"], message["events"]) == (events.LAYER_MESSAGE_TYPE, [event])
