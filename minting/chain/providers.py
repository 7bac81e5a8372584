"""Several RPC providers behind the one ``call`` interface the ChainClient uses (docs/CHAIN.md, "Several providers").

- Reads go to one provider: a provider due for a probe first, then the healthy ones by smooth weighted
  round robin (nginx's), the standbys (weight 0) last; on a provider's failure the next one is asked in the same
  call. An answer counts only when it proves it has seen the slot the caller needs (``minContextSlot`` in the
  params, or ``min_context_slot``): one that cannot is not believed and the next provider is asked.
- Sends go to every send-capable provider that is in, at once: the same signed bytes everywhere, so the same
  signature, and the chain executes it once however many providers forward it.
- A provider that fails (transport, HTTP, a bad answer), rate limits (429) or lags more than ``max_lag_slots``
  behind the best slot any provider showed is taken out for ``probe_secs``, doubling up to ``probe_max_secs``;
  then the next real request is its probe, and an answer brings it back. A lagging answer is not believed, and
  a lagging provider's probe is measured against the next provider's answer to the same call (``_answered``).
  No request is added in the healthy case: lag is read from the context slots the answers carry anyway.
- When every provider is out, the one due first is still asked (a single provider behaves exactly as before);
  when all fail, the call raises ``rpc_providers_out`` (several providers) or the provider's own error (one).

Health is process-local: each worker keeps its own view. ``on_report`` receives the pool on every change of a
provider's state and at most every ``REPORT_EVERY_SECS`` otherwise, ``on_error`` every provider error (the
service layer publishes both for ``/metrics``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from config.providers import RpcEndpoint
from minting.chain.errors import ChainError, HistoryUnavailable, NodeBehind, RpcBadResponse, RpcTimeout, RpcUnavailable
from minting.chain.rpc import Rpc

PROVIDERS_OUT = "rpc_providers_out"
LAGGING = "rpc_lagging"
BELIEVED, UNPROVEN = "believed", "unproven"
REPORT_EVERY_SECS = 10.0
SEND_METHODS = frozenset({"sendTransaction"})


def is_provider_fault(error: ChainError) -> bool:
    """A failure of the provider (its transport, HTTP status, answer or tip), not of what was asked."""
    return isinstance(error, RpcUnavailable | RpcTimeout | RpcBadResponse | NodeBehind | HistoryUnavailable)


class Provider:
    """One provider's connection pool and health (read and changed under the pool's lock)."""

    def __init__(self, number: int, endpoint: RpcEndpoint, rpc: Rpc) -> None:
        self.number, self.endpoint, self.rpc = number, endpoint, rpc
        self.where = rpc.where
        self.failures = 0  # consecutive; 0 = in
        self.out_until = 0.0
        self.code = ""  # why it is out
        self.slot = 0  # the context slot of its last answer
        self.lag = 0
        self.errors: Counter[str] = Counter()
        self.current_weight = 0  # smooth weighted round robin

    @property
    def name(self) -> str:
        return f"{self.number} {self.where}"


@dataclass(frozen=True)
class ProviderState:
    number: int
    where: str
    role: str
    weight: int
    state: str  # in, out, probing (out, and due for a probe)
    code: str
    slot: int
    lag_slots: int
    out_for_secs: float
    errors: dict[str, int]


class ProviderPool:
    def __init__(
        self,
        endpoints: Sequence[RpcEndpoint],
        *,
        timeout: float = 10.0,
        max_connections: int = 16,
        max_lag_slots: int = 150,
        probe_secs: float = 2.0,
        probe_max_secs: float = 60.0,
        on_report: Callable[[ProviderPool], None] | None = None,
        on_error: Callable[[Provider, ChainError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("a provider pool needs at least one endpoint")
        self.providers = [
            Provider(number, endpoint, Rpc(endpoint.url, timeout=timeout, max_connections=max_connections))
            for number, endpoint in enumerate(endpoints, start=1)
        ]
        self.max_lag_slots, self.probe_secs, self.probe_max_secs = max_lag_slots, probe_secs, probe_max_secs
        self.on_report, self.on_error, self.clock = on_report, on_error, clock
        self.top_slot = 0  # the highest context slot any provider showed
        self._lock = threading.Lock()
        self._local = threading.local()
        self._reported_at = -REPORT_EVERY_SECS
        self._senders = ThreadPoolExecutor(max_workers=4 * len(self.providers)) if len(self.providers) > 1 else None

    # What messages and records name: the first provider (the only one, usually).
    @property
    def url(self) -> str:
        return self.providers[0].rpc.url

    @property
    def where(self) -> str:
        return ", ".join(provider.where for provider in self.providers)

    def close(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=False, cancel_futures=True)
        for provider in self.providers:
            provider.rpc.close()

    # --- reads ---------------------------------------------------------------------------------------

    def call(
        self, method: str, params: list | None = None, *, program_ids: Sequence[str] | None = None,
        min_context_slot: int = 0,
    ) -> Any:  # fmt: skip
        """The ``result`` of ``method`` from one provider that answers and has seen ``min_context_slot`` (or the
        ``minContextSlot`` of the params' config); a send goes to every provider in (``broadcast``)."""
        if method in SEND_METHODS:
            (outcome,) = self._broadcast(lambda rpc: [_result_or_error(rpc.call, method, params, program_ids)])
            if isinstance(outcome, ChainError):
                raise outcome
            return outcome
        minimum = max(min_context_slot, _min_context_slot(params))
        pinned = getattr(self._local, "pinned", None)
        candidates = [pinned] if isinstance(pinned, Provider) else self._read_order()
        failures: list[tuple[Provider, ChainError]] = []
        doubted: list[tuple[Provider, int]] = []
        for provider in candidates:
            try:
                result = provider.rpc.call(method, params, program_ids=program_ids)
            except ChainError as error:
                if not is_provider_fault(error):
                    self._answered(provider, None)
                    raise  # about the request itself: every provider would say the same
                if isinstance(error, NodeBehind):
                    self._answered(provider, _error_context_slot(error))
                elif not isinstance(error, HistoryUnavailable):  # some providers keep no history: not a fault
                    self._failed(provider, error)
                failures.append((provider, error))
                continue
            slot = _answer_slot(result)
            believed = self._answered(provider, slot)
            if believed != BELIEVED:
                behind = f"{method} from {provider.where} answered at slot {slot}, lagging: not believed"
                failures.append((provider, NodeBehind(behind)))
                if believed == UNPROVEN:
                    doubted.append((provider, slot))
                continue
            if slot is not None:  # a fresh slot: the lagging providers asked before are measured against it
                for behind, its_slot in doubted:
                    self._answered(behind, its_slot, next_to_fresh=True)
            if slot is not None and slot < minimum:
                behind = f"{method} from {provider.where} answered at slot {slot}, behind slot {minimum}"
                failures.append((provider, NodeBehind(behind)))
                continue
            if pinned == "choose":
                self._local.pinned = provider
            return result
        if isinstance(pinned, Provider):
            raise failures[0][1]  # the block's provider, or none: no other may answer for it
        raise self._all_failed(method, failures)

    def _read_batch(self, method: str, calls: Sequence[tuple[list, Sequence[str] | None]]) -> list[Any]:
        failures: list[tuple[Provider, ChainError]] = []
        for provider in self._read_order():
            try:
                answers = provider.rpc.call_batch(method, calls)
            except ChainError as error:
                if not is_provider_fault(error):
                    self._answered(provider, None)
                    raise
                if not isinstance(error, NodeBehind | HistoryUnavailable):
                    self._failed(provider, error)
                failures.append((provider, error))
                continue
            self._answered(provider, None)
            return answers
        raise self._all_failed(method, failures)

    @contextlib.contextmanager
    def one_provider(self) -> Iterator[None]:
        """Calls in this block (this thread) go to the provider that answers the first one: an answer and the
        proof that goes with it (a null status and the ledger start it is measured against) come from one node."""
        self._local.pinned = "choose"
        try:
            yield
        finally:
            self._local.pinned = None

    def _read_order(self) -> list[Provider]:
        now = self.clock()
        with self._lock:
            readers = [p for p in self.providers if p.endpoint.reads]
            due = [p for p in readers if p.failures and p.out_until <= now]
            healthy = [p for p in readers if not p.failures]
            weighted = [p for p in healthy if p.endpoint.weight]
            order = []
            if weighted:  # smooth weighted round robin: the first pick rotates in proportion to the weights
                total = sum(p.endpoint.weight for p in weighted)
                for p in weighted:
                    p.current_weight += p.endpoint.weight
                first = max(weighted, key=lambda p: p.current_weight)
                first.current_weight -= total
                order = [first, *(p for p in weighted if p is not first)]
            order = [*due, *order, *(p for p in healthy if not p.endpoint.weight)]
            if not order:  # every reader is out and none is due yet: the one due first is asked anyway
                order = sorted(readers, key=lambda p: p.out_until)[:1]
            return order

    # --- sends ---------------------------------------------------------------------------------------

    def call_batch(self, method: str, calls: Sequence[tuple[list, Sequence[str] | None]]) -> list[Any]:
        """One JSON-RPC batch of ``method`` calls; per call its result or its ChainError. A send goes to every
        send-capable provider in, and per call the best outcome counts: a result from any provider, else an
        error about the transaction, else a provider's error. A read goes to one provider, the next one asked
        when the batch as a whole fails (its answers carry no context slot: nothing may be decided from them
        that needs one)."""
        if method not in SEND_METHODS:
            return self._read_batch(method, calls)

        def send(rpc: Rpc) -> list[Any]:
            try:
                return rpc.call_batch(method, calls)
            except ChainError as error:
                return [error] * len(calls)

        return self._broadcast(send)

    def _broadcast(self, send: Callable[[Rpc], list[Any]]) -> list[Any]:
        now = self.clock()
        with self._lock:
            senders = [p for p in self.providers if p.endpoint.sends]
            targets = [p for p in senders if not p.failures or p.out_until <= now]
            targets = targets or sorted(senders, key=lambda p: p.out_until)[:1]
        if len(targets) == 1 or self._senders is None:
            answers = [send(targets[0].rpc)]
        else:
            answers = list(self._senders.map(lambda provider: send(provider.rpc), targets))
        for provider, outcomes in zip(targets, answers, strict=True):
            errors = [o for o in outcomes if isinstance(o, ChainError) and is_provider_fault(o)]
            if errors and len(errors) == len(outcomes):
                self._failed(provider, errors[0])
            elif provider.failures:  # it took the send: back in (a lagging one only by a read showing its slot)
                self._answered(provider, None)
        merged = [_best(column) for column in zip(*answers, strict=True)]
        several = len(self.providers) > 1
        return [
            self._all_failed("sendTransaction", [(p, o) for p in targets])
            if several and isinstance(o, ChainError) and is_provider_fault(o) and not isinstance(o, NodeBehind)
            else o
            for o in merged
        ]

    # --- health --------------------------------------------------------------------------------------

    def _answered(self, provider: Provider, slot: int | None, *, next_to_fresh: bool = False) -> str:
        """An answer: the provider is in again, unless it showed a slot too far behind the best one seen. Says
        whether the answer is believed (``BELIEVED``); with several providers a lagging one's is not (one
        provider's answers are, as before).

        With several providers, a provider out for lagging is measured only against a slot another provider
        shows in the same call (``next_to_fresh``): the best slot seen so far may be stale (every other one out,
        or the pool idle), and a lagging view catching up with a stale slot proves nothing (its blockhashes are
        as old as ever). Until then its answer is ``UNPROVEN``: not believed, the provider stays out for another
        back-off, and no error is counted."""
        several = len(self.providers) > 1
        changed = lagging = unproven = False
        with self._lock:
            if slot is not None:
                provider.slot = slot
                unproven = several and provider.code == LAGGING and bool(provider.failures) and not next_to_fresh
            if unproven:
                self._take_out(provider, LAGGING)
            else:
                if slot is not None:
                    self.top_slot = max(self.top_slot, slot)
                    provider.lag = self.top_slot - slot
                lagging = slot is not None and provider.lag > self.max_lag_slots
                if lagging:
                    changed = self._take_out(provider, LAGGING)
                    provider.errors[LAGGING] += 1
                elif provider.failures and (slot is not None or provider.code != LAGGING):  # lag ends by a slot
                    provider.failures, provider.out_until, provider.code = 0, 0.0, ""
                    changed = True
        if lagging and self.on_error is not None:
            self.on_error(provider, NodeBehind(f"{provider.lag} slots behind", code=LAGGING))
        self._report(changed)
        return UNPROVEN if unproven else LAGGING if lagging and several else BELIEVED

    def _failed(self, provider: Provider, error: ChainError) -> None:
        with self._lock:
            changed = self._take_out(provider, error.code)
            provider.errors[error.code] += 1
        if self.on_error is not None:
            self.on_error(provider, error)
        self._report(changed)

    def _take_out(self, provider: Provider, code: str) -> bool:
        """Out for the next back-off (a probe that fails doubles it); True when it was in."""
        was_in = not provider.failures
        now = self.clock()
        if was_in or provider.out_until <= now:  # concurrent failures of one spell count once
            provider.failures += 1
            backoff = min(self.probe_secs * 2 ** (provider.failures - 1), self.probe_max_secs)
            provider.out_until = now + backoff
        provider.code = code
        return was_in

    def _report(self, changed: bool) -> None:
        if self.on_report is None:
            return
        now = self.clock()
        if changed or now - self._reported_at >= REPORT_EVERY_SECS:
            self._reported_at = now
            self.on_report(self)

    def _all_failed(self, method: str, failures: list[tuple[Provider, ChainError]]) -> ChainError:
        if len(self.providers) == 1:
            return failures[0][1]
        with self._lock:
            every_one_out = all(provider.failures for provider in self.providers)
        behind = next((e for _, e in failures if isinstance(e, NodeBehind | HistoryUnavailable)), None)
        if behind is not None and not every_one_out:
            return behind  # "not yet": the caller's freshness rule decides, as with one provider
        named = "; ".join(f"{p.name}: {e.code}" for p, e in failures)
        return RpcUnavailable(
            f"every RPC provider failed {method} ({named}): minting pauses until one answers", code=PROVIDERS_OUT
        )

    def states(self) -> list[ProviderState]:
        now = self.clock()
        with self._lock:
            return [
                ProviderState(
                    number=p.number,
                    where=p.where,
                    role=p.endpoint.role,
                    weight=p.endpoint.weight,
                    state="in" if not p.failures else "probing" if p.out_until <= now else "out",
                    code=p.code,
                    slot=p.slot,
                    lag_slots=p.lag,
                    out_for_secs=max(0.0, p.out_until - now),
                    errors=dict(p.errors),
                )
                for p in self.providers
            ]


def _result_or_error(call: Callable, method: str, params: list | None, program_ids: Sequence[str] | None) -> Any:
    try:
        return call(method, params, program_ids=program_ids)
    except ChainError as error:
        return error


def _best(outcomes: Sequence[Any]) -> Any:
    """One send's outcome over every provider: accepted anywhere wins, then a refusal of the transaction."""
    for outcome in outcomes:
        if not isinstance(outcome, ChainError) or outcome.err == "AlreadyProcessed":
            return outcome
    return next((o for o in outcomes if not is_provider_fault(o)), outcomes[0])


def _min_context_slot(params: list | None) -> int:
    config = params[-1] if params else None
    if isinstance(config, dict):
        minimum = config.get("minContextSlot")
        if isinstance(minimum, int):
            return minimum
    return 0


def _answer_slot(result: Any) -> int | None:
    """The slot an answer was read at: its context, or getEpochInfo's absolute slot."""
    if isinstance(result, dict):
        context = result.get("context")
        slot = context.get("slot") if isinstance(context, dict) else result.get("absoluteSlot")
        if isinstance(slot, int):
            return slot
    return None


def _error_context_slot(error: ChainError) -> int | None:
    data = error.err.get("data") if isinstance(error.err, dict) else None
    slot = data.get("contextSlot") if isinstance(data, dict) else None
    return slot if isinstance(slot, int) else None
