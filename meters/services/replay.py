"""Replaying a REST batch item's dead letter: the item through ``readings_submit_batch`` again, as its caller."""

from __future__ import annotations

from django.utils import timezone

from meters.models import DeadLetter
from meters.parsers import loads_exact
from meters.services.batch import readings_submit_batch
from meters.services.dead_letters import caller_restore, rest_batch_hook


def rest_batch_replay(letter: DeadLetter) -> dict:
    """The item's batch result now (a reading stored meanwhile answers ``duplicate``)."""
    caller = caller_restore(letter.caller)
    readings = [loads_exact(bytes(letter.payload))]
    answer = readings_submit_batch(
        caller=caller,
        readings=readings,
        now=timezone.now(),
        dead_letter=rest_batch_hook(caller=caller, readings=readings, path=letter.topic),
    )
    return answer["results"][0]
