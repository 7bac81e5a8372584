from django.core.management.base import BaseCommand, CommandError

from certificates.services.chain import certificate_mint_init
from minting.chain import ChainError
from minting.chain.errors import SignerUnavailable


class Command(BaseCommand):
    help = "Create (or verify) the certificate mint: Token-2022, 0 decimals (1 Wh each). Run after chain_init."

    def add_arguments(self, parser):
        parser.add_argument("--new-mint", action="store_true", help="create a new mint even if one is recorded")

    def handle(self, *args, new_mint: bool = False, **options):
        try:
            mint, created = certificate_mint_init(new_mint=new_mint)
        except ChainError as error:
            hint = "" if isinstance(error, SignerUnavailable) else " (run python manage.py chain_init first)"
            raise CommandError(f"{error.code}: {error}{hint}") from error
        verb = "created" if created else "verified"
        self.stdout.write(f"{verb} the certificate mint {mint.address} (Token-2022, 0 decimals, 1 base unit = 1 Wh)")
