"""Schemathesis against a live server, for long runs: every operation of /api/schema/, once per credential kind.

    DATABASE_URL=postgres://.../gt_fuzz REDIS_URL=redis://127.0.0.1:6379/9 \\
        python bench/fuzz.py --examples 500 --seed 1 --duration 1800

1. Migrates DATABASE_URL (a scratch database: the run creates users, meters, keys and many readings in it)
   and creates (or reuses) the four identities: a producer with a meter and its user token, that meter's
   device key, a fleet key of the same producer, and a staff operator's token.
2. Starts ``uvicorn gridtoken.asgi:application`` on a free port with the rate limits off, so that the
   limits do not turn every later case into a 429 (tests/ops/test_fuzz_schema.py checks 429 separately).
3. Runs Schemathesis's engine (the phases of ``schemathesis run``: examples, coverage, fuzzing, and the
   stateful phase over the schema's OpenAPI links) once per identity, all of them sending it as
   ``Authorization: Bearer``, with the checks of ``CHECKS``; ``--examples`` cases per operation and phase.
4. Prints a line per finished operation and, at the end, the totals: operations, cases, failures by check,
   and each distinct failure once with a curl line to reproduce it. Exit code 1 when anything failed.

``--duration`` bounds each identity's run (Schemathesis's max-time); 0 runs to completion.
tests/ops/test_fuzz_schema.py runs the same ``fuzz`` with a few examples and a fixed seed in the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")

# Every check that can be judged from the schema alone, with why two stay off:
# - positive_data_acceptance expects a 2xx for any schema-valid request, but the API's rules are wider than a
#   JSON schema can say (the serial must name a meter of the caller, a reading must fall outside its meter's
#   duplicate window and not in the future, a wallet must be a base58 ed25519 key, a kWh must be below
#   TOKENIZATION_MAX_READING_KWH): schema-valid requests are rightly 400/404/409 with the one error body,
#   which status_code_conformance and response_schema_conformance already hold to the schema.
# max_response_time stays unset: it would be a timing assertion (STYLE.md: timings belong in bench/ figures).
CHECKS = {
    "not_a_server_error": True,
    "status_code_conformance": True,
    "content_type_conformance": True,
    "response_schema_conformance": True,
    "response_headers_conformance": True,
    "negative_data_rejection": True,
    "missing_required_header": True,
    "ignored_auth": True,
    "unsupported_method": True,
    "allow_header_conformance": True,
    "use_after_free": True,
    "ensure_resource_availability": True,
    "positive_data_acceptance": False,
}
# A batch answers 200/207 with one result per item, a schema-violating item being that item's rejection (never
# the batch's failure: issue 11), so "schema-violating request accepted" is what these operations are for; a
# body that is not a batch at all is still a 400, and the items' results are held to the schema.
PER_ITEM_RESULTS = (
    r"^/(api/v1/meters/batch/readings|api/v1/public/meters/batch/readings|v1/private-network/ingest/batch)$"
)
# The server's environment for fuzzing: no rate limits (each would mask the cases after it as 429s).
SERVER_ENV = {"RATE_LIMIT_KEY_PER_MIN": "0", "RATE_LIMIT_USER_PER_MIN": "0", "RATE_LIMIT_LOGIN_PER_MIN": "0"}


@dataclass
class Totals:
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    failures_by_check: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    cases_by_phase: Counter = field(default_factory=Counter)
    # One entry per distinct failure: (identity, check, operation, title) -> curl line to reproduce it.
    failures: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"operations: {len(self.operations)}  cases: {self.cases}  "
            f"failures: {sum(self.failures_by_check.values())} ({len(self.failures)} distinct)  "
            f"errors: {len(self.errors)}"
        ]
        lines.append(
            "  cases by phase: " + ", ".join(f"{name}: {n}" for name, n in sorted(self.cases_by_phase.items()))
        )
        lines.append("  statuses: " + ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items())))
        lines += [f"  {check}: {count}" for check, count in sorted(self.failures_by_check.items())]
        for (identity, check, operation, title), curl in sorted(self.failures.items()):
            lines.append(f"- [{identity}] {check} {operation}: {title}\n    {curl}")
        lines += [f"! {error}" for error in self.errors]
        return "\n".join(lines)


def fuzz(
    base_url: str,
    identities: dict[str, str],
    *,
    examples: int,
    seed: int,
    duration: int = 0,
    stateful_steps: int = 10,
    only: dict[str, str] | None = None,
    coverage_mode: str | None = "all",
    progress=None,
) -> Totals:
    """Run every phase against ``base_url`` once per identity (name -> bearer credential).

    ``only`` narrows an identity to the operations whose path matches its regex (the test suite's short run
    fuzzes each credential where it is meant to work; a long run gives every identity every operation).
    ``coverage_mode`` is the coverage phase's generation mode (all, positive, negative); None skips the phase,
    which ``examples`` does not bound (95% of a short run's cases in all modes, 75% in positive).
    """
    import schemathesis
    from schemathesis.engine import events, from_schema

    totals = Totals()
    for identity, credential in identities.items():
        config = schemathesis.Config.from_dict(
            {
                "seed": seed,
                "base-url": base_url,
                "headers": {"Authorization": f"Bearer {credential}"},
                "request-timeout": 30,
                "cache": {"enabled": False},  # each run from its seed alone, and no .schemathesis/ in the tree
                # with-security-parameters off: the identity's Authorization header goes on every case (else the
                # generator fills the security schemes' headers with its own values, and nearly all is 401).
                "generation": {"max-examples": examples, "database": "none", "with-security-parameters": False},
                "checks": {name: {"enabled": enabled} for name, enabled in CHECKS.items()},
                "phases": {
                    "stateful": {"max-steps": stateful_steps},
                    "coverage": {"generation": {"mode": coverage_mode}} if coverage_mode else {"enabled": False},
                },
                "operations": [
                    {
                        "include-path-regex": PER_ITEM_RESULTS,
                        "checks": {"negative_data_rejection": {"enabled": False}},
                    }
                ],
                **({"max-time": duration} if duration else {}),
            }
        )
        schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/?format=json", config=config)
        if only and identity in only:
            # An exclusion, not include(path_regex=...): the "operations" entry above is itself an inclusion, and
            # Schemathesis ORs inclusions, so include() let every operation through.
            wanted = re.compile(only[identity])
            schema = schema.exclude(func=lambda context, wanted=wanted: not wanted.search(context.operation.path))
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                _count(totals, identity, event)
                if progress and event.label:
                    progress(f"[{identity}] {event.phase.value:<10} {event.label:<60} {event.status.value}")
            elif isinstance(event, events.NonFatalError):
                totals.errors.append(f"[{identity}] {event.label}: {event.info.format()}")
            elif isinstance(event, events.FatalError):
                totals.errors.append(f"[{identity}] fatal: {event.exception!r}")
    return totals


def _count(totals: Totals, identity: str, event) -> None:
    recorder = event.recorder
    if event.label and not event.label.startswith("Stateful"):
        totals.operations.add(event.label)
    totals.cases += len(recorder.cases)
    totals.cases_by_phase[event.phase.value] += len(recorder.cases)
    for interaction in recorder.interactions.values():
        if interaction.response is not None:
            totals.statuses[interaction.response.status_code] += 1
    for checks in recorder.checks.values():
        for check in checks:
            if check.failure_info is None:
                continue
            totals.failures_by_check[check.name] += 1
            failure = check.failure_info.failure
            key = (identity, check.name, failure.operation or recorder.label, failure.title)
            totals.failures.setdefault(key, check.failure_info.code_sample)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def identities_create(prefix: str = "fuzz") -> dict[str, str]:
    """The four kinds of credential, as bearer values: producer token, device key, fleet key, operator token."""
    from rest_framework.authtoken.models import Token

    from meters.models import ApiKey, Meter, User
    from meters.services.api_keys import api_key_create

    producer, _ = User.objects.get_or_create(
        username=f"{prefix}-producer", defaults={"wallet_address": "11111111111111111111111111111112"}
    )
    operator, _ = User.objects.get_or_create(username=f"{prefix}-operator", defaults={"is_staff": True})
    meter, _ = Meter.objects.get_or_create(
        serial=f"{prefix.upper()}-METER-1", defaults={"owner": producer, "wallet_address": producer.wallet_address}
    )
    return {
        "producer": Token.objects.get_or_create(user=producer)[0].key,
        "device": api_key_create(owner=producer, scope=ApiKey.Scope.DEVICE, meter=meter, name="fuzz")[1],
        "fleet": api_key_create(owner=producer, scope=ApiKey.Scope.FLEET, name="fuzz")[1],
        "operator": Token.objects.get_or_create(user=operator)[0].key,
    }


def wait_chain(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    import json

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getHealth"}).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"localnet exited with {process.returncode}")
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"localnet did not answer within {timeout:.0f} s")


def wait_answering(base_url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not answer within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="cases per operation and phase (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=int, default=0, help="seconds per identity, 0 = to completion")
    parser.add_argument("--stateful-steps", type=int, default=20)
    parser.add_argument("--quiet", action="store_true", help="totals only, no line per operation")
    args = parser.parse_args()

    import django

    django.setup()
    work = ROOT / "var" / "fuzz"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    # A local chain of its own, so the operator endpoints that mint answer as in production (not 503).
    chain_port = free_port()
    chain_env = {
        **os.environ,
        "SOLANA_RPC_URL": f"http://127.0.0.1:{chain_port}",
        "SOLANA_KEYPAIR_PATH": str(work / "authority.json"),
    }
    chain = subprocess.Popen(
        [sys.executable, "manage.py", "localnet", "--port", str(chain_port), "--ledger", str(work / "ledger.bin")],
        cwd=ROOT,
        env=chain_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "gridtoken.asgi:application", "--host", "127.0.0.1"]
    server = None
    try:
        wait_chain(chain_env["SOLANA_RPC_URL"], chain)
        subprocess.run([sys.executable, "manage.py", "chain_init", "--new-mint"], cwd=ROOT, env=chain_env, check=True)
        identities = identities_create()
        with open(work / "server.log", "wb") as log:
            server = subprocess.Popen(
                [*command, "--port", str(port), "--no-access-log"],
                cwd=ROOT,
                env={**chain_env, "DB_POOL": "true", **SERVER_ENV},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = time.monotonic()
        wait_answering(base_url, server)
        totals = fuzz(
            base_url,
            identities,
            examples=args.examples,
            seed=args.seed,
            duration=args.duration,
            stateful_steps=args.stateful_steps,
            progress=None if args.quiet else lambda line: print(line, flush=True),
        )
    finally:
        for process in (server, chain):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
    print(f"\n{time.monotonic() - started:.0f} s, seed {args.seed}, {args.examples} examples per operation and phase")
    print(totals.summary())
    sys.exit(1 if totals.failures or totals.errors else 0)


if __name__ == "__main__":
    main()
