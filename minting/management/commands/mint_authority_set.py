"""python manage.py mint_authority_set <ADDRESS>: hand the energy token mint's authority to another key."""

from django.core.management.base import BaseCommand, CommandError
from solders.pubkey import Pubkey

from minting.chain.errors import ChainError
from minting.chain.setup import SetupError, mint_authority_set


class Command(BaseCommand):
    help = (
        "Transfer the recorded mint's authority (SPL Token SetAuthority) from the configured key to ADDRESS, "
        "e.g. a key printed by signer_keygen; idempotent. See docs/OPERATIONS.md, 'Key rotation'."
    )

    def add_arguments(self, parser):
        parser.add_argument("address", help="the new mint authority's public key (base58)")

    def handle(self, *args, address: str, **options):
        try:
            new_authority = Pubkey.from_string(address)
        except ValueError:
            raise CommandError(f"{address!r} is not a Solana address") from None
        try:
            mint_authority_set(new_authority=new_authority, out=self.stdout.write)
        except (SetupError, ChainError) as error:
            raise CommandError(str(error)) from error
