"""python manage.py signer_keygen: a new Ed25519 key generated inside the configured PKCS#11 token (an HSM)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from minting.chain.errors import ChainError
from minting.chain.signer import pkcs11_keygen
from minting.management import command_error


class Command(BaseCommand):
    help = (
        "Generate the signing key inside the PKCS#11 token (SIGNER_BACKEND=pkcs11): non-extractable, sign-only. "
        "Prints its public key, the Solana address to fund and to hand the mint authority to."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--label", help="the key's label in the token (default SIGNER_PKCS11_KEY_LABEL, the mint authority's)"
        )

    def handle(self, *args, label: str | None = None, **options):
        signer = settings.CHAIN.signer
        if signer.backend != "pkcs11":
            raise CommandError(
                "SIGNER_BACKEND is file: set SIGNER_BACKEND=pkcs11 and the SIGNER_PKCS11_* variables "
                "(docs/OPERATIONS.md, 'Keys in an HSM'); chain_init creates a file key itself"
            )
        try:
            public = pkcs11_keygen(signer, label or signer.key_label)
        except ChainError as error:
            raise command_error(error) from error
        self.stdout.write(str(public))
