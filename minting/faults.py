"""Crash points for the pipeline's fault-injection tests. Test-only: a no-op unless GRIDTOKEN_CRASH_AT is set.

``crash_point(name)`` SIGKILLs the current process when the environment variable ``GRIDTOKEN_CRASH_AT``
equals ``name``, so a test can kill a real Celery worker at an exact step of the mint procedure and prove
that a fresh worker plus reconciliation finishes the job exactly once. Never set the variable in a real
deployment. The points, in the order a mint passes them:

- ``after_build``: transaction built and signed, claim transaction not yet committed (everything rolls back);
- ``after_batch_commit``: batch rows and reading links committed, nothing sent yet;
- ``after_send``: transactions sent, readings not yet marked minted;
- ``while_settling``: the settle transaction's updates made, not yet committed (everything rolls back).

Matching (``matching/``) has one more: ``matching_before_commit``, a zone-hour's claims, burns and records
made, not yet committed.
"""

import os
import signal

ENV_VAR = "GRIDTOKEN_CRASH_AT"
POINTS = ("after_build", "after_batch_commit", "after_send", "while_settling")


def crash_point(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
