"""meters starts minting through the hook minting registers at start-up, never by importing it."""

import pytest

from meters import hooks
from minting.triggers import mint_soon


def test_minting_registers_its_trigger_at_start_up():
    assert hooks._readings_stored == [mint_soon]


@pytest.mark.django_db
def test_hooks_run_once_each_and_only_after_the_commit(monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(hooks, "_readings_stored", [])
    calls = []
    first, second = (lambda: calls.append("first")), (lambda: calls.append("second"))
    for hook in (first, second, first):
        hooks.on_readings_stored(hook)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        hooks.readings_stored()
    assert calls == []
    for callback in callbacks:
        callback()
    assert calls == ["first", "second"]
