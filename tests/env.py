"""Loaded with ``-p tests.env`` before Django starts: the environment every test run shares.

Values already set in the environment win, so a developer can point a run at another database or Redis.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtoken")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
