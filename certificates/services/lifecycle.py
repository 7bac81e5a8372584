"""A bundle's life after issuance: transfer (whole or a split of its id range), claim, withdraw, expire.

Every step locks the bundle row (``FOR UPDATE``) and acts only on an ``active`` bundle, so two racing
requests on one bundle cannot both succeed: the second sees the first's result and is refused with a stable
409 code (``bundle_claimed``, ``bundle_withdrawn``, ``bundle_expired``, ``bundle_retired``). A step that
needs part of a range splits it: the bundle is retired (``split``) and children with ``parent`` set carry
the two parts, so an issuance's live bundles always cover its range exactly once. Each step queues the chain
operation that keeps the holder's certificate tokens equal to its active Wh (a burn, or a burn and a mint),
writes an audit line, and emits ``certificate_changed`` on commit.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import NamedTuple

from django.db import transaction
from django.utils import timezone

from certificates.models import CertificateBundle, ChainOperation
from certificates.triggers import operations_soon
from gridtoken import events
from gridtoken.exceptions import ApplicationError

audit = logging.getLogger("certificates.audit")
Status = CertificateBundle.Status
REFUSALS = {
    Status.CLAIMED: ("bundle_claimed", "this range is claimed: it can never be transferred or claimed again"),
    Status.WITHDRAWN: ("bundle_withdrawn", "this range was withdrawn by an operator"),
    Status.EXPIRED: ("bundle_expired", "this range has expired"),
    Status.SPLIT: ("bundle_retired", "this bundle was split or transferred; act on its children"),
}


class Outcome(NamedTuple):
    """What a transfer or claim answers: the part it moved, and what stays with the holder (None: nothing)."""

    moved: CertificateBundle
    remaining: CertificateBundle | None = None


def _locked_active(bundle_id: uuid.UUID, *, holder=None) -> CertificateBundle:
    bundle = CertificateBundle.objects.select_for_update(of=("self",)).select_related("issuance").filter(id=bundle_id)
    bundle = bundle.first()
    _check_active(bundle, holder, timezone.now())
    return bundle


def _check_active(bundle: CertificateBundle | None, holder, now: datetime) -> None:
    """Refuse (404/409 with a stable code) unless ``bundle`` exists, is ``holder``'s (when given) and active."""
    if bundle is None or (holder is not None and bundle.holder_id != holder.id):
        raise ApplicationError("bundle_not_found", "no such bundle among yours", status=404)
    if bundle.status != Status.ACTIVE:
        code, message = REFUSALS[bundle.status]
        raise ApplicationError(code, message, status=409)
    expires_at = bundle.issuance.expires_at
    if expires_at is not None and expires_at <= now:
        raise ApplicationError("bundle_expired", "this range has expired", status=409)


def _split(bundle: CertificateBundle, quantity: int | None, now: datetime) -> tuple[CertificateBundle, list]:
    """(the part of ``quantity`` Wh from the range's start, the remainder children), ``bundle`` marked split;
    the whole bundle itself when ``quantity`` is None or all of it (``[]`` remainder)."""
    if quantity is None or quantity == bundle.quantity_wh:
        return bundle, []
    if not 1 <= quantity < bundle.quantity_wh:
        raise ApplicationError("invalid_quantity", f"quantity_wh must be 1..{bundle.quantity_wh}",
                               field="quantity_wh")  # fmt: skip
    bundle.status, bundle.retired_at = Status.SPLIT, now  # the caller saves it
    common = {"issuance": bundle.issuance, "parent": bundle, "holder_id": bundle.holder_id,
              "holder_wallet": bundle.holder_wallet, "created_at": now}  # fmt: skip
    part = CertificateBundle(range_start=bundle.range_start, range_end=bundle.range_start + quantity - 1, **common)
    rest = CertificateBundle(range_start=bundle.range_start + quantity, range_end=bundle.range_end, **common)
    return part, [rest]


def _operation(bundle: CertificateBundle, *, kind: str, amount: int, burn_from: str = "", mint_to: str = "") -> None:
    now = timezone.now()
    ChainOperation.objects.create(
        kind=kind, issuance_id=bundle.issuance_id, bundle=bundle, amount_wh=amount, burn_from=burn_from,
        mint_to=mint_to, created_at=now, next_attempt_at=now,
    )  # fmt: skip
    transaction.on_commit(operations_soon)


def _audit(action: str, bundle: CertificateBundle, actor: str, **details) -> None:
    audit.info(
        f"certificate {action}",
        extra={"audit": f"certificate_{action}", "bundle_id": str(bundle.id), "issuance_id": str(bundle.issuance_id),
               "range": [bundle.range_start, bundle.range_end], "actor": actor, **details},
    )  # fmt: skip


def bundle_transfer(*, bundle_id: uuid.UUID, holder, recipient, quantity_wh: int | None = None) -> Outcome:
    """Give ``recipient`` the whole bundle, or its first ``quantity_wh`` Wh (the rest stays with the holder).
    Returns the recipient's new bundle (``parent`` = the bundle it came from) and the holder's remaining one."""
    if recipient.pk == holder.pk:  # it would only retire the bundle for an identical child and a no-op on chain
        raise ApplicationError("transfer_to_self", "the recipient is the bundle's holder", field="recipient")
    if not recipient.wallet_address:
        raise ApplicationError("recipient_without_wallet", "the recipient has no wallet for certificate tokens",
                               field="recipient")  # fmt: skip
    with transaction.atomic():
        bundle = _locked_active(bundle_id, holder=holder)
        now = timezone.now()
        part, rest = _split(bundle, quantity_wh, now)
        if part is bundle:  # a whole transfer retires the bundle too: the lineage shows who held it before
            bundle.status, bundle.retired_at = Status.SPLIT, now
            part = CertificateBundle(issuance_id=bundle.issuance_id, parent=bundle, range_start=bundle.range_start,
                                     range_end=bundle.range_end, created_at=now)  # fmt: skip
        bundle.save(update_fields=["status", "retired_at"])
        part.holder, part.holder_wallet = recipient, recipient.wallet_address
        CertificateBundle.objects.bulk_create([part, *rest])
        if bundle.holder_wallet != recipient.wallet_address:
            _operation(part, kind=ChainOperation.Kind.TRANSFER, amount=part.quantity_wh,
                       burn_from=bundle.holder_wallet, mint_to=recipient.wallet_address)  # fmt: skip
        _audit("transferred", part, holder.get_username(), parent=str(bundle.id), to=recipient.get_username(),
               from_wallet=bundle.holder_wallet, to_wallet=recipient.wallet_address)  # fmt: skip
        details = {"from_bundle_id": str(bundle.id), "quantity_wh": part.quantity_wh}
        events.emit(
            [events.certificate_changed(part, action="transferred", user_id=user_id, **details)
             for user_id in (recipient.id, bundle.holder_id)]
        )  # fmt: skip
        return Outcome(part, *rest)


class Claim(NamedTuple):
    """One claim of ``bundles_claim``: the whole bundle (``quantity_wh`` None) or its first ``quantity_wh`` Wh."""

    bundle_id: uuid.UUID
    holder: object
    beneficiary: str
    consumption_start: datetime
    consumption_end: datetime
    quantity_wh: int | None = None


def bundle_claim(
    *,
    bundle_id: uuid.UUID,
    holder,
    beneficiary: str,
    consumption_start: datetime,
    consumption_end: datetime,
    quantity_wh: int | None = None,
) -> Outcome:
    """Claim (cancel) the whole bundle or its first ``quantity_wh`` Wh for ``beneficiary``'s consumption in
    [consumption_start, consumption_end): final, and its certificate tokens are burnt."""
    claim = Claim(bundle_id, holder, beneficiary, consumption_start, consumption_end, quantity_wh)
    return bundles_claim([claim])[0]


def bundles_claim(claims: list[Claim]) -> list[Outcome]:
    """Claim many bundles at once, all or nothing, in a constant number of statements: one ``FOR UPDATE`` of
    every bundle in id order, the splits in memory, one insert of the new bundles, one update of the old, one
    insert of the burns. Claims on one bundle take its range in turn: the second claims from what the first
    left (as claiming that remainder would). The outcomes are in the claims' order; the first refusal (as
    ``bundle_claim`` answers it) undoes them all."""
    if not claims:
        return []
    for claim in claims:
        if not claim.beneficiary.strip():
            raise ApplicationError("validation_error", "name the beneficiary", field="beneficiary")
        if claim.consumption_end <= claim.consumption_start:
            raise ApplicationError("validation_error", "consumption_end must be after consumption_start",
                                   field="consumption_end")  # fmt: skip
    with transaction.atomic():
        ids = sorted({claim.bundle_id for claim in claims})
        locked = CertificateBundle.objects.select_for_update(of=("self",)).select_related("issuance").filter(id__in=ids)
        current = {bundle.id: bundle for bundle in locked.order_by("id")}
        updated, created, outcomes = {}, {}, []
        for claim in claims:
            now = timezone.now()  # each claim its own moment, as one at a time: they keep their order
            bundle = current.get(claim.bundle_id)
            _check_active(bundle, claim.holder, now)
            part, rest = _split(bundle, claim.quantity_wh, now)
            part.status, part.retired_at = Status.CLAIMED, now
            part.beneficiary, part.consumption_start, part.consumption_end = (
                claim.beneficiary, claim.consumption_start, claim.consumption_end
            )  # fmt: skip
            for changed in (bundle, part, *rest):
                (created if changed._state.adding else updated)[changed.id] = changed
            current[claim.bundle_id] = rest[0] if rest else part  # a later claim on it takes the rest (or is refused)
            outcomes.append(Outcome(part, *rest))
        CertificateBundle.objects.bulk_update(  # first: a part starts where its (now split) parent did
            updated.values(), ["status", "retired_at", "beneficiary", "consumption_start", "consumption_end"]
        )
        CertificateBundle.objects.bulk_create(created.values())
        ChainOperation.objects.bulk_create(
            ChainOperation(kind=ChainOperation.Kind.BURN, issuance_id=part.issuance_id, bundle=part,
                           amount_wh=part.quantity_wh, burn_from=part.holder_wallet, created_at=part.retired_at,
                           next_attempt_at=part.retired_at)
            for part, *_ in outcomes
        )  # fmt: skip
        transaction.on_commit(operations_soon)
        for claim, (part, *_) in zip(claims, outcomes, strict=True):
            _audit("claimed", part, claim.holder.get_username(), beneficiary=claim.beneficiary,
                   consumption=[claim.consumption_start.isoformat(), claim.consumption_end.isoformat()])  # fmt: skip
        events.emit(
            [events.certificate_changed(part, action="claimed", user_id=part.holder_id, beneficiary=claim.beneficiary)
             for claim, (part, *_) in zip(claims, outcomes, strict=True)]
        )  # fmt: skip
        return outcomes


def bundle_withdraw(*, bundle_id: uuid.UUID, actor: str, reason: str) -> CertificateBundle:
    """An operator revokes an active bundle (a meter found faulty, a registry correction): final, burnt."""
    if not reason.strip():
        raise ApplicationError("validation_error", "give the reason for the withdrawal", field="reason")
    with transaction.atomic():
        bundle = _locked_active(bundle_id)
        bundle.status, bundle.retired_at, bundle.reason = Status.WITHDRAWN, timezone.now(), reason
        bundle.save(update_fields=["status", "retired_at", "reason"])
        _operation(bundle, kind=ChainOperation.Kind.BURN, amount=bundle.quantity_wh, burn_from=bundle.holder_wallet)
        _audit("withdrawn", bundle, actor, reason=reason)
        events.emit([events.certificate_changed(bundle, action="withdrawn", user_id=bundle.holder_id, reason=reason)])
        return bundle


def bundles_expire(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Expire active bundles whose issuance is past its expiry (burnt like a withdrawal); the number expired."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            CertificateBundle.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(status=Status.ACTIVE, issuance__expires_at__lte=now)
            .order_by("issuance__expires_at")[:limit]
        )
        for bundle in due:
            bundle.status, bundle.retired_at = Status.EXPIRED, now
            bundle.save(update_fields=["status", "retired_at"])
            _operation(bundle, kind=ChainOperation.Kind.BURN, amount=bundle.quantity_wh, burn_from=bundle.holder_wallet)
            _audit("expired", bundle, "system")
        events.emit([events.certificate_changed(b, action="expired", user_id=b.holder_id) for b in due])
    return len(due)
