from django.core.management.base import BaseCommand

from certificates.services.chain import operations_drain
from certificates.services.issuance import certificates_issue_due


class Command(BaseCommand):
    help = "Issue certificate bundles for every due (device, interval); --send also mints their tokens now."

    def add_arguments(self, parser):
        parser.add_argument("--send", action="store_true", help="send the pending chain operations afterwards")

    def handle(self, *args, send: bool = False, **options):
        result = certificates_issue_due()
        self.stdout.write(
            f"devices {result.devices}, intervals {result.intervals}, issued {result.issued}, held {result.held}, "
            f"{result.wh} Wh"
        )
        if send:
            sent = operations_drain()
            self.stdout.write(f"chain operations: {sent.claimed} sent, {sent.confirmed} confirmed, "
                              f"{sent.in_flight} in flight")  # fmt: skip
