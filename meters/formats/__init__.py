"""Device message formats -> reading body, one module per format; ``meters.validation`` does every other check.

Each parser returns the body ``readings_submit_batch`` takes (``meter_serial`` always the topic's), raises an
``ApplicationError`` for a message refused for good, or ``Ignored`` for a message that carries no reading
(a Tasmota SENSOR without energy registers, a Shelly notification about another component). Numbers are read
as ``Decimal`` (``meters.parsers.loads_exact``), never ``float``.

Every reading needs a timestamp from the message itself: a redelivered message must name the same instant to
be a duplicate. The one exception is Shelly's ``status/emdata:0``, which carries no time: it is stamped when
the ingester receives it (docs/PROTOCOLS.md says what that means after a crash).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from meters.formats import gridtoken, shelly, tasmota
from meters.formats.base import Ignored

__all__ = ["PARSERS", "Ignored", "reading_body"]

PARSERS: dict[str, Callable[..., dict]] = {
    "gridtoken": gridtoken.gridtoken,
    "tasmota": tasmota.tasmota,
    "tasmota-export": tasmota.tasmota_export,
    "shelly": shelly.shelly,
    "shelly-rpc": shelly.shelly_rpc,
}


def reading_body(fmt: str, payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    return PARSERS[fmt](payload, serial=serial, received_at=received_at, timezone=timezone)
