"""One worker's CPU per single post, in-process: interval readings through the WSGI handler, no HTTP server.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/gt_ingest REDIS_URL=redis://127.0.0.1:6379/3
    python bench/ingest_inprocess.py                  # 20 meters x 10 steps, caches warm
    python bench/ingest_inprocess.py --cold           # every post misses the key and meter caches
    python bench/ingest_inprocess.py --profile 40     # and the 40 costliest functions (cProfile, CPU time)

Runs the settings ``bench/ingest.py`` gives its server (DEBUG=false, rate limits off, LOG_LEVEL=WARNING),
creates a user, ``--meters`` meters and device keys, posts one reading per meter to fill the caches, then
``--steps`` more per meter (``POST /api/v1/meters/{serial}/readings``, the next 15-minute interval each step)
and prints the process's CPU per post: the request thread and the event publisher's thread, as a gunicorn
worker spends it, without the HTTP parsing. ``--warm`` (default) keeps the key and meter cache entries for
the whole run, ``--cold`` clears both before every post (a worker that sees each meter less often than
every five seconds). Load moves CPU time; for a figure that does not, count instructions and subtract a run
without steps:

    valgrind --tool=callgrind python bench/ingest_inprocess.py --steps 0
    valgrind --tool=callgrind python bench/ingest_inprocess.py --steps 10

("Collected" difference / 200 posts). Deletes what it created.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="posts per meter after the first")
    parser.add_argument("--cold", action="store_true", help="clear the key and meter caches before every post")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    args = parser.parse_args()
    os.environ.update(
        DEBUG="false",
        SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-" + uuid.uuid4().hex * 2,
        SOLANA_KEYPAIR_PATH=os.environ.get("SOLANA_KEYPAIR_PATH") or str(ROOT / ".secrets" / "authority.json"),
        RATE_LIMIT_KEY_PER_MIN="0",
        RATE_LIMIT_USER_PER_MIN="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    sys.path.insert(0, str(ROOT / "bench"))
    import ingest

    ingest.setup_django()
    from django.core.handlers.wsgi import WSGIHandler

    from meters import selectors
    from meters.services import api_keys

    if not args.cold:  # under valgrind a run outlasts the caches' five seconds
        api_keys.CACHE_SECS = selectors.METER_CACHE_SECS = 1e9
    fixtures = ingest.create_fixtures(uuid.uuid4().hex[:6], 1, args.meters, fleet=False)
    meters = fixtures["plan"][0]
    app = WSGIHandler()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)
    statuses: dict[str, int] = {}

    def post(serial: str, key: str, step: int) -> None:
        moment = (base + step * ingest.INTERVAL).isoformat().replace("+00:00", "Z")
        body = json.dumps({"kwh": "1.234", "timestamp": moment, "voltage": 230.1}).encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": f"/api/v1/meters/{serial}/readings", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_X_API_KEY": key,
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        }  # fmt: skip
        answer = {}
        response = app(environ, lambda status, headers, exc_info=None: answer.setdefault("status", status))
        b"".join(response)
        response.close()
        statuses[answer["status"]] = statuses.get(answer["status"], 0) + 1

    try:
        for serial, key in meters:
            post(serial, key, 0)
        profile = cProfile.Profile(time.process_time) if args.profile else None
        started = time.process_time()
        if profile:
            profile.enable()
        for step in range(1, args.steps + 1):
            for serial, key in meters:
                if args.cold:
                    api_keys.forget(api_keys.hash_key(key))
                    selectors.meter_cache_clear()
                post(serial, key, step)
        if profile:
            profile.disable()
        posts = args.steps * len(meters)
        cpu_ms = (time.process_time() - started) * 1000 / max(1, posts)
        print(f"{posts} posts ({'cold' if args.cold else 'warm'} caches): {cpu_ms:.3f} ms CPU per post; {statuses}")
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    finally:
        ingest.cleanup(fixtures["owner_id"])


if __name__ == "__main__":
    main()
