"""python manage.py token_balance: a wallet's tokens on chain next to what the database says it should hold.

1. Resolve each subject to wallets: a username to its own and its meters' wallets, a meter serial to its
   wallet, a wallet address to itself.
2. Read the token amounts of that wallet's minted readings on the mint in use (readings minted on an earlier
   mint are counted apart), and those of its readings being minted right now (in flight), from the wallets'
   rollups (docs/ROLLUPS.md).
3. Read the wallet's token account (``--supply``: the mint's supply) at SOLANA_COMMITMENT from a node that has
   seen the newest of those readings' batches (a node behind is "not yet", never "no"). The database is read
   first: a reading is marked minted only after its transaction is confirmed, so the chain can hold more than
   the database says (the readings in flight), never less.
4. Say whether they match; exit 0 when all do, 1 when one differs, 2 when the chain cannot tell yet.
``--wait`` reads again until they match or the seconds are up (a running pipeline always has some in flight);
``--demo`` uses the demo's database (DATABASE_URL's name + ``_demo``) as ``manage.py demo`` does.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gridtoken.databases import demo_database_name, using_database
from meters.models import Meter, User, WalletRollup
from meters.selectors import rollup_totals
from minting.chain import ChainClient, ChainError, NodeBehind
from minting.chain.configured import client_from_settings
from minting.chain.decoding import rpc_value, token_amount
from minting.chain.instructions import parse_wallet

MATCH, MISMATCH, NOT_YET = 0, 1, 2


@dataclass(frozen=True)
class Subject:
    label: str
    wallet: str | None  # None: the whole mint (its supply)


@dataclass(frozen=True)
class Expected:
    tokens: int
    kwh: Decimal
    readings: int
    in_flight: int
    in_flight_readings: int
    other_mints: int
    min_slot: int


def resolve(who: str) -> list[Subject]:
    """A username (its wallet and its meters' wallets), a meter serial or a wallet address, tried in that order."""
    user = User.objects.filter(username=who).first()
    if user is not None:
        wallets = [user.wallet_address] if user.wallet_address else []
        for wallet in (
            Meter.objects.filter(owner=user).order_by("wallet_address").values_list("wallet_address", flat=True)
        ):
            if wallet not in wallets:
                wallets.append(wallet)
        if not wallets:
            raise CommandError(f"User {who!r} has no wallet address and no meters.", returncode=NOT_YET)
        return [Subject(f"{who} wallet {wallet}", wallet) for wallet in wallets]
    meter = Meter.objects.filter(serial=who).first()
    if meter is not None:
        return [Subject(f"meter {who} wallet {meter.wallet_address}", meter.wallet_address)]
    try:
        parse_wallet(who)
    except ChainError:
        raise CommandError(
            f"{who!r} is no username, meter serial or wallet address here.", returncode=NOT_YET
        ) from None
    return [Subject(f"wallet {who}", who)]


def expected(*, mint: str, wallet: str | None) -> Expected:
    """What the database says the wallet (or, for None, the whole mint) holds, and what is in flight.

    Read from the wallets' rollups (per wallet and mint), not by summing every minted reading. The chain is
    read at or after the newest slot a batch minting to the wallet was confirmed at (``mint_slot``).
    """
    where = {} if wallet is None else {"wallet_address": wallet}
    by_mint = rollup_totals(WalletRollup, group_by="mint_address", **where)
    empty = {"minted_units": 0, "minted_kwh": Decimal(0), "minted": 0, "mint_slot": 0}
    on_mint = by_mint.get(mint, empty)
    in_flight = by_mint.get("", {"minting_units": 0, "minting": 0})
    return Expected(
        tokens=on_mint["minted_units"],
        kwh=on_mint["minted_kwh"],
        readings=on_mint["minted"],
        in_flight=in_flight["minting_units"],
        in_flight_readings=in_flight["minting"],
        other_mints=sum(row["minted"] for address, row in by_mint.items() if address not in (mint, "")),
        min_slot=on_mint["mint_slot"],
    )


def on_chain(client: ChainClient, wallet: str | None, *, min_slot: int) -> tuple[int, int]:
    """(base units, slot of the answer): the wallet's token account, or the mint's supply for None."""
    config: dict = {"commitment": client.commitment}
    if min_slot:
        config["minContextSlot"] = min_slot
    if wallet is None:
        result = client.rpc.call("getTokenSupply", [str(client.mint), config])
        amount = int(rpc_value(result, "getTokenSupply")["amount"])
    else:
        address = client.token_account(parse_wallet(wallet))
        result = client.rpc.call("getAccountInfo", [str(address), {**config, "encoding": "base64"}])
        account = rpc_value(result, "getAccountInfo")
        amount = 0 if account is None else token_amount(base64.b64decode(account["data"][0]))
    slot = int(result["context"]["slot"])
    if slot < min_slot:  # a node ignoring minContextSlot
        raise NodeBehind(f"the node answered at slot {slot}, behind slot {min_slot}")
    return amount, slot


def tokens(units: int, decimals: int) -> str:
    return format(Decimal(units).scaleb(-decimals), "f")


class Command(BaseCommand):
    help = (
        "Show a wallet's token balance on chain (at SOLANA_COMMITMENT) next to what the database says it should "
        "be (its minted readings); exit 0 when they match, 1 when not, 2 when the chain cannot tell yet."
    )

    def add_arguments(self, parser):
        parser.add_argument("who", nargs="*", help="username, meter serial or wallet address")
        parser.add_argument("--supply", action="store_true", help="also the mint's supply against every reading")
        parser.add_argument("--wait", type=float, default=0, help="read again until all match, up to this many s")
        parser.add_argument("--demo", action="store_true", help="use the demo's database (DATABASE_URL's name + _demo)")

    def handle(self, *args, who: list[str], supply: bool, wait: float, demo: bool, **options):
        if not who and not supply:
            supply = True
        if demo:
            with using_database(demo_database_name(settings.DATABASES["default"]["NAME"])):
                return self.compare(who, supply, wait)
        return self.compare(who, supply, wait)

    def compare(self, who: list[str], supply: bool, wait: float) -> None:
        subjects = [subject for name in who for subject in resolve(name)]
        if supply:
            subjects.append(Subject("mint supply", None))
        try:
            client = client_from_settings()
        except ChainError as error:
            raise CommandError(f"Cannot use the chain: {error}", returncode=NOT_YET) from error
        deadline = time.monotonic() + wait
        try:
            while True:
                lines, worst = self.compare_once(client, subjects)
                if worst == MATCH or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
        finally:
            client.close()
        self.stdout.write(f"Mint {client.mint} on {client.rpc_url} ({client.commitment})")
        for line in lines:
            self.stdout.write(line)
        if worst == MISMATCH:
            raise CommandError("The chain and the database differ.", returncode=MISMATCH)
        if worst == NOT_YET:
            raise CommandError("The chain could not be read far enough to compare.", returncode=NOT_YET)

    def compare_once(self, client: ChainClient, subjects: list[Subject]) -> tuple[list[str], int]:
        lines, worst = [], MATCH
        mint, decimals = str(client.mint), client.decimals
        for subject in subjects:
            want = expected(mint=mint, wallet=subject.wallet)
            try:
                have, slot = on_chain(client, subject.wallet, min_slot=want.min_slot)
            except ChainError as error:
                lines.append(f"{subject.label}: not yet: {error}")
                worst = max(worst, NOT_YET)
                continue
            figures = (
                f"chain {tokens(have, decimals)} tokens at slot {slot}, database {tokens(want.tokens, decimals)} "
                f"({want.readings} minted readings, {want.kwh:f} kWh)"
            )
            if have == want.tokens:
                verdict = "match"
            else:
                worst = MISMATCH
                verdict = f"MISMATCH by {tokens(have - want.tokens, decimals)}"
                if want.tokens < have <= want.tokens + want.in_flight:
                    verdict += (
                        f", within the {tokens(want.in_flight, decimals)} of {want.in_flight_readings} readings "
                        "being minted (try --wait)"
                    )
            if want.other_mints:
                verdict += f"; {want.other_mints} readings minted on other mints are not counted"
            lines.append(f"{subject.label}: {figures}: {verdict}")
        return lines, worst
