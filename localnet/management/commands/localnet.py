"""``python manage.py localnet``: a local Solana JSON-RPC chain over LiteSVM (see docs/LOCALNET.md)."""

import asyncio
import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from localnet.faults import FaultPlanError, normalise_plan
from localnet.ledger import LedgerError, load_or_create
from localnet.server import LocalnetServer, run_server


def _print(line: str) -> None:
    print(line, flush=True)  # flushed at once: the test harness and scripts wait for the URL line


def _fault_plan(option: str) -> dict:
    """``--faults``: a JSON plan, or ``@path`` to a file holding one (docs/LOCALNET.md, "Fault modes")."""
    text = option
    if option.startswith("@"):
        try:
            text = Path(option[1:]).read_text()
        except OSError as error:
            raise CommandError(f"--faults: cannot read {option[1:]}: {error.strerror}") from error
    try:
        return normalise_plan(json.loads(text))
    except ValueError as error:  # FaultPlanError is a ValueError too, and names the key
        reason = str(error) if isinstance(error, FaultPlanError) else f"not valid JSON ({error})"
        raise CommandError(f"--faults: {reason}") from error


class Command(BaseCommand):
    help = "Run a local Solana JSON-RPC chain (LiteSVM with the SPL Token, Token-2022 and ATA programs)."
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--port", type=int, action="append", default=None,
            help="port to serve on (default 8899); given several times, one front-end per port over the same chain, "
            "each with its own fault plan (localnet_setFaults on its port)",
        )  # fmt: skip
        parser.add_argument("--ledger", type=Path, default=None, help="state file: restored at start, saved")
        parser.add_argument("--slot-ms", type=int, default=400, help="slot length in milliseconds")
        parser.add_argument("--save-interval", type=float, default=10.0, help="seconds between ledger saves")
        parser.add_argument("--status-interval", type=float, default=60.0, help="seconds between status lines")
        parser.add_argument(
            "--faults", default=None, help="initial fault plan of every front-end: JSON, or @path to a JSON file"
        )

    def handle(
        self, *args, host, port, ledger: Path | None, slot_ms, save_interval, status_interval, faults, **options
    ):
        if slot_ms < 1:
            raise CommandError(f"--slot-ms must be at least 1 (got {slot_ms})")
        ports = port or [8899]
        for each in ports:
            if not 0 <= each <= 65535:
                raise CommandError(f"--port must be 0..65535 (got {each})")
        fixed = [each for each in ports if each]  # 0: any free port, as often as wanted
        if len(set(fixed)) != len(fixed):
            raise CommandError(f"--port: each port once (got {', '.join(map(str, ports))})")
        plan = _fault_plan(faults) if faults is not None else {}
        try:
            chain = load_or_create(ledger)
        except LedgerError as error:
            raise CommandError(str(error)) from error
        if ledger is not None and ledger.exists():
            _print(f"localnet restored {ledger} at slot {chain.slot} ({len(chain.history)} signatures)")
        server = LocalnetServer(
            chain, host=host, port=ports[0], more_ports=ports[1:], slot_ms=slot_ms, ledger_path=ledger,
            save_interval=save_interval, status_interval=status_interval, out=_print,
        )  # fmt: skip
        if plan:  # every front-end starts with it
            for front_end in server.front_ends:
                front_end.faults.set(plan)
        try:
            asyncio.run(run_server(server))
        except OSError as error:
            raise CommandError(f"cannot listen on {host}:{', '.join(map(str, ports))}: {error}") from error
        sys.stdout.flush()
