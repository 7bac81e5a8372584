"""Issuance: one bundle per (device, interval) of verified export energy, in whole Wh, exactly once."""

import hashlib
import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction

from certificates.models import CertificateBundle, ChainOperation, Issuance, ProductionDevice
from certificates.services.issuance import (
    certificates_issue_due,
    chain_hash,
    issuance_decide_held,
    issuance_id,
    readings_hash,
)
from gridtoken.exceptions import ApplicationError
from meters.models import MeterReading
from tests.certificates.helpers import HOUR0, add_readings, close_hour, make_device
from tests.conftest import concurrently

pytestmark = pytest.mark.django_db


def test_a_complete_settled_hour_becomes_one_bundle_of_whole_wh_with_a_derived_id():
    device = make_device()
    add_readings(device, 0, ["0.25", "0.25", "0.25", "0.2505"])
    close_hour(device, 0)

    result = certificates_issue_due()
    assert (result.issued, result.wh) == (1, 1000)
    issuance = Issuance.objects.get()
    assert issuance.id == issuance_id(device.id, HOUR0, 3600)
    assert (issuance.interval_start, issuance.interval_end) == (HOUR0, HOUR0 + timedelta(hours=1))
    assert issuance.energy_kwh == Decimal("1.0005")
    assert (issuance.quantity_wh, issuance.bundle_id_range_start, issuance.bundle_id_range_end) == (1000, 1, 1000)
    assert issuance.carry_out_wh == Decimal("0.5")
    assert issuance.device_attributes["technology"] == "solar_pv"
    assert issuance.device_attributes["capacity_kw"] == "10.000"
    assert issuance.wallet_address == device.meter.wallet_address
    bundle = CertificateBundle.objects.get()
    assert (bundle.range_start, bundle.range_end, bundle.status) == (1, 1000, "active")
    assert bundle.holder_id == device.meter.owner_id and bundle.holder_wallet == device.meter.wallet_address
    op = ChainOperation.objects.get()
    assert (op.kind, op.amount_wh, op.mint_to, op.status) == ("issue", 1000, device.meter.wallet_address, "pending")

    assert certificates_issue_due().issued == 0  # a second run finds nothing new
    assert Issuance.objects.count() == 1 and ChainOperation.objects.count() == 1


def test_the_hash_chains_each_issuance_to_its_readings_and_to_the_previous_issuance():
    device = make_device()
    for hour in range(3):
        add_readings(device, hour, ["1.5", "0.5"])
    close_hour(device, 2)
    certificates_issue_due()
    first, second, third = Issuance.objects.order_by("interval_start")
    assert first.previous_hash == "" and second.previous_hash == first.hash and third.previous_hash == second.hash
    for issuance in (first, second, third):
        rows = (
            MeterReading.objects.filter(
                meter=device.meter,
                reading_timestamp__gte=issuance.interval_start,
                reading_timestamp__lt=issuance.interval_end,
            )
            .order_by("reading_timestamp", "id")
            .values_list("id", "reading_timestamp", "status", "kwh_amount", "generated_kwh")
        )
        assert issuance.readings_hash == readings_hash(rows) and issuance.reading_count == 2
        assert issuance.hash == chain_hash(issuance)
    # Tampering with a reading's energy breaks the chain's link to it.
    altered = [(*row[:3], row[3], Decimal("9")) if i == 0 else row for i, row in enumerate(rows)]
    assert readings_hash(altered) != third.readings_hash
    assert len(third.hash) == 64 and hashlib.sha256(b"").hexdigest() != third.hash
    device.refresh_from_db()
    assert device.last_hash == third.hash


@pytest.mark.parametrize("blocking", ["pending", "minting", "held", "awaiting_window"])
def test_an_hour_with_an_unsettled_reading_waits_and_so_do_the_later_hours(blocking):
    device = make_device()
    add_readings(device, 0, ["1"])
    [waiting] = add_readings(device, 0, ["0.5"], minute=30, status=blocking)
    add_readings(device, 1, ["2"])
    close_hour(device, 1)
    assert certificates_issue_due().issued == 0
    assert not Issuance.objects.exists()

    MeterReading.objects.filter(id=waiting.id).update(status="minted", mintable_kwh=Decimal("0.5"))
    assert certificates_issue_due().issued == 2
    assert [i.quantity_wh for i in Issuance.objects.order_by("interval_start")] == [1500, 2000]


def test_an_hour_not_yet_complete_in_event_time_waits_for_a_reading_past_its_end_and_the_grace():
    device = make_device()
    add_readings(device, 0, ["1"])
    add_readings(device, 1, ["0"], status="recorded", minute=2)  # after the end, within the 5-minute grace
    assert certificates_issue_due().issued == 0
    add_readings(device, 1, ["0"], status="recorded", minute=6)
    assert certificates_issue_due().issued == 1


def test_rejected_readings_and_derived_window_rows_are_not_certified():
    device = make_device()
    add_readings(device, 0, ["1"])
    add_readings(device, 0, ["5"], minute=15, status="rejected")
    MeterReading.objects.create(
        user_id=device.meter.owner_id, meter=device.meter, wallet_address=device.meter.wallet_address,
        kwh_amount=Decimal("1"), generated_kwh=Decimal("1"), mintable_kwh=Decimal("1"), status="minted",
        source="window", window_start=HOUR0, reading_timestamp=HOUR0,
    )  # fmt: skip
    close_hour(device, 0)
    certificates_issue_due()
    assert Issuance.objects.get().quantity_wh == 1000


def test_the_sub_wh_remainder_carries_exactly_and_is_never_rounded_up():
    device = make_device()
    energies = ["0.0004", "0.0007", "0.000333333", "0.000000001", "1.234567891"]
    for hour, kwh in enumerate(energies):
        add_readings(device, hour, [kwh])
    close_hour(device, len(energies) - 1)
    certificates_issue_due()
    device.refresh_from_db()
    issued = list(Issuance.objects.order_by("interval_start"))
    total_wh = sum(Decimal(kwh) for kwh in energies) * 1000
    assert sum(i.quantity_wh for i in issued) + device.carry_wh == total_wh  # nothing lost
    assert 0 <= device.carry_wh < 1
    # 0.4 Wh: nothing yet; 0.4 + 0.7 = 1.1 -> 1 Wh (carry 0.1); + 0.333333 -> 0.433333; + 0.000001; + 1234.567891
    assert [i.quantity_wh for i in issued] == [1, 1235]
    assert issued[0].carry_out_wh == Decimal("0.1")
    assert device.carry_wh == Decimal("0.001225")
    assert [(i.bundle_id_range_start, i.bundle_id_range_end) for i in issued] == [(1, 1), (2, 1236)]


def test_energy_above_capacity_times_interval_times_margin_is_held_until_an_operator_decides():
    device = make_device(capacity_kw="1")  # 1 kW x 1 h x 1.1 = 1.1 kWh
    add_readings(device, 0, ["0.5", "0.6"])  # 1.1: at the limit, issued
    add_readings(device, 1, ["0.6", "0.6"])  # 1.2: held
    add_readings(device, 2, ["0.3"])
    close_hour(device, 2)
    result = certificates_issue_due()
    assert (result.issued, result.held) == (2, 1)
    held = Issuance.objects.get(status="held")
    assert held.interval_start == HOUR0 + timedelta(hours=1) and "exceeds" in held.hold_reason
    assert held.quantity_wh is None and not held.bundles.exists()
    issued = Issuance.objects.filter(status="issued").order_by("interval_start")
    assert [i.bundle_id_range_start for i in issued] == [1, 1101]

    approved = issuance_decide_held(issuance_id=held.id, approve=True, actor="op")
    assert approved.status == "issued" and approved.quantity_wh == 1200 and approved.bundle_id_range_start == 1401
    assert approved.decided_by == "op" and approved.bundles.get().range_end == 2600
    with pytest.raises(ApplicationError) as refused:
        issuance_decide_held(issuance_id=held.id, approve=False, actor="op")
    assert (refused.value.code, refused.value.status) == ("not_held", 409)


def test_a_device_is_not_issued_for_until_approved():
    device = make_device(approve=False)
    add_readings(device, 0, ["1"])
    close_hour(device, 0)
    assert certificates_issue_due().issued == 0
    device.status = ProductionDevice.Status.APPROVED
    device.save()
    assert certificates_issue_due().issued == 1


def test_the_database_refuses_a_second_issuance_for_the_same_device_and_interval():
    device = make_device()
    add_readings(device, 0, ["1"])
    close_hour(device, 0)
    certificates_issue_due()
    original = Issuance.objects.get()
    original.pk = issuance_id(device.id, HOUR0, 1800)  # another id, the same (device, interval)
    with pytest.raises(IntegrityError), transaction.atomic():
        original.save(force_insert=True)


def test_the_management_command_issues(capsys):
    device = make_device()
    add_readings(device, 0, ["2"])
    close_hour(device, 0)
    call_command("issue_certificates")
    assert "issued 1" in capsys.readouterr().out
    assert Issuance.objects.get().quantity_wh == 2000


@pytest.mark.django_db(transaction=True)
def test_racing_issuers_issue_every_interval_exactly_once():
    devices = [make_device() for _ in range(6)]
    for device in devices:
        for hour in range(8):
            add_readings(device, hour, ["0.2501", "0.25"])
        close_hour(device, 7)

    def issue():
        for _ in range(3):
            certificates_issue_due()

    concurrently(issue, 6)
    assert Issuance.objects.count() == 6 * 8
    for device in devices:
        issued = list(Issuance.objects.filter(device=device).order_by("interval_start"))
        assert len({i.interval_start for i in issued}) == 8
        ranges = [(i.bundle_id_range_start, i.bundle_id_range_end) for i in issued]
        assert ranges[0][0] == 1 and all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
        device.refresh_from_db()
        # 8 x 500.1 Wh = 4000.8 Wh: 4000 issued, 0.8 carried.
        assert sum(i.quantity_wh for i in issued) == 4000 and device.carry_wh == Decimal("0.8")
    assert ChainOperation.objects.count() == 6 * 8
