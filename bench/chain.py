"""Readings minted per second through the localnet: one transaction per reading vs packed batches.

    python bench/chain.py [--readings 20000] [--single 3000] [--wallets 250] [--batch 200] [--in-flight 8]

Starts its own ``manage.py localnet`` on a free port (or uses ``--url``), funds an authority, creates a mint
and the wallets' token accounts (not timed), then for each scenario: builds and signs every transaction
(ChainClient.build_mints), sends them K at a time (send_many), and polls getSignatureStatuses until every
one has landed. Readings/s is end to end over the three phases; the supply is checked to the base unit.
CPU seconds of this process and of the localnet show which side bounds the rate. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")

from solders.keypair import Keypair  # noqa: E402
from solders.system_program import CreateAccountParams, create_account  # noqa: E402
from spl.token.constants import MINT_LEN, TOKEN_PROGRAM_ID  # noqa: E402
from spl.token.instructions import InitializeMintParams, initialize_mint  # noqa: E402

from minting.chain import ChainClient, MintRequest, kwh_to_base_units  # noqa: E402
from minting.chain.rpc import Rpc  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_localnet(slot_ms: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "manage.py", "localnet", "--port", str(port), "--slot-ms", str(slot_ms)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    rpc = Rpc(url, timeout=1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if rpc.call("getHealth") == "ok":
                return process, url
        except Exception:
            time.sleep(0.1)
    raise SystemExit("localnet did not start within 30 s")


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def set_up(url: str, wallet_count: int, in_flight: int, lookup_tables: bool) -> tuple[ChainClient, list[str]]:
    authority = Keypair()
    client = ChainClient(
        rpc_url=url, authority=authority, mint=authority.pubkey(), decimals=9, concurrent_batches=in_flight,
        lookup_tables=lookup_tables, timeout=30,
    )  # fmt: skip
    wait_landed(client, [client.rpc.call("requestAirdrop", [str(authority.pubkey()), 10**6 * 10**9])])
    mint = Keypair()
    rent = client.rpc.call("getMinimumBalanceForRentExemption", [MINT_LEN])
    client.execute(
        [
            create_account(CreateAccountParams(
                from_pubkey=authority.pubkey(), to_pubkey=mint.pubkey(), lamports=rent, space=MINT_LEN,
                owner=TOKEN_PROGRAM_ID)),
            initialize_mint(InitializeMintParams(
                decimals=9, program_id=TOKEN_PROGRAM_ID, mint=mint.pubkey(), mint_authority=authority.pubkey())),
        ],
        [mint],
    )  # fmt: skip
    client.mint = mint.pubkey()
    wallets = [str(Keypair().pubkey()) for _ in range(wallet_count)]
    signed = client.build_mints([MintRequest(w, 1) for w in wallets], memo="setup")
    client.send_many(signed)
    wait_landed(client, [s.signature for s in signed])
    return client, wallets


def wait_landed(client: ChainClient, signatures: list[str], timeout: float = 300) -> int:
    """Poll until every signature has a status; the number that failed on chain."""
    pending, failed = list(signatures), 0
    deadline = time.monotonic() + timeout
    while pending:
        statuses = client.get_signature_statuses(pending)
        failed += sum(1 for s in statuses.values() if s is not None and s.err is not None)
        pending = [signature for signature, status in statuses.items() if status is None]
        if pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} transactions did not land within {timeout:g} s")
            time.sleep(0.02)
    return failed


def readings(count: int, wallets: list[str], seed: int) -> list[MintRequest]:
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        kwh = Decimal(rng.randint(1, 100_000)) / 1000  # 0.001 .. 100 kWh, exact
        result.append(MintRequest(rng.choice(wallets), kwh_to_base_units(kwh, ratio=Decimal(1), decimals=9)))
    return result


def run(name: str, client: ChainClient, batches: list[list[MintRequest]], localnet_pid: int | None) -> dict:
    supply_before = client.token_supply()
    count = sum(len(batch) for batch in batches)
    cpu_self, cpu_chain = time.process_time(), cpu_seconds(localnet_pid)
    started = time.perf_counter()
    blockhash, fetched = client.latest_blockhash(), time.monotonic()
    signed = []
    for index, batch in enumerate(batches):
        if time.monotonic() - fetched > 20:  # a blockhash lives 150 slots (60 s at 400 ms)
            blockhash, fetched = client.latest_blockhash(), time.monotonic()
        signed += client.build_mints(batch, memo=f"{name}-{index}", recent_blockhash=blockhash)
        if index % max(1, len(batches) // 4) == 0:
            say(f"  {name}: built {index + 1}/{len(batches)} batches")
    built = time.perf_counter()
    outcomes = client.send_many(signed)
    sent = time.perf_counter()
    errors = [error for error in outcomes.values() if error is not None]
    failed = wait_landed(client, [s.signature for s in signed])
    landed = time.perf_counter()
    minted = client.token_supply() - supply_before
    expected = sum(request.amount for batch in batches for request in batch)
    instructions = [len({r.wallet for r in s.requests}) for s in signed]
    total = landed - started
    return {
        "name": name, "readings": count, "transactions": len(signed),
        "per_tx_mean": sum(instructions) / len(signed), "per_tx_max": max(instructions),
        "build_s": built - started, "send_s": sent - built, "confirm_s": landed - sent, "total_s": total,
        "readings_per_s": count / total, "mints_per_s": sum(instructions) / total,
        "send_errors": len(errors), "failed": failed, "exact": minted == expected,
        "cpu_bench_s": time.process_time() - cpu_self, "cpu_localnet_s": cpu_seconds(localnet_pid) - cpu_chain,
    }  # fmt: skip


def report(stats: dict) -> None:
    say(
        f"{stats['name']:<22} {stats['readings']:>7} readings  {stats['transactions']:>6} tx  "
        f"{stats['per_tx_mean']:5.1f} (max {stats['per_tx_max']}) mints/tx  "
        f"build {stats['build_s']:5.2f}s send {stats['send_s']:5.2f}s confirm {stats['confirm_s']:5.2f}s  "
        f"=> {stats['readings_per_s']:8.0f} readings/s ({stats['mints_per_s']:7.0f} mint instr/s)  "
        f"cpu bench {stats['cpu_bench_s']:.1f}s localnet {stats['cpu_localnet_s']:.1f}s "
        f"({stats['cpu_localnet_s'] / stats['total_s']:.0%} of a core)  "
        f"errors {stats['send_errors']}/{stats['failed']}  supply {'exact' if stats['exact'] else 'WRONG'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=20_000, help="readings in each packed scenario")
    parser.add_argument("--single", type=int, default=3_000, help="readings sent one transaction each")
    parser.add_argument("--wallets", type=int, default=250, help="distinct wallets (<= 255 fill one table)")
    parser.add_argument("--batch", type=int, default=200, help="readings per build_mints call")
    parser.add_argument("--in-flight", type=int, default=8, help="transactions in flight (send_many threads)")
    parser.add_argument("--slot-ms", type=int, default=400)
    parser.add_argument("--url", help="use this RPC instead of starting a localnet")
    args = parser.parse_args()

    process, url = (None, args.url) if args.url else start_localnet(args.slot_ms)
    pid = process.pid if process else None
    say(f"localnet {url}; {args.wallets} wallets, batches of {args.batch}, {args.in_flight} in flight")
    try:
        for lookup_tables in (False, True):
            client, wallets = set_up(url, args.wallets, args.in_flight, lookup_tables)
            if not lookup_tables and args.single:
                single = readings(args.single, wallets, seed=1)
                report(run("one tx per reading", client, [[r] for r in single], pid))
            packed = readings(args.readings, wallets, seed=2)
            batches = [packed[i : i + args.batch] for i in range(0, len(packed), args.batch)]
            if lookup_tables:  # fill the table once, untimed, as a long-running worker would have
                client.build_mints([MintRequest(w, 1) for w in wallets], memo="warm-up")
            report(run("packed v0 + lookup" if lookup_tables else "packed legacy", client, batches, pid))
            client.close()
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
