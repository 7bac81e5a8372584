"""python manage.py chain_init: idempotent set-up of the configured chain (keypair, SOL, mint, its record)."""

from django.core.management.base import BaseCommand

from minting.chain.errors import ChainError
from minting.chain.setup import SetupError, initialise_chain
from minting.management import command_error


class Command(BaseCommand):
    help = "Create the authority keypair, fund it on a local chain, and create (or adopt) the energy token mint."

    def add_arguments(self, parser):
        parser.add_argument(
            "--new-mint", action="store_true",
            help="create a new mint even though one is recorded (e.g. after changing TOKENIZATION_DECIMALS)",
        )  # fmt: skip

    def handle(self, *args, new_mint: bool = False, **options):
        try:
            initialise_chain(new_mint=new_mint, out=self.stdout.write)
        except (SetupError, ChainError) as error:
            raise command_error(error) from error
