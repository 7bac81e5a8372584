"""One received MQTT PUBLISH and what became of it: what the ingester and its poison isolation both handle."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class Delivery:
    """One received PUBLISH and what became of it."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: datetime
    connection: int
    correlation: bytes | None = None
    serial: str | None = None
    body: dict | None = None
    outcome: str = ""  # accepted, duplicate, rejected, ignored
    error: dict | None = field(default=None)
    request_id: str = field(default_factory=lambda: f"mqtt-{uuid.uuid4().hex}")  # its log lines and answer
    fingerprint: str = ""
    suspect: bool = False  # redelivered after the ingester handling it died
    attempts: int = 1
