"""Loaded with ``-p tests.env`` before Django starts: the environment every test run shares.

Values already set in the environment win, so a developer can point a run at another database or Redis.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtoken")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

# Under pytest-xdist each worker (gw0, gw1, ...) takes its own Redis database, counting down from the run's
# (15, 14, ...); pytest-django already gives each worker its own test database (test_gridtoken_gw0, ...).
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw"):
    _base, _, _db = os.environ["REDIS_URL"].rpartition("/")
    os.environ["REDIS_URL"] = f"{_base}/{int(_db or 0) - int(_worker[2:])}"
