"""Schemathesis against a real uvicorn on the test database and a real local chain: every operation of
/api/schema/ (the certificates ones: tests/certificates/test_fuzz.py) with the credential kind it is meant for
(producer token, device key, fleet key, operator token), the examples, fuzzing (valid and invalid data) and
stateful (the schema's links) phases, and the checks of ``bench.fuzz.CHECKS`` (positive_data_acceptance stays
off; bench/fuzz.py says why). A fixed seed and 20 examples per operation keep it near a minute; the coverage
phase, which no example count bounds (~11,000 cases, 3-4 min here), runs in ``bench/fuzz.py``, the long run.

The fuzzed server runs without rate limits (each limit, once hit, would turn every later case into a 429 and
hide it); a second server with tight limits checks that the 429s it then answers are documented."""

from __future__ import annotations

import pytest

from bench.fuzz import SERVER_ENV, fuzz, identities_create
from tests.minting.pipeline_harness import use_chain
from tests.realtime.test_browser import processes, start_uvicorn

# no_cover: a test's call is Schemathesis generating cases and checking answers, none of it the application's
# code (the server it fuzzes is a subprocess, which coverage does not measure), and tracing it cost a quarter to a
# third of the file's CPU; the chain and the identities, the application's code, are made in fixtures, measured.
pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(900),
    pytest.mark.no_cover,
]
__all__ = ["processes"]  # a fixture, used by name

SEED = 11
EXAMPLES = 20
# Where each credential is meant to work (the certificates operations: tests/certificates/test_fuzz.py), and
# for each identity one operation of another kind (a device key on a fleet endpoint: 403, documented).
ONLY = {
    "producer": r"^/api/(auth/token|meters|meters/my-readings|meters/stats|matching/.+|v1/meters/batch/readings)$",
    "device": r"^/api/(meters/submit-reading|v1/meters/\{serial\}/readings|v1/meters/batch/readings)$",
    "fleet": r"^/(api/v1/(meters/batch|public|simulator)|v1/private-network/|api/meters/my-readings$)",
    "operator": r"^/api/(admin/|meters/submit-reading$)",
}


@pytest.fixture
def chain_env(settings, localnet, tmp_path) -> dict:
    chain = use_chain(settings, localnet, tmp_path)
    return {"SOLANA_RPC_URL": chain.url, "SOLANA_KEYPAIR_PATH": str(chain.keypair_path)}


@pytest.fixture
def identities(transactional_db) -> dict[str, str]:
    return identities_create()


def failures_report(totals) -> str:
    return f"Schemathesis found (seed {SEED}):\n{totals.summary()}"


def test_every_operation_answers_as_its_schema_says_for_every_credential(processes, chain_env, identities):
    base = start_uvicorn(processes, {**chain_env, **SERVER_ENV})

    totals = fuzz(base, identities, examples=EXAMPLES, seed=SEED, stateful_steps=5, only=ONLY, coverage_mode=None)
    print(totals.summary())

    assert not totals.failures and not totals.errors, failures_report(totals)
    assert len(totals.operations) >= 24, sorted(totals.operations)
    assert totals.cases > 500  # the run really generated and sent cases


def test_the_429s_of_tight_rate_limits_are_documented(processes, chain_env, identities):
    limits = {"RATE_LIMIT_KEY_PER_MIN": "3", "RATE_LIMIT_USER_PER_MIN": "3", "RATE_LIMIT_LOGIN_PER_MIN": "2"}
    base = start_uvicorn(processes, {**chain_env, **limits})
    only = {
        "producer": r"^/api/(auth/token|meters)$",
        "fleet": r"^/api/v1/(meters/batch|simulator)",
    }

    totals = fuzz(
        base,
        {name: identities[name] for name in only},
        examples=5,
        seed=SEED,
        stateful_steps=3,
        only=only,
        coverage_mode=None,
    )

    assert not totals.failures and not totals.errors, failures_report(totals)
    assert totals.statuses.get(429, 0) > 0, totals.statuses  # the limits were hit, so 429s were checked
