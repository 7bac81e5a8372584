"""The mint batches' rollup (counts by status, the created-to-settled histogram /metrics serves) equals a
recomputation from the batch rows: after random inserts, settlements, hand edits and removals, folded or not,
and after a fold killed half-way (its client SIGKILLed, its backend terminated) while it waits inside its
statement.

The recomputation is written here with the ORM, apart from the triggers' SQL, so the two can disagree.
"""

import random
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone

from meters.services.rollups import rollups_fold, rollups_fold_all
from minting.models import BATCH_DURATION_BUCKETS, BatchDelta, BatchRollup, MintBatch
from minting.selectors import batch_totals
from tests.meters.test_rollups import fold_killed_mid_statement

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]
FOLD = "minting_batch_rollup_fold"
S = MintBatch.Status
SETTLED = (S.CONFIRMED, S.FAILED, S.EXPIRED)
# Durations on and either side of bucket bounds, and past the last one.
DURATIONS = (0.0, 0.099999, 0.1, 0.100001, 0.8, 1.0, 2.5, 3.0, 59.999999, 70.0, 300.0, 300.000001, 4000.0)


def recomputed() -> dict[str, dict]:
    """What ``batch_totals`` should answer, from the batch rows themselves."""
    duration = ExpressionWrapper(F("settled_at") - F("created_at"), output_field=DurationField())
    settled = Q(settled_at__isnull=False)
    aggregates = {
        f"duration_le_{i}": Count("pk", filter=settled & Q(duration__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(BATCH_DURATION_BUCKETS)
    }
    rows = (
        MintBatch.objects.annotate(duration=duration)
        .values("status")
        .annotate(batches=Count("pk"), duration_count=Count("pk", filter=settled), total=Sum("duration"), **aggregates)
        .order_by()
    )
    empty = {"batches": 0, **dict.fromkeys(aggregates, 0), "duration_count": 0, "duration_seconds": Decimal(0)}
    expected = {status: dict(empty) for status in S.values}
    for row in rows:
        status, total = row.pop("status"), row.pop("total") or timedelta(0)
        seconds = Decimal(total.days * 86_400 + total.seconds) + Decimal(total.microseconds) / 1_000_000
        expected[status] = {**empty, **row, "duration_seconds": seconds}
    return expected


def assert_exact() -> None:
    assert batch_totals() == recomputed()


def new_batches(count: int, rng: random.Random) -> list[MintBatch]:
    now = timezone.now()
    return MintBatch.objects.bulk_create(
        MintBatch(
            signature=uuid.uuid4().hex,
            raw_transaction=b"tx",
            last_valid_block_height=1,
            mint_address="Mint111",
            created_at=now - timedelta(seconds=rng.randrange(86_400)),
        )
        for _ in range(count)
    )


def settle(ids: list, status: str, rng: random.Random) -> None:
    """As settlement does: one conditional UPDATE of the signed ones, each settled after a drawn duration."""
    durations = [rng.choice(DURATIONS) for _ in ids]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE minting_mintbatch b SET status = %s, settled_at = b.created_at + d.secs * interval '1 second'"
            " FROM unnest(%s::uuid[], %s::float8[]) AS d(id, secs) WHERE b.id = d.id AND b.status = 'signed'",
            [status, ids, durations],
        )


def test_batch_rollup_equals_a_recomputation_after_random_changes_folded_or_not():
    rng = random.Random(21)
    assert_exact()
    for step in range(12):
        batches = new_batches(rng.randrange(1, 40), rng)
        ids = [b.id for b in batches]
        rng.shuffle(ids)
        third = len(ids) // 3
        settle(ids[:third], rng.choice(SETTLED), rng)
        settle(ids[third : 2 * third], rng.choice(SETTLED), rng)
        # Settling twice: the second UPDATE finds them settled and changes nothing.
        settle(ids[:third], S.CONFIRMED, rng)
        # Columns the rollup does not read: no delta.
        waiting = BatchDelta.objects.count()
        MintBatch.objects.filter(id__in=ids).update(send_attempts=F("send_attempts") + 1, sent_at=timezone.now())
        assert BatchDelta.objects.count() == waiting
        if step % 3 == 1:  # hand edits: a settled batch's times moved, another put back in flight, one removed
            edited = MintBatch.objects.filter(settled_at__isnull=False).order_by("?").first()
            MintBatch.objects.filter(id=edited.id).update(created_at=F("created_at") - timedelta(seconds=0.3))
            MintBatch.objects.filter(id=ids[0]).update(status=S.SIGNED, settled_at=None)
            MintBatch.objects.filter(id=ids[-1]).delete()
        assert_exact()
        if step % 2:
            assert rollups_fold(limit=rng.randrange(1, 10), fold=FOLD) >= 0
            assert_exact()
    rollups_fold_all()

    assert BatchDelta.objects.count() == 0
    assert_exact()
    assert set(BatchRollup.objects.values_list("status", flat=True)) <= set(S.values)


@pytest.mark.parametrize("kill", ["sigkill_client", "terminate_backend"])
def test_a_fold_killed_inside_its_statement_loses_and_double_counts_nothing(kill):
    """1. Batches folded once, so the rollup rows exist; more changes leave deltas waiting.
    2. Another session holds the in-flight row: ``manage.py rollups_fold`` stops inside the batch fold's
       statement, its deltas already deleted there, and is killed (the client, or its backend).
    3. Every delta still waits and the totals are exact; a fold then empties the log, still exact."""
    rng = random.Random(kill)
    ids = [b.id for b in new_batches(30, rng)]
    settle(ids[:20], S.CONFIRMED, rng)
    rollups_fold_all()
    settle(ids[20:], S.EXPIRED, rng)
    settle(ids[:5], S.FAILED, rng)  # already settled: nothing
    new_batches(7, rng)
    waiting = BatchDelta.objects.count()
    assert waiting > 0

    fold_killed_mid_statement(
        hold="SELECT 1 FROM minting_batchrollup WHERE status = 'signed' FOR UPDATE", kill=kill, function=FOLD
    )

    assert BatchDelta.objects.count() == waiting
    assert_exact()
    rollups_fold_all()
    assert BatchDelta.objects.count() == 0
    assert_exact()
