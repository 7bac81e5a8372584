"""Compute units each instruction kind of a mint transaction consumes, measured by simulateTransaction.

    python bench/compute_units.py [--memo-bytes 40]

Runs the local chain's LiteSVM in this process (the real SPL Token, Token-2022, Associated Token Account and
Memo programs), creates a mint per token program and simulates, for each: a create-ATA-idempotent of a new
account, the same for an existing one, a MintToChecked, a memo of ``--memo-bytes`` and of twice as many, and
the two ComputeBudget instructions, for ``--wallets`` new wallets each (an account's cost depends on its
address's bump seed). Prints the units of each (a transaction's units minus those of the same
transaction without the instruction) next to the estimate ``minting/chain/fees.py`` budgets for it, so a
program upgrade that costs more shows here first. Figures, never pass/fail (docs/BENCHMARKS.md, "Fees and
compute units").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")

from solders.keypair import Keypair  # noqa: E402
from solders.message import MessageV0  # noqa: E402
from solders.system_program import CreateAccountParams, create_account  # noqa: E402
from solders.transaction import VersionedTransaction  # noqa: E402
from spl.token.constants import MINT_LEN, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID  # noqa: E402
from spl.token.instructions import InitializeMintParams, initialize_mint  # noqa: E402

from localnet.state import LocalChain  # noqa: E402
from minting.chain import fees  # noqa: E402
from minting.chain import instructions as ix  # noqa: E402


def units(chain: LocalChain, payer: Keypair, instructions: list, *signers: Keypair) -> int:
    message = MessageV0.try_compile(payer.pubkey(), instructions, [], chain.latest_blockhash()[0])
    simulation, _ = chain.simulate_transaction(
        VersionedTransaction(message, [payer, *signers]), sig_verify=False, replace_blockhash=False, addresses=[]
    )
    if simulation.err is not None:
        raise SystemExit(f"simulation failed: {simulation.err} {simulation.logs}")
    return simulation.units_consumed


def run(chain: LocalChain, payer: Keypair, token_program, memo_bytes: int) -> list[tuple[str, int, int]]:
    mint = Keypair()
    rent = chain.minimum_balance_for_rent_exemption(MINT_LEN)
    chain.send_transaction(
        tx := VersionedTransaction(
            MessageV0.try_compile(
                payer.pubkey(),
                [
                    create_account(
                        CreateAccountParams(
                            from_pubkey=payer.pubkey(),
                            to_pubkey=mint.pubkey(),
                            lamports=rent,
                            space=MINT_LEN,
                            owner=token_program,
                        )
                    ),
                    initialize_mint(
                        InitializeMintParams(
                            decimals=9, program_id=token_program, mint=mint.pubkey(), mint_authority=payer.pubkey()
                        )
                    ),
                ],
                [],
                chain.latest_blockhash()[0],
            ),
            [payer, mint],
        ),
        bytes(tx),
    )
    chain.advance_slot()
    wallet = Keypair().pubkey()
    account, bump = ix.associated_token_address_and_bump(wallet, mint.pubkey(), token_program)
    create = ix.create_associated_token_account_idempotent(
        payer=payer.pubkey(), wallet=wallet, mint=mint.pubkey(), token_program=token_program, address=account
    )
    mint_to = ix.mint_to_checked(
        mint=mint.pubkey(), destination=account, authority=payer.pubkey(), amount=10**9, decimals=9,
        token_program=token_program,
    )  # fmt: skip
    new_account = units(chain, payer, [create, mint_to])
    first_mint = units(chain, payer, [create, mint_to]) - units(chain, payer, [create])
    created = new_account - first_mint
    chain.send_transaction(tx := VersionedTransaction(MessageV0.try_compile(
        payer.pubkey(), [create], [], chain.latest_blockhash()[0]), [payer]), bytes(tx))  # fmt: skip
    chain.advance_slot()
    existing = units(chain, payer, [create])
    mint_alone = units(chain, payer, [mint_to])
    memo_short = units(chain, payer, [ix.memo("m" * memo_bytes)])
    memo_long = units(chain, payer, [ix.memo("m" * 2 * memo_bytes)])
    budget = units(chain, payer, [*ix.compute_budget(unit_limit=200_000, microlamports_per_unit=1), mint_to])
    return [
        (f"create ATA (new account, bump {bump})", created, fees.create_account_units(bump)),
        (f"create ATA idempotent (exists, bump {bump})", existing, fees.create_account_units(bump)),
        ("MintToChecked", mint_alone, fees.COMPUTE_MINT),
        (f"memo, {memo_bytes} bytes", memo_short, fees.memo_units(memo_bytes)),
        (f"memo, {2 * memo_bytes} bytes", memo_long, fees.memo_units(2 * memo_bytes)),
        ("SetComputeUnitLimit + SetComputeUnitPrice", budget - mint_alone, fees.COMPUTE_BUDGET_INSTRUCTIONS),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memo-bytes", type=int, default=40)
    parser.add_argument("--wallets", type=int, default=4, help="new wallets per token program (bumps vary)")
    args = parser.parse_args()
    chain = LocalChain()
    payer = Keypair()
    chain.request_airdrop(payer.pubkey(), 10**12)
    chain.advance_slot()
    print(f"{'instruction':<44} {'program':<10} {'measured':>9} {'budgeted':>9}")
    for name, program in (("spl-token", TOKEN_PROGRAM_ID), ("token-2022", TOKEN_2022_PROGRAM_ID)):
        for _ in range(args.wallets):
            for kind, measured, budgeted in run(chain, payer, program, args.memo_bytes):
                print(f"{kind:<44} {name:<10} {measured:>9,} {budgeted:>9,}")


if __name__ == "__main__":
    main()
