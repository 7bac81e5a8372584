"""Fault modes: the localnet misbehaving like a load-balanced pool of RPC nodes (docs/LOCALNET.md).

One ``Faults`` per server holds the plan (``localnet_setFaults`` or ``--faults``) and what is left of it; the
HTTP server and the method handlers consult it. A plan replaces the previous one as a whole and starts its
counts afresh. Transactions already "seen on a fork" play out whatever the plan becomes: what a cluster showed
a client does not change with the next plan.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from solders.transaction_status import TransactionConfirmationStatus

from localnet.errors import invalid_params
from localnet.rpc import check_min_context_slot, config_of, positional
from localnet.state import SLOT_HASHES_MAX, ChainView, LocalChain

CONTROL_METHODS = frozenset({"localnet_setFaults", "localnet_getFaults"})
# Answered by a replica (the lag fault applies); the rest go to the leader or need no chain state.
LAGGABLE_METHODS = frozenset(
    {
        "getSlot", "getBlockHeight", "getEpochInfo", "getTransactionCount", "getLatestBlockhash",
        "isBlockhashValid", "getFeeForMessage", "getMinimumBalanceForRentExemption", "getBalance",
        "getAccountInfo", "getMultipleAccounts", "getTokenAccountBalance", "getTokenSupply",
        "getTokenAccountsByOwner", "simulateTransaction", "getSignatureStatuses", "getTransaction",
        "minimumLedgerSlot", "getFirstAvailableBlock", "getRecentPrioritizationFees",
    }
)  # fmt: skip
UNLAGGED_METHODS = frozenset({"sendTransaction", "requestAirdrop", "getHealth", "getVersion"})
RPC_METHODS = LAGGABLE_METHODS | UNLAGGED_METHODS
MAX_LAG_SLOTS = SLOT_HASHES_MAX - 1  # a lagged getLatestBlockhash needs that slot's hash
RECENT_FEE_SLOTS = 150  # slots getRecentPrioritizationFees answers for (a validator's prioritization fee cache)
MAX_MICROLAMPORTS = 10**12
# Statuses an http spell may answer with, and the JSON-RPC-ish error providers put in the body by default.
HTTP_FAULT_BODIES: dict[int, tuple[int, str] | None] = {
    200: None,  # needs a body: a 200 with an HTML page or other garbage
    401: (-32401, "invalid api key provided"),
    403: (-32052, "API key is not allowed to access blockchain"),
    404: (-32000, "Not Found"),
    407: (-32000, "Proxy Authentication Required"),
    413: (-32600, "Request entity too large"),
    429: (429, "Too many requests for a specific RPC call, contact your app developer or support@rpcpool.com."),
    500: (-32603, "Internal error"),
    502: (-32000, "Bad Gateway"),
    503: (-32000, "Service Unavailable"),
    504: (-32000, "Gateway Timeout"),
}
JSON_CONTENT = b"application/json; charset=utf-8"
HTML_CONTENT = b"text/html; charset=utf-8"
PROCESSED = TransactionConfirmationStatus.Processed
CONFIRMED = TransactionConfirmationStatus.Confirmed
FINALIZED = TransactionConfirmationStatus.Finalized
_SECTIONS = {
    "lag": {"slots", "methods", "every"},
    "drop_sends": {"count", "all"},
    "fork": {"count", "vanish_after_slots"},
    "history": {"mode", "slots"},
    "http": {"status", "seconds", "count", "methods", "body"},
    "finality": {"confirmed_after", "finalized_after"},
    "congestion": {"min_microlamports", "seconds", "count"},
}


class FaultPlanError(ValueError):
    """A plan that cannot be applied; the message names the key."""


class HttpReply(NamedTuple):
    status: int
    body: bytes
    content_type: bytes
    headers: bytes = b""  # extra header lines, each ending in CRLF


# -- the plan --------------------------------------------------------------------------------------------


def _integer(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        allowed = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
        raise FaultPlanError(f"{name} must be an integer {allowed} (got {json.dumps(value)})")
    return value


def _methods(value: Any, name: str, allowed: frozenset[str]) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(method, str) for method in value):
        raise FaultPlanError(f"{name} must be a non-empty list of method names (got {json.dumps(value)})")
    for method in value:
        if method == "sendTransaction" and name == "lag.methods":
            raise FaultPlanError("lag.methods: sendTransaction is never lagged (replicas forward sends to the leader)")
        if method not in allowed:
            raise FaultPlanError(f"{name}: {method} is not one of {', '.join(sorted(allowed))}")
    return sorted(set(value))


def _lag(section: dict) -> dict:
    methods = section.get("methods")
    return {
        "slots": _integer(section.get("slots"), "lag.slots", 1, MAX_LAG_SLOTS),
        "methods": None if methods is None else _methods(methods, "lag.methods", LAGGABLE_METHODS),  # None: all
        "every": _integer(section.get("every", 1), "lag.every", 1),
    }


def _drop_sends(section: dict) -> dict:
    if "all" in section:
        if section["all"] is not True or "count" in section:
            raise FaultPlanError('drop_sends takes either {"count": N} or {"all": true}')
        return {"all": True}
    return {"count": _integer(section.get("count"), "drop_sends.count", 1)}


def _fork(section: dict) -> dict:
    return {
        "count": _integer(section.get("count"), "fork.count", 1),
        "vanish_after_slots": _integer(section.get("vanish_after_slots", 5), "fork.vanish_after_slots", 1),
    }


def _history(section: dict) -> dict:
    mode = section.get("mode")
    if mode == "unavailable":
        if "slots" in section:
            raise FaultPlanError('history.slots goes with mode "gap" only')
        return {"mode": mode}
    if mode == "gap":
        return {"mode": mode, "slots": _integer(section.get("slots"), "history.slots", 1)}
    raise FaultPlanError(f'history.mode must be "unavailable" or "gap" (got {json.dumps(mode)})')


def _http(section: dict) -> dict:
    status = section.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or status not in HTTP_FAULT_BODIES:
        raise FaultPlanError(f"http.status must be one of {', '.join(map(str, HTTP_FAULT_BODIES))} (got {status})")
    seconds, count, methods, body = (section.get(key) for key in ("seconds", "count", "methods", "body"))
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0):
        raise FaultPlanError(f"http.seconds must be a positive number or null (got {json.dumps(seconds)})")
    if body is not None and not isinstance(body, str | dict | list):
        raise FaultPlanError("http.body must be a string, a JSON value (object or array) or null")
    if status == 200 and body is None:
        raise FaultPlanError("http.body is needed with status 200 (a 200 with an HTML page, say)")
    return {
        "status": status,
        "seconds": seconds,
        "count": None if count is None else _integer(count, "http.count", 1),
        "methods": None if methods is None else _methods(methods, "http.methods", RPC_METHODS),
        "body": body,
    }


def _finality(section: dict) -> dict:
    confirmed = _integer(section.get("confirmed_after", 1), "finality.confirmed_after", 0)
    finalized = _integer(section.get("finalized_after", 32), "finality.finalized_after", confirmed)
    return {"confirmed_after": confirmed, "finalized_after": finalized}


def _congestion(section: dict) -> dict:
    seconds, count = section.get("seconds"), section.get("count")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0):
        raise FaultPlanError(f"congestion.seconds must be a positive number or null (got {json.dumps(seconds)})")
    return {
        "min_microlamports": _integer(
            section.get("min_microlamports"), "congestion.min_microlamports", 1, MAX_MICROLAMPORTS
        ),
        "seconds": seconds,
        "count": None if count is None else _integer(count, "congestion.count", 1),
    }


_NORMALISERS: dict[str, Callable[[dict], dict]] = {
    "lag": _lag, "drop_sends": _drop_sends, "fork": _fork, "history": _history, "http": _http,
    "finality": _finality, "congestion": _congestion,
}  # fmt: skip


def normalise_plan(plan: Any) -> dict:
    """The plan with its defaults filled in; ``FaultPlanError`` naming the first key that is wrong."""
    if not isinstance(plan, dict):
        raise FaultPlanError("the fault plan must be a JSON object")
    normalised = {}
    for key, section in plan.items():
        if key not in _SECTIONS:
            raise FaultPlanError(f"{key} is not a fault mode (known: {', '.join(_SECTIONS)})")
        if section is None:
            continue
        if not isinstance(section, dict):
            raise FaultPlanError(f"{key} must be an object")
        unknown = sorted(set(section) - _SECTIONS[key])
        if unknown:
            raise FaultPlanError(f"{key}.{unknown[0]} is not a setting of {key} (known: {', '.join(_SECTIONS[key])})")
        normalised[key] = _NORMALISERS[key](section)
    return normalised


def http_reply_for(spell: dict) -> HttpReply:
    status, body = spell["status"], spell["body"]
    headers = b"Retry-After: 1\r\n" if status == 429 else b""
    if body is None:
        code, message = HTTP_FAULT_BODIES[status]
        body = {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": None}
    if not isinstance(body, str):
        return HttpReply(status, json.dumps(body, separators=(",", ":")).encode(), JSON_CONTENT, headers)
    try:
        json.loads(body)
    except ValueError:
        return HttpReply(status, body.encode(), HTML_CONTENT, headers)
    return HttpReply(status, body.encode(), JSON_CONTENT, headers)


def first_method(body: bytes) -> str | None:
    """The method of a request body, or of a batch's first request (what a provider's router looks at)."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(request, list) and request:
        request = request[0]
    method = request.get("method") if isinstance(request, dict) else None
    return method if isinstance(method, str) else None


# -- the running faults ----------------------------------------------------------------------------------


class Faults:
    """The current plan and its counters. Thread-safe: state is read and changed under ``self.lock``; the
    unlocked checks on the hot paths (``http_reply``, ``fork_slot``) only skip work when nothing is set."""

    def __init__(self, chain: LocalChain, *, on_change: Callable[[str], None] | None = None) -> None:
        self.chain = chain
        self.on_change = on_change
        self.lock = threading.Lock()
        self.plan: dict = {}
        self._lag_calls = 0
        self._drops_left = 0
        self._forks_left = 0
        self._http_left: int | None = None
        self._http_until: float | None = None
        self._http_reply: HttpReply | None = None
        # signature -> (slot it was seen on the fork, slot it vanishes at); kept so a resend after it vanished
        # is not put on a fork again. Bounded by the fork counts ever set.
        self._forked: dict[bytes, tuple[int, int]] = {}
        self._forks_visible_until = 0
        # The congestion spell under way: [price, dropped sends left or None, monotonic end or None, start slot,
        # start time]; and the spells of the last slots as (first slot, last slot, price) for the fee answers.
        self._congestion: list | None = None
        self._spells: deque[tuple[int, int, int]] = deque(maxlen=64)

    def handlers(self) -> dict:
        return {"localnet_setFaults": self.rpc_set_faults, "localnet_getFaults": self.rpc_get_faults}

    def rpc_set_faults(self, params: list) -> str:
        (plan,) = positional(params, 1, 1)
        try:
            return json.dumps(self.set(plan), separators=(",", ":"))
        except FaultPlanError as error:
            raise invalid_params(f"Invalid fault plan: {error}") from error

    def rpc_get_faults(self, params: list) -> str:
        positional(params, 0, 0)
        return json.dumps(self.describe(), separators=(",", ":"))

    def set(self, plan: Any) -> dict:
        """Replace the plan (``{}`` clears it); returns it normalised."""
        normalised = normalise_plan(plan)
        with self.lock:
            self.plan = normalised
            self._lag_calls = 0
            self._drops_left = normalised.get("drop_sends", {}).get("count", 0)
            self._forks_left = normalised.get("fork", {}).get("count", 0)
            spell = normalised.get("http")
            self._http_reply = http_reply_for(spell) if spell else None
            self._http_left = spell["count"] if spell else None
            self._http_until = time.monotonic() + spell["seconds"] if spell and spell["seconds"] else None
            self._end_congestion(self.chain.slot)
            congestion, now = normalised.get("congestion"), time.monotonic()
            if congestion is not None:
                until = now + congestion["seconds"] if congestion["seconds"] else None
                self._congestion = [congestion["min_microlamports"], congestion["count"], until, self.chain.slot, now]
        if self.on_change is not None:
            described = json.dumps(normalised, separators=(",", ":"))
            self.on_change(f"localnet faults set: {described}" if normalised else "localnet faults cleared")
        return normalised

    def describe(self) -> dict:
        """The plan with what is left of it: remaining counts, seconds left, transactions on a fork now."""
        slot = self.chain.slot
        with self.lock:
            described = copy.deepcopy(self.plan)
            if "count" in described.get("drop_sends", {}):
                described["drop_sends"]["remaining"] = self._drops_left
            if "fork" in described:
                described["fork"]["remaining"] = self._forks_left
            if "http" in described:
                if self._http_left is not None:
                    described["http"]["remaining"] = self._http_left
                if self._http_until is not None:
                    described["http"]["seconds_left"] = round(max(0.0, self._http_until - time.monotonic()), 3)
            if "congestion" in described:
                self._congestion_price(slot)
                spell = self._congestion
                described["congestion"]["active"] = spell is not None
                if spell is not None and spell[1] is not None:
                    described["congestion"]["remaining"] = spell[1]
                if spell is not None and spell[2] is not None:
                    described["congestion"]["seconds_left"] = round(max(0.0, spell[2] - time.monotonic()), 3)
            on_fork = sum(1 for _, vanish_at in self._forked.values() if slot < vanish_at)
        if on_fork:
            described.setdefault("fork", {})["on_fork"] = on_fork
        return described

    # -- replicas --------------------------------------------------------------------------------------

    def view(self, method: str, config: Any = None) -> ChainView:
        """The tip the node answering ``method`` sees; -32016 if ``minContextSlot`` is beyond it."""
        lag = 0
        with self.lock:
            spell = self.plan.get("lag")
            if spell is not None and (spell["methods"] is None or method in spell["methods"]):
                if self._lag_calls % spell["every"] == 0:  # one call in ``every``, starting with the first
                    lag = spell["slots"]
                self._lag_calls += 1
        view = self.chain.view(lag)
        check_min_context_slot(config_of(config), view.slot)
        return view

    # -- history ---------------------------------------------------------------------------------------

    def history_unavailable(self) -> bool:
        with self.lock:
            return self.plan.get("history", {}).get("mode") == "unavailable"

    def first_available_slot(self, at_slot: int) -> int:
        with self.lock:
            history = self.plan.get("history", {})
        return max(0, at_slot - history["slots"]) if history.get("mode") == "gap" else 0

    def confirmation(self, age: int) -> tuple[int | None, TransactionConfirmationStatus]:
        """(confirmations, status) of a transaction that landed ``age`` slots before the node's tip."""
        with self.lock:
            finality = self.plan.get("finality")
        if finality is None or age >= finality["finalized_after"]:
            return None, FINALIZED
        return age, PROCESSED if age < finality["confirmed_after"] else CONFIRMED

    def reached(self, age: int, commitment: Any) -> bool:
        """Whether a transaction ``age`` slots old is visible at ``commitment`` (getTransaction's default is
        finalized; it has no processed level)."""
        wanted = CONFIRMED if commitment in ("processed", "confirmed") else FINALIZED
        status = self.confirmation(age)[1]
        return status == FINALIZED or (status == CONFIRMED and wanted == CONFIRMED)

    # -- the fee market --------------------------------------------------------------------------------

    def _congestion_price(self, slot: int) -> int:
        """The compute-unit price a transaction needs to land now (0: none); ends a spell that is over. Under
        ``self.lock``."""
        spell = self._congestion
        if spell is None:
            return 0
        price, left, until, start_slot, start_time = spell
        now = time.monotonic()
        if until is not None and now >= until:  # the slot it ended at, from the slots' pace since it began
            elapsed = now - start_time
            self._end_congestion(start_slot + int((slot - start_slot) * (until - start_time) / elapsed))
            return 0
        if left == 0:
            self._end_congestion(slot)
            return 0
        return price

    def _end_congestion(self, slot: int) -> None:
        if self._congestion is not None:
            self._spells.append((self._congestion[3], slot, self._congestion[0]))
            self._congestion = None

    def recent_prioritization_fees(self, at_slot: int) -> list[tuple[int, int]]:
        """(slot, fee) for the last RECENT_FEE_SLOTS slots up to ``at_slot``, oldest first: the price a
        transaction needed to land in that slot (the spell's minimum while one lasted, 0 otherwise). Every
        transaction competes for the same blocks here, so the answer is the same for any accounts."""
        with self.lock:
            self._congestion_price(self.chain.slot)
            spells = list(self._spells)
            if self._congestion is not None:
                spells.append((self._congestion[3], self.chain.slot, self._congestion[0]))
        fees = []
        for slot in range(max(0, at_slot - RECENT_FEE_SLOTS + 1), at_slot + 1):
            fees.append((slot, max((price for first, last, price in spells if first <= slot <= last), default=0)))
        return fees

    # -- sends -----------------------------------------------------------------------------------------

    def intercepts_sends(self) -> bool:
        """Whether some send may not reach the chain (so preflight must be checked without landing)."""
        with self.lock:
            dropping = self._drops_left > 0 or self.plan.get("drop_sends", {}).get("all", False)
            congested = self._congestion is not None
            return dropping or congested or self._forks_left > 0 or self.chain.slot < self._forks_visible_until

    def intercept_send(self, signature: bytes, price: int = 0) -> bool:
        """True if this send never reaches the chain: a resend of one still on a fork (ignored), priced below a
        congestion spell's minimum (the leader never schedules it), dropped, or put on a fork now. A resend
        after its fork vanished, or after the spell, goes through: the cluster never executed it."""
        slot = self.chain.slot
        with self.lock:
            forked = self._forked.get(signature)
            if forked is not None and slot < forked[1]:
                return True
            if price < self._congestion_price(slot):
                if self._congestion[1] is not None:
                    self._congestion[1] -= 1
                return True
            if self.plan.get("drop_sends", {}).get("all", False):
                return True
            if self._drops_left > 0:
                self._drops_left -= 1
                return True
            if self._forks_left > 0 and forked is None:
                self._forks_left -= 1
                vanish_at = slot + self.plan["fork"]["vanish_after_slots"]
                self._forked[signature] = (slot, vanish_at)
                self._forks_visible_until = max(self._forks_visible_until, vanish_at)
                return True
            return False

    def fork_slot(self, signature: bytes, at_slot: int) -> int | None:
        """The slot a transaction was seen at on a fork, while the fork is still visible from ``at_slot``."""
        if not self._forked:
            return None
        slot = self.chain.slot
        with self.lock:
            forked = self._forked.get(signature)
        if forked is None or forked[0] > at_slot or slot >= forked[1]:
            return None
        return forked[0]

    # -- HTTP ------------------------------------------------------------------------------------------

    def http_reply(self, body: bytes) -> HttpReply | None:
        """The reply an http spell gives this request body, or None to answer it normally."""
        if self._http_reply is None:  # the common case, without parsing the body twice
            return None
        method = first_method(body)
        if method in CONTROL_METHODS:
            return None
        with self.lock:
            spell = self.plan.get("http")
            if spell is None or self._http_left == 0:
                return None
            if self._http_until is not None and time.monotonic() >= self._http_until:
                return None
            if spell["methods"] is not None and method not in spell["methods"]:
                return None
            if self._http_left is not None:
                self._http_left -= 1
            return self._http_reply
