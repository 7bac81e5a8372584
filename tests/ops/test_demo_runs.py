"""``manage.py demo`` twice in a row: each run on its own fresh database and chain, its figures match the chain; the
second run over MQTT (``--transport mqtt``: the simulators publish to the broker, the ingester stores, the pipeline
mints)."""

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from solders.keypair import Keypair

from minting.chain import ChainClient
from ops.processes import group_alive
from tests.conftest import ROOT, Localnet, free_port
from tests.ops.test_demo import Demo, base_env, drop_database, own_database

BASE_DB = own_database("twice")
DEMO_DB = f"{BASE_DB}_demo"


@pytest.fixture
def demo_database():
    drop_database(DEMO_DB)
    yield f"postgres://postgres@127.0.0.1:5432/{BASE_DB}"
    drop_database(DEMO_DB)


def test_help_needs_no_environment_but_a_real_start_still_needs_a_secret_key():
    bare = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    command = [sys.executable, "manage.py"]

    helped = subprocess.run([*command, "demo", "--help"], cwd=ROOT, env=bare, capture_output=True, text=True)
    check = subprocess.run([*command, "check"], cwd=ROOT, env=bare, capture_output=True, text=True)

    assert helped.returncode == 0, helped.stderr
    assert "--keep" in helped.stdout and "_demo" in helped.stdout and "compressed sun" in helped.stdout
    assert check.returncode == 2 and "SECRET_KEY" in check.stderr  # production (DEBUG unset) still refuses


def group_argv(pgids: set[int]) -> dict[int, str]:
    """The command line of every process in these process groups (the demo's children and theirs)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in pgids:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def figures(output: str) -> dict:
    mint = re.search(r"^Energy token mint: (\w+) on ", output, re.MULTILINE)[1]
    wallets = dict(re.findall(r"^  (?:producer|farm) +(\S+)\s+\S+  wallet (\w+)$", output, re.MULTILINE))
    passwords = re.findall(r"^  (?:producer|operator)\s+\S+\s+(\S+)", output, re.MULTILINE)
    checks = re.findall(
        r"^  (.+): chain (\S+) tokens at slot \d+, database (\S+) .*: (match|MISMATCH.*)$", output, re.M
    )
    return {"mint": mint, "wallets": wallets, "passwords": passwords, "checks": checks}


def stop_once_minting(run) -> None:
    """Ctrl-C, as a user would, once the demo's progress line shows readings minted (a fixed --duration was
    too short for a loaded machine: the simulators had not registered their meters yet)."""
    run.wait_for(r"^submitted [1-9]\d* \| minted [1-9]", timeout=150)
    run.process.send_signal(signal.SIGINT)


def demo_rows(query: str) -> list[tuple]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=DEMO_DB) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.timeout(420)
def test_the_demo_twice_in_a_row_shows_only_its_own_run_and_its_figures_match_the_chain(tmp_path, demo_database):
    web, rpc = free_port(), free_port()
    env = base_env(DATABASE_URL=demo_database, SOLANA_KEYPAIR_PATH=str(tmp_path / "authority.json"))
    args = ["--port", str(web), "--rpc-port", str(rpc), "--var-dir", str(tmp_path / "var"), "--producers", "2"]
    args += ["--meters", "1", "--backfill", "1", "--interval", "1"]

    first = Demo(env, *args)
    first.wait_for(rf"^Dashboard: http://127\.0\.0\.1:{web}/dashboard/$", timeout=150)
    stop_once_minting(first)
    argv = group_argv(set(first.pids().values()))
    assert first.finish(timeout=120) == 0, "\n".join(first.lines)
    one = figures("\n".join(first.lines))
    one_meters = {row[0] for row in demo_rows("SELECT serial FROM meters_meter")}

    # Nothing secret on any command line the demo started (ps shows them to every user of the machine).
    assert len(argv) >= 6 and any("simulate_meters" in line for line in argv.values())
    for line in argv.values():
        assert "--password" not in line and not any(password in line for password in one["passwords"]), line
        assert "postgres://" not in line and "mqtt://" not in line

    mqtt = {
        "MQTT_URL": "mqtt://127.0.0.1:1883",
        "MQTT_CLIENT_ID": f"demo-test-{os.getpid()}-{time.monotonic_ns()}",
        "MQTT_SHARE_GROUP": "",
    }
    second = Demo({**env, **mqtt}, *args, "--transport", "mqtt")
    second.wait_for(r"^Started ingester \(pid \d+\)$", timeout=150)
    stop_once_minting(second)
    assert second.finish(timeout=180) == 0, "\n".join(second.lines)
    assert [name for name, pid in second.pids().items() if group_alive(pid)] == []
    output = "\n".join(second.lines)
    two = figures(output)

    assert f"Database {DEMO_DB}: reset, empty for this run" in output
    assert two["mint"] != one["mint"] and set(two["wallets"].values()).isdisjoint(one["wallets"].values())
    # The demo's own check on stop: the supply and each wallet minted to (producers and the farm), all matching.
    assert {label.split(" wallet ")[0] for label, *_ in two["checks"]} == {
        "demo-producer-1",
        "demo-producer-2",
        "demo-solar-farm",
        "mint supply",
    }
    assert all(verdict == "match" and chain == db for _, chain, db, verdict in two["checks"]), output

    # Independently: the database holds only the second run, and the ledger it left agrees with it.
    assert demo_rows("SELECT address FROM minting_tokenmint") == [(two["mint"],)]
    meters = {row[0] for row in demo_rows("SELECT serial FROM meters_meter")}
    assert meters and meters.isdisjoint(one_meters)
    minted = demo_rows(
        "SELECT r.wallet_address, r.token_amount, r.mintable_kwh, b.mint_address FROM meters_meterreading r "
        "JOIN minting_mintbatch b ON b.id = r.batch_id WHERE r.status = 'minted'"
    )
    assert minted and {row[3] for row in minted} == {two["mint"]}
    per_wallet: dict[str, int] = defaultdict(int)
    for wallet, amount, kwh, _ in minted:
        assert amount == int(kwh * 10**9)
        per_wallet[wallet] += amount
    assert set(per_wallet) <= set(two["wallets"].values())
    chain = Localnet(tmp_path / "var").start()  # on the ledger the second run left
    try:
        client = ChainClient(rpc_url=chain.url, authority=Keypair(), mint=two["mint"], decimals=9)
        assert client.token_supply() == sum(per_wallet.values())
        for wallet in two["wallets"].values():
            assert client.token_balance(wallet) == per_wallet.get(wallet, 0), wallet
        client.close()
    finally:
        chain.stop()
