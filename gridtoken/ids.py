"""Time-ordered ids: UUIDv7 (RFC 9562, section 5.7), which Python 3.11's ``uuid`` module does not make.

Layout, most significant bit first: 48 bits of Unix time in milliseconds, the version (0111), 12 bits, the
variant (10), 62 bits. The 74 bits after the time are random, except that ids made by one process never go
down: one made in the same millisecond as the last (or after the clock stepped back) is the last one plus
one (RFC 9562 6.2, method 2, with the whole 74 bits as the counter), so a primary key of these ids grows at
its right edge and its index pages fill instead of splitting at random places as with uuid4. A forked
child starts afresh, so two processes never count up from the same id.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid

_RANDOM_BITS = 74
_RANDOM_B_BITS = 62
_last = 0  # the last id's time and random bits, (ms << 74) | random
_lock = threading.Lock()


def uuid7_from(ms: int, random: int) -> uuid.UUID:
    """The UUIDv7 of ``ms`` (Unix time in milliseconds, 48 bits) and ``random`` (74 bits)."""
    rand_a, rand_b = random >> _RANDOM_B_BITS, random & ((1 << _RANDOM_B_BITS) - 1)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


def uuid7() -> uuid.UUID:
    """A new UUIDv7, greater than every one this process made before."""
    global _last
    candidate = (time.time_ns() // 1_000_000 << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
    with _lock:
        _last = candidate if candidate > _last else _last + 1
        value = _last
    return uuid7_from(value >> _RANDOM_BITS, value & ((1 << _RANDOM_BITS) - 1))


def _forget() -> None:
    global _last, _lock
    _last, _lock = 0, threading.Lock()


os.register_at_fork(after_in_child=_forget)


def uuid7_sql(ms: str) -> str:
    """A PostgreSQL expression for a UUIDv7 of ``ms`` (an SQL expression of Unix milliseconds), for bulk
    inserts in SQL (PostgreSQL 15 has no ``uuidv7()``): a random uuid4 with the time over its first 48 bits
    and its version set from 4 (0100) to 7 (0111); the variant bits are already 10. Random after the time,
    so not monotonic within one millisecond."""
    return (
        f"encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING substring(int8send(({ms})::bigint)"
        " FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
    )
