"""Each mint basis through the real pipeline to the local chain: balances equal what the policy says, once."""

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from meters.models import MeterReading
from meters.selectors import Caller
from meters.services.batch import readings_submit_batch
from meters.services.windows import windows_settle
from minting.chain import kwh_to_base_units
from minting.services.automatic import readings_mint_due
from tests.conftest import concurrently
from tests.minting.pipeline_harness import make_meter, set_tokenization, use_chain

pytestmark = pytest.mark.django_db(transaction=True)
Status = MeterReading.Status


@pytest.fixture
def chain(settings, localnet, tmp_path):
    return use_chain(settings, localnet, tmp_path)


@pytest.fixture
def start():
    """A window boundary two hours ago, so every window of the test is complete or completable."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now.replace(minute=now.minute - now.minute % 15) - timedelta(hours=2)


def submit(meter, items: list[dict]) -> dict:
    caller = Caller(user_id=meter.owner_id, scope="fleet", key_id=meter.id)
    body = [{"meter_serial": meter.serial, **item} for item in items]
    return readings_submit_batch(caller=caller, readings=body, now=timezone.now())


def interval(moment, kwh: str, generated: str | None = None, consumed: str | None = None) -> dict:
    item = {"timestamp": moment.isoformat(), "kwh": kwh}
    if generated is not None:
        item |= {"energy_generated": Decimal(generated), "energy_consumed": Decimal(consumed)}
    return item


def assert_balance(chain, meter, kwh: str) -> None:
    client = chain.client()
    assert client.token_balance(meter.wallet_address) == kwh_to_base_units(Decimal(kwh))
    minted = MeterReading.objects.filter(meter=meter, status=Status.MINTED)
    assert sum(r.token_amount for r in minted) == client.token_balance(meter.wallet_address)


def test_the_reading_basis_mints_positive_intervals_and_never_zero_or_negative(chain, start):
    meter = make_meter()
    steps = [start + timedelta(minutes=15 * n) for n in range(4)]
    result = submit(
        meter,
        [interval(steps[0], "1.5"), interval(steps[1], "0"), interval(steps[2], "-2"), interval(steps[3], "0.25")],
    )
    assert result["failed_count"] == 0

    readings_mint_due()

    assert_balance(chain, meter, "1.75")
    assert MeterReading.objects.filter(status=Status.RECORDED).count() == 2


def test_the_export_basis_mints_gross_generation_and_register_export(chain, settings, start):
    set_tokenization(settings, mint_basis="export")
    solar, register = make_meter(), make_meter()
    submit(solar, [interval(start, "0.85", generated="1.25", consumed="0.4")])
    submit(
        register,
        [
            {"timestamp": (start + timedelta(minutes=15 * n)).isoformat(), "registers": {"1.8.0": i, "2.8.0": e}}
            for n, (i, e) in enumerate(((10, 20), (12, "23.5")))
        ],
    )

    readings_mint_due()

    assert_balance(chain, solar, "1.25")
    assert_balance(chain, register, "3.5")


def test_the_window_basis_mints_each_windows_net_surplus_once(chain, settings, start):
    set_tokenization(settings, mint_basis="window", window_grace_secs=0, duplicate_window_secs=0)
    meter = make_meter()
    first = [interval(start + timedelta(minutes=m), kwh) for m, kwh in ((0, "1"), (5, "-0.25"), (10, "0.5"))]
    second = [interval(start + timedelta(minutes=m), kwh) for m, kwh in ((15, "-1"), (20, "0.5"))]  # a net import
    third = [interval(start + timedelta(minutes=30), "2")]
    submit(meter, first + second + third)
    assert set(MeterReading.objects.values_list("status", flat=True)) == {Status.AWAITING_WINDOW}

    readings_mint_due()  # settles the complete windows, then mints them
    readings_mint_due()

    windows = {r.window_start: r for r in MeterReading.objects.filter(source="window")}
    assert windows[start].mintable_kwh == Decimal("1.25") and windows[start].status == Status.MINTED
    assert windows[start + timedelta(minutes=15)].status == Status.RECORDED  # net import: nothing to mint
    assert start + timedelta(minutes=30) not in windows  # its window is still open in event time
    assert_balance(chain, meter, "1.25")
    # A late reading into a settled window is stored and flagged, never minted.
    submit(meter, [interval(start + timedelta(minutes=7), "5")])
    late = MeterReading.objects.get(reading_timestamp=start + timedelta(minutes=7))
    assert (late.status, late.flags) == (Status.RECORDED, ["late_settled_window"])
    assert windows_settle() == 0
    readings_mint_due()
    assert_balance(chain, meter, "1.25")


def test_a_quiet_meters_past_windows_complete_by_the_wall_clock(chain, settings, start):
    set_tokenization(settings, mint_basis="window", duplicate_window_secs=0)
    meter = make_meter()
    submit(meter, [interval(start, "0.5")])
    assert windows_settle() == 0  # heard from just now: its window waits for event time

    MeterReading.objects.update(submitted_at=timezone.now() - timedelta(minutes=16))

    assert windows_settle() == 1
    readings_mint_due()
    assert_balance(chain, meter, "0.5")


def test_a_held_reading_keeps_its_window_open_until_an_operator_decides(chain, settings, start):
    set_tokenization(settings, mint_basis="window", window_grace_secs=0, duplicate_window_secs=0)
    settings.VEE = dataclasses.replace(settings.VEE, actions={**settings.VEE.actions, "meter_quality": "hold"})
    meter = make_meter()
    submit(meter, [interval(start, "1"), {**interval(start + timedelta(minutes=3), "4"), "quality": "estimated"}])
    submit(meter, [interval(start + timedelta(minutes=20), "0")])

    assert windows_settle() == 0
    held = MeterReading.objects.get(status=Status.HELD)
    from meters.services.holds import readings_approve

    readings_approve(reading_ids=[held.id])
    assert windows_settle() == 1
    readings_mint_due()

    assert_balance(chain, meter, "5")


def test_racing_settlers_create_one_window_and_the_database_refuses_a_second(chain, settings, start):
    set_tokenization(settings, mint_basis="window", window_grace_secs=0, duplicate_window_secs=0)
    meter = make_meter()
    submit(meter, [interval(start, "1.5"), interval(start + timedelta(minutes=16), "0.1")])
    counts = concurrently(windows_settle, 4)

    assert sum(counts) == 1
    window = MeterReading.objects.get(source="window")
    # A second row for the window: refused where a window row must sit (its start), and at any other moment.
    for moment, constraint in (
        (window.reading_timestamp, "reading_one_per_window"),
        (window.reading_timestamp + timedelta(seconds=1), "reading_window_at_its_start"),
    ):
        with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
            MeterReading.objects.create(
                user_id=window.user_id, meter=meter, wallet_address=window.wallet_address, kwh_amount=1,
                mintable_kwh=1, reading_timestamp=moment, source="window", window_start=window.window_start,
            )  # fmt: skip
    readings_mint_due()
    assert_balance(chain, meter, "1.5")


def test_a_windows_mint_request_names_its_meter_and_window_for_mint_generation(start):
    from minting.chain import Generation
    from minting.services.batching import _requests
    from minting.services.claiming import claim_due

    meter = make_meter()
    window = MeterReading.objects.create(
        user_id=meter.owner_id, meter=meter, wallet_address=meter.wallet_address, kwh_amount=2, mintable_kwh=2,
        reading_timestamp=start, source="window", window_start=start,
    )  # fmt: skip
    reading = MeterReading.objects.create(
        user_id=meter.owner_id, meter=meter, wallet_address=meter.wallet_address, kwh_amount=1, mintable_kwh=1,
        reading_timestamp=start,
    )  # fmt: skip
    with transaction.atomic():
        claimed = claim_due(limit=10)
        requests, _ = _requests({meter.wallet_address: claimed}, {r.id: 1 for r in claimed})

    by_key = {request.key: request.generation for request in requests}
    expected = Generation(meter_id=meter.id.bytes, window_start_ms=int(start.timestamp()) * 1000)
    assert by_key == {str(window.id): expected, str(reading.id): None}
