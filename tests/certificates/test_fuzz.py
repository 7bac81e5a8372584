"""Schemathesis (bench/fuzz.py's engine and checks) against the certificates operations on a real uvicorn:
no 500 for anything a client can send, every answer as the schema documents it."""

from __future__ import annotations

import pytest

from bench.fuzz import SERVER_ENV, fuzz, identities_create
from tests.minting.pipeline_harness import use_chain
from tests.realtime.test_browser import processes, start_uvicorn

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]
__all__ = ["processes"]  # a fixture, used by name

ONLY = {"producer": r"^/api/certificates/", "operator": r"^/api/admin/certificates/"}


def test_the_certificates_operations_answer_as_their_schema_says(processes, settings, localnet, tmp_path):
    chain = use_chain(settings, localnet, tmp_path)
    env = {"SOLANA_RPC_URL": chain.url, "SOLANA_KEYPAIR_PATH": str(chain.keypair_path), **SERVER_ENV}
    base = start_uvicorn(processes, env)
    totals = fuzz(base, identities_create(), examples=20, seed=12, stateful_steps=5, only=ONLY, coverage_mode=None)
    print(totals.summary())

    assert not totals.failures and not totals.errors, f"Schemathesis found:\n{totals.summary()}"
    mine = {op for op in totals.operations if "/certificates" in op}
    assert len(mine) == 11, sorted(mine)  # every certificates operation, the public ones included
    assert totals.cases > 200
