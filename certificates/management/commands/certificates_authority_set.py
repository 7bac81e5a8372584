"""python manage.py certificates_authority_set <ADDRESS>: hand the certificate mint's authorities to another key."""

from certificates.services.chain import certificate_authority_set
from minting.management.authority import AuthoritySetCommand


class Command(AuthoritySetCommand):
    help = (
        "Transfer the recorded certificate mint's mint authority and permanent delegate (SetAuthority, one "
        "transaction) from the configured key to ADDRESS; idempotent. See docs/OPERATIONS.md, 'Key rotation'."
    )

    def hand_over(self, *, new_authority, out) -> None:
        certificate_authority_set(new_authority=new_authority, out=out)
