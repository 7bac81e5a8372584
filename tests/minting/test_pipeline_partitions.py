"""The pipeline over readings in two monthly partitions (docs/PARTITIONS.md): settlement windows either side
of a month boundary, one mint batch over both months and certificates for the hours either side, including
late readings that first landed in the default partition."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from certificates.models import Issuance
from certificates.services.issuance import certificates_issue_due
from meters.models import MeterReading
from meters.partitions import DEFAULT_PARTITION, month_start, partition_name, partitions_ensure
from minting.models import MintBatch
from minting.services.automatic import readings_mint_due
from tests.certificates.helpers import HOUR0, add_readings, close_hour, make_device
from tests.meters.test_partitions import partitions_restored_fixture  # noqa: F401 (the partitions_restored fixture)
from tests.minting.pipeline_harness import make_meter, set_tokenization, use_chain
from tests.minting.test_pipeline_bases import assert_balance, interval, submit

pytestmark = pytest.mark.django_db(transaction=True)
Status = MeterReading.Status


@pytest.fixture(autouse=True)
def restored(partitions_restored):
    """Each test's partitions are dropped after it."""


@pytest.fixture
def chain(settings, localnet, tmp_path):
    return use_chain(settings, localnet, tmp_path)


def homes(**filters) -> set[str]:
    ids = list(MeterReading.objects.filter(**filters).values_list("id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tableoid::regclass::text FROM meters_meterreading WHERE id = ANY(%s)", [ids])
        return {name for (name,) in cursor.fetchall()}


@pytest.fixture
def boundary():
    """The start of this month: readings before it are last month's, late ones at first in the default."""
    return month_start(timezone.now())


def test_one_mint_batch_mints_readings_of_two_months_one_of_them_late(chain, settings, boundary):
    set_tokenization(settings, reading_max_age_days=3650)
    meter = make_meter()
    submit(meter, [interval(boundary - timedelta(minutes=30), "1.5"), interval(boundary - timedelta(minutes=15), "2")])
    assert homes(meter=meter) == {DEFAULT_PARTITION}  # last month had no partition yet
    partitions_ensure()
    submit(meter, [interval(boundary, "0.25"), interval(boundary + timedelta(minutes=15), "1")])

    readings_mint_due()

    assert homes(meter=meter) == {partition_name(boundary - timedelta(days=1)), partition_name(boundary)}
    assert set(MeterReading.objects.values_list("status", flat=True)) == {Status.MINTED}
    assert MintBatch.objects.count() == 1
    assert_balance(chain, meter, "4.75")


def test_settlement_windows_either_side_of_a_month_boundary_mint_once_each(chain, settings, boundary):
    set_tokenization(
        settings, mint_basis="window", window_grace_secs=0, duplicate_window_secs=0, reading_max_age_days=3650
    )
    partitions_ensure(through=boundary)
    meter = make_meter()
    before, after = boundary - timedelta(minutes=15), boundary
    late = [interval(before + timedelta(minutes=m), kwh) for m, kwh in ((0, "1"), (5, "-0.25"))]
    submit(meter, late)
    partitions_ensure()  # last month's window readings leave the default partition before settlement
    submit(meter, [interval(after, "0.5"), interval(after + timedelta(minutes=10), "0.5")])
    submit(meter, [interval(after + timedelta(minutes=30), "2")])  # completes both windows in event time

    readings_mint_due()
    readings_mint_due()

    windows = {r.window_start: r for r in MeterReading.objects.filter(source="window")}
    assert {windows[before].status, windows[after].status} == {Status.MINTED}
    assert (windows[before].mintable_kwh, windows[after].mintable_kwh) == (Decimal("0.75"), Decimal("1"))
    assert homes(source="window") == {partition_name(before), partition_name(after)}
    assert_balance(chain, meter, "1.75")


def test_certificates_are_issued_for_the_hours_either_side_of_a_month_boundary():
    device = make_device()
    add_readings(device, -1, ["0.25", "0.25", "0.25", "0.25"])  # the last hour of February (HOUR0: 1 March)
    add_readings(device, 0, ["0.5", "0.5"])
    close_hour(device, 0)
    partitions_ensure()

    result = certificates_issue_due()

    assert homes(meter=device.meter) == {partition_name(HOUR0 - timedelta(hours=1)), partition_name(HOUR0)}
    assert (result.issued, result.wh) == (2, 2000)
    assert sorted(Issuance.objects.values_list("interval_start", "quantity_wh")) == [
        (HOUR0 - timedelta(hours=1), 1000),
        (HOUR0, 1000),
    ]
