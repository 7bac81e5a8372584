"""Settings for ``bench/ingest.py --no-events``: the real settings without a channel layer.

A diagnostic, not a deployment: it shows what ingestion costs without publishing live events, so the cost
of the event path can be told apart from the cost of storing readings.
"""

from gridtoken.settings import *  # noqa: F403

CHANNEL_LAYERS: dict = {}
