"""A process that scheduled a mint task, or saw another's marker, stays quiet until that task's time without asking
Redis; at most one message per window still holds, and a reading after the marker has gone triggers again."""

import pytest

from minting.triggers import DEBOUNCE_KEY, mint_soon
from tests.conftest import queued_tasks, wait_until
from tests.minting.pipeline_harness import set_tokenization

MINT_TASK = "minting.tasks.mint_due_readings"


def test_inside_its_own_window_a_process_sends_nothing_and_asks_redis_nothing(broker, settings):
    set_tokenization(settings, trigger_debounce_ms=5000)
    assert mint_soon()
    broker.delete(DEBOUNCE_KEY)  # had the second trigger asked Redis, it would set the marker and enqueue again
    assert mint_soon() is False
    assert not broker.exists(DEBOUNCE_KEY)
    assert queued_tasks(broker) == [MINT_TASK]


def test_after_its_window_a_process_sets_the_marker_and_enqueues_again(broker, settings):
    set_tokenization(settings, trigger_debounce_ms=50)
    assert mint_soon()
    wait_until(lambda: not broker.exists(DEBOUNCE_KEY), interval=0.02, message="the marker expired")
    wait_until(mint_soon, interval=0.02, message="a second task enqueued")
    assert queued_tasks(broker) == [MINT_TASK, MINT_TASK]


def test_a_marker_set_elsewhere_keeps_this_process_quiet_only_for_its_remaining_time(broker, settings):
    set_tokenization(settings, trigger_debounce_ms=5000)
    broker.set(DEBOUNCE_KEY, b"1", px=100)  # another process's marker, with 100 ms of its window left
    assert mint_soon() is False
    wait_until(lambda: not broker.exists(DEBOUNCE_KEY), interval=0.02, message="the other marker expired")
    assert mint_soon()  # not silenced for this process's full 5 s window
    assert queued_tasks(broker) == [MINT_TASK]
    assert 0 < broker.pttl(DEBOUNCE_KEY) <= 5000


@pytest.mark.parametrize("window_ms", [0, 5000])
def test_forced_and_unwindowed_triggers_always_enqueue(broker, settings, window_ms):
    set_tokenization(settings, trigger_debounce_ms=window_ms)
    assert mint_soon()
    assert mint_soon(force=True)
    assert len(queued_tasks(broker)) == 2
