"""python manage.py mint_authority_set <ADDRESS>: hand the energy token mint's authority to another key."""

from minting.chain.setup import mint_authority_set
from minting.management.authority import AuthoritySetCommand


class Command(AuthoritySetCommand):
    help = (
        "Transfer the recorded mint's authority (SPL Token SetAuthority) from the configured key to ADDRESS, "
        "e.g. a key printed by signer_keygen; idempotent. See docs/OPERATIONS.md, 'Key rotation'."
    )

    def hand_over(self, *, new_authority, out) -> None:
        mint_authority_set(new_authority=new_authority, out=out)
