"""The shape of the commands that hand a mint's authority to another key (energy mint, certificate mint)."""

from django.core.management.base import BaseCommand, CommandError
from solders.pubkey import Pubkey

from minting.chain.errors import ChainError
from minting.chain.setup import SetupError
from minting.management import command_error


class AuthoritySetCommand(BaseCommand):
    """``manage.py <command> ADDRESS``: a subclass's ``hand_over(new_authority=, out=)`` does the work."""

    def hand_over(self, *, new_authority: Pubkey, out) -> None:
        raise NotImplementedError

    def add_arguments(self, parser):
        parser.add_argument("address", help="the new authority's public key (base58), e.g. from signer_keygen")

    def handle(self, *args, address: str, **options):
        try:
            new_authority = Pubkey.from_string(address)
        except ValueError:
            raise CommandError(f"{address!r} is not a Solana address") from None
        try:
            self.hand_over(new_authority=new_authority, out=self.stdout.write)
        except (SetupError, ChainError) as error:
            raise command_error(error) from error
