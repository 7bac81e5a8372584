"""Loaded only by bench/soak.py's ingester command line (``python -c "import bench.poison_hook; ..."``): the
GridToken MQTT format raises on a payload carrying ``SOAK-POISON``. It stands in for a bug no real message
provokes on purpose, so the soak can check that the door survives one; the product has no such switch."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
django.setup()

from meters import formats  # noqa: E402

MARKER = b"SOAK-POISON"
_real = formats.PARSERS["gridtoken"]


class PoisonBug(RuntimeError):
    """The planted bug."""


def _poisoned(payload: bytes, **kwargs) -> dict:
    if MARKER in payload:
        raise PoisonBug("the soak's planted bug")
    return _real(payload, **kwargs)


formats.PARSERS["gridtoken"] = _poisoned
