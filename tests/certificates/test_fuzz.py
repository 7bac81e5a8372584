"""Schemathesis (bench/fuzz.py's engine and checks) against the certificates operations on a real uvicorn:
no 500 for anything a client can send, every answer as the schema documents it."""

from __future__ import annotations

import pytest

from bench.fuzz import SERVER_ENV, fuzz
from tests.ops.test_fuzz_schema import chain_env, identities
from tests.realtime.test_browser import processes, start_uvicorn

# no_cover, as in tests/ops/test_fuzz_schema.py: the call is Schemathesis's client (the server is a subprocess,
# unmeasured); the chain and the identities are made in fixtures, which coverage still measures.
pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(900),
    pytest.mark.no_cover,
]
__all__ = ["chain_env", "identities", "processes"]  # fixtures, used by name

# The device and fleet keys, not named here, meet every operation of the schema: the suite's one run of those
# credentials on the operations of other kinds (tests/ops/test_fuzz_schema.py fuzzes each where it is meant to work).
ONLY = {"producer": r"^/api/certificates/", "operator": r"^/api/admin/certificates/"}


def test_the_certificates_operations_answer_as_their_schema_says(processes, chain_env, identities):
    base = start_uvicorn(processes, {**chain_env, **SERVER_ENV})
    totals = fuzz(base, identities, examples=20, seed=12, stateful_steps=5, only=ONLY, coverage_mode=None)
    print(totals.summary())

    assert not totals.failures and not totals.errors, f"Schemathesis found:\n{totals.summary()}"
    mine = {op for op in totals.operations if "/certificates" in op}
    assert len(mine) == 11, sorted(mine)  # every certificates operation, the public ones included
    assert totals.cases > 200
