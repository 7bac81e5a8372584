"""The flush after a transactional test: Django's own against tests/flush.py's (only the tables written to).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gt_flush REDIS_URL=redis://127.0.0.1:6379/3 \\
        python bench/flush.py --rounds 5

Migrates DATABASE_URL (a scratch database: every round empties it), then per round writes what a small
transactional test writes (a reading with its meter and owner, an API key) and flushes it, alternating the two
flushes so that the machine's load falls on both alike; prints each round's seconds and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="flushes of each kind")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from tests import flush
    from tests.factories import ReadingFactory, api_key_for

    call_command("migrate", verbosity=0)
    flush.flush(connection)  # the first: Django's own, and the digest of the migrated content types
    timings: dict[str, list[float]] = {"django": [], "touched": []}
    for round_ in range(1, args.rounds + 1):
        for kind in ("django", "touched"):
            api_key_for(meter=ReadingFactory().meter)
            started = time.perf_counter()
            if kind == "django":
                call_command("flush", verbosity=0, interactive=False, reset_sequences=False)
            else:
                flush.flush(connection)
            timings[kind].append(time.perf_counter() - started)
            if kind == "django":  # its content types carry new ids: the digest the next touched flush compares
                flush._migrated_digest[connection.alias] = flush.post_migrate_digest(connection)
        print(f"round {round_}: django {timings['django'][-1]:.3f} s, touched {timings['touched'][-1]:.3f} s")
    medians = {kind: statistics.median(seconds) for kind, seconds in timings.items()}
    print(f"median of {args.rounds}: django {medians['django']:.3f} s, touched {medians['touched']:.3f} s")


if __name__ == "__main__":
    main()
