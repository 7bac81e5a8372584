"""``manage.py match_hours``: match every settled hour now, printing each zone as it is done."""

from django.core.management.base import BaseCommand, CommandError

from matching.services.matcher import matching_run


class Command(BaseCommand):
    help = "Match every settled (zone, hour) with certificates of the same hour, exactly once (docs/MATCHING.md)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--limit", type=int, default=None, help="zone-hours to decide at most (MATCHING_LIMIT)")

    def handle(self, *args, limit: int | None, **options) -> None:
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1 (got {limit}); leave it out for MATCHING_LIMIT")

        def progress(zone: str, result) -> None:
            self.stdout.write(
                f"{zone}: {result.hours} hour(s), {result.consumer_hours} consumer-hour(s) with demand, "
                f"{result.matched_wh} Wh matched, {result.adjustments} adjustment(s)"
            )

        result = matching_run(limit=limit, progress=progress)
        self.stdout.write(
            f"matched {result.hours} zone-hour(s) in {result.zones} zone(s): {result.matched_wh} Wh, "
            f"{result.adjustments} adjustment(s)"
        )
