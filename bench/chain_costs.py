"""Lamports per kWh and per reading on the local chain's fee market, through a congestion spell.

    python bench/chain_costs.py [--readings 2000] [--wallets 100] [--batch 200] [--price 50000] [--seconds 20]

Starts its own ``manage.py localnet`` (20 ms slots), funds an authority, creates a mint and the wallets' token
accounts (their rent is reported apart: it is paid once per wallet), then sets a congestion spell
(``--price`` micro-lamports per compute unit for ``--seconds``) and mints ``--readings`` readings of 0.001-100
kWh in claims of ``--batch``: build at the market's price (p75 of getRecentPrioritizationFees), send, poll until
each transaction lands or its blockhash expires; expired ones (priced before the market showed the spell) are
signed again at the new price, as the pipeline does. Every landed transaction's fee comes from getTransaction's
meta. Prints transactions, re-signs, fees (base and priority) and lamports per kWh and per reading; the supply
is checked to the base unit. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")

from bench.chain import readings, say, set_up, start_localnet  # noqa: E402
from config.fees import FeeConfig  # noqa: E402
from minting.chain.fees import FeeMarket, landed_cost  # noqa: E402


def mint_through(client, requests, stats) -> None:
    """Mint ``requests`` until all landed: re-sign (fresh memo, current price) what expired unlanded."""
    attempt = 0
    while requests:
        signed = client.build_mints(requests, memo=f"cost{stats['claims']}-{attempt}")
        attempt += 1
        client.send_many(signed)
        waiting = {item.signature: item for item in signed}
        requests = []
        while waiting:
            outcomes = client.outcomes(list(waiting.values()))
            for signature in outcomes.landed:
                item = waiting.pop(signature)
                answer = client.rpc.call(
                    "getTransaction", [signature, {"encoding": "base64", "maxSupportedTransactionVersion": 0}]
                )
                cost = landed_cost(answer, 1)
                stats["transactions"] += 1
                stats["fee"] += cost.fee
                stats["priority"] += cost.priority_fee
                stats["prices"].add(item.compute_unit_price)
            for signature in outcomes.expired:
                requests += list(waiting.pop(signature).requests)
                stats["resigned"] += 1
            if waiting:
                client.send_many(list(waiting.values()))  # the same bytes: a resend never mints twice
                time.sleep(0.1)
    stats["claims"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2000)
    parser.add_argument("--wallets", type=int, default=100)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--price", type=int, default=50_000, help="the spell's minimum, micro-lamports per CU")
    parser.add_argument("--seconds", type=float, default=20.0, help="the spell's length")
    args = parser.parse_args()
    process, url = start_localnet(20)
    try:
        client, wallets = set_up(url, args.wallets, 8, False)
        client.fee_market = FeeMarket(FeeConfig(mode="market", percentile=75, cache_ms=200), client.rpc.call)
        rent = client.rpc.call("getMinimumBalanceForRentExemption", [165]) * args.wallets
        requests = readings(args.readings, wallets, seed=7)
        kwh = sum(Decimal(r.amount) / 10**9 for r in requests)
        client.rpc.call(
            "localnet_setFaults", [{"congestion": {"min_microlamports": args.price, "seconds": args.seconds}}]
        )
        say(f"congestion: {args.price} micro-lamports per CU for {args.seconds:g} s; minting {args.readings} readings")
        stats = {"claims": 0, "transactions": 0, "resigned": 0, "fee": 0, "priority": 0, "prices": set()}
        started = time.monotonic()
        supply_before = client.token_supply()
        for start in range(0, len(requests), args.batch):
            mint_through(client, requests[start : start + args.batch], stats)
            say(f"  {min(start + args.batch, len(requests))}/{len(requests)} readings, {stats['resigned']} re-signed")
        elapsed = time.monotonic() - started
        minted = client.token_supply() - supply_before
        assert minted == sum(r.amount for r in requests), (minted, sum(r.amount for r in requests))
        lamports = stats["fee"]
        prices = sorted(stats["prices"])
        say(f"readings {args.readings}, kWh {kwh:.3f}, transactions landed {stats['transactions']}, "
            f"re-signed after expiry {stats['resigned']}, in {elapsed:.1f} s; prices {prices}")  # fmt: skip
        say(f"fees {lamports} lamports (priority {stats['priority']}, signatures {lamports - stats['priority']})")
        say(f"lamports per kWh {lamports / kwh:.2f}, per reading {lamports / args.readings:.2f}, "
            f"per transaction {lamports / stats['transactions']:.1f}")  # fmt: skip
        say(f"rent of {args.wallets} new token accounts (once per wallet): {rent} lamports "
            f"({rent / kwh:.1f} per kWh of this run)")  # fmt: skip
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
