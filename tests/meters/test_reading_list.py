"""GET /api/meters/my-readings and /api/meters/stats: only the caller's readings, paged and totalled."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from meters.models import MeterReading
from tests.factories import MeterFactory, ReadingFactory
from tests.meters.conftest import INTERVAL_FIELDS, rfc3339

pytestmark = pytest.mark.django_db


@pytest.fixture
def get(api):
    def send(path, *, token=None, key=None, **params):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {"HTTP_X_API_KEY": key}
        return api.get(path, params, **headers)

    return send


def test_my_readings_lists_only_the_callers_readings(get, meter, user_token):
    mine = ReadingFactory.create_batch(3, meter=meter)
    ReadingFactory.create_batch(2)  # another user's

    body = get("/api/meters/my-readings", token=user_token).json()

    assert {r["id"] for r in body["data"]} == {str(r.id) for r in mine}
    assert body["pagination"] == {
        "current_page": 1,
        "total_pages": 1,
        "total_items": 3,
        "items_per_page": 20,
        "has_next": False,
        "has_previous": False,
        "next_cursor": None,
    }


def test_a_listed_reading_has_the_submit_shape(get, meter, user_token):
    reading = ReadingFactory(meter=meter, kwh_amount=Decimal("1.25"))

    [row] = get("/api/meters/my-readings", token=user_token).json()["data"]

    assert row == {
        "id": str(reading.id),
        "user_id": str(meter.owner_id),
        "meter_id": str(meter.id),
        "meter_serial": meter.serial,
        "wallet_address": meter.wallet_address,
        "kwh_amount": "1.250000000",
        "mintable_kwh": "1.250000000",
        "reading_timestamp": rfc3339(reading.reading_timestamp).replace("Z", ".000000Z"),
        "submitted_at": row["submitted_at"],
        "minted": False,
        "mint_tx_signature": None,
        "status": "pending",
        **INTERVAL_FIELDS,
    }


def test_pages_sorting_and_the_minted_filter(get, meter, user_token, recent):
    for index in range(5):
        ReadingFactory(meter=meter, reading_timestamp=recent - timedelta(minutes=15 * index), kwh_amount=index + 1)
    MeterReading.objects.filter(kwh_amount=5).update(minted=True, status="minted", mint_tx_signature="sig")

    page = get(
        "/api/meters/my-readings", token=user_token, page=2, page_size=2, sort_by="kwh_amount", sort_order="asc"
    ).json()
    minted = get("/api/meters/my-readings", token=user_token, minted="true").json()
    unminted = get("/api/meters/my-readings", token=user_token, minted="false").json()

    assert [r["kwh_amount"] for r in page["data"]] == ["3.000000000", "4.000000000"]
    assert page["pagination"]["has_next"] and page["pagination"]["has_previous"]
    assert page["pagination"]["total_pages"] == 3
    assert [r["kwh_amount"] for r in minted["data"]] == ["5.000000000"]
    assert minted["data"][0]["minted"] is True and minted["data"][0]["mint_tx_signature"] == "sig"
    assert unminted["pagination"]["total_items"] == 4


def test_readings_sorted_by_timestamp_descending(get, meter, user_token, recent):
    for index in range(3):
        ReadingFactory(meter=meter, reading_timestamp=recent + timedelta(minutes=15 * index))

    data = get("/api/meters/my-readings", token=user_token, sort_by="reading_timestamp").json()["data"]

    assert [r["reading_timestamp"] for r in data] == sorted((r["reading_timestamp"] for r in data), reverse=True)


def test_a_page_past_the_end_is_empty(get, meter, user_token):
    ReadingFactory(meter=meter)

    body = get("/api/meters/my-readings", token=user_token, page=9).json()

    assert body["data"] == [] and body["pagination"]["total_items"] == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_size": 101}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
        ({"page": 10**30}, "page"),
        ({"sort_by": "wallet_address"}, "sort_by"),
        ({"sort_order": "sideways"}, "sort_order"),
        ({"minted": "perhaps"}, "minted"),
    ],
)
def test_bad_list_parameters_are_400(get, meter, user_token, params, field):
    response = get("/api/meters/my-readings", token=user_token, **params)

    assert response.status_code == 400 and response.json()["error"]["field"] == field


def test_a_device_key_lists_only_its_meters_readings(get, meter, device_key):
    own = ReadingFactory(meter=meter)
    ReadingFactory(meter=MeterFactory(owner=meter.owner))

    data = get("/api/meters/my-readings", key=device_key).json()["data"]

    assert [r["id"] for r in data] == [str(own.id)]


def test_stats_total_the_callers_readings_exactly(get, meter, user_token):
    ReadingFactory(meter=meter, kwh_amount=Decimal("1.000000001"))
    ReadingFactory(meter=meter, kwh_amount=Decimal("2.5"), minted=True, status="minted", mint_tx_signature="s")
    ReadingFactory(kwh_amount=Decimal("50"))  # someone else's

    body = get("/api/meters/stats", token=user_token).json()

    assert body == {
        "total_readings": 2,
        "unminted_kwh": "1.000000001",
        "minted_kwh": "2.500000000",
        "total_kwh": "3.500000001",
    }


def test_stats_count_measured_energy_once_and_mint_only_what_is_mintable(get, meter, user_token):
    ReadingFactory(meter=meter, kwh_amount=Decimal("-0.5"), status="recorded")
    ReadingFactory(meter=meter, kwh_amount=Decimal("2"), mintable_kwh=0, status="recorded", window_start=timezone.now())
    start = timezone.now()
    window = {"source": "window", "window_start": start, "reading_timestamp": start, "kwh_amount": Decimal("2")}
    window["status"] = "pending"
    ReadingFactory(meter=meter, **window)

    body = get("/api/meters/stats", token=user_token).json()

    assert body == {
        "total_readings": 2,
        "unminted_kwh": "2.000000000",
        "minted_kwh": "0.000000000",
        "total_kwh": "1.500000000",
    }


def test_the_list_filters_by_meter_status_and_source(get, meter, user_token):
    other = MeterFactory(owner=meter.owner)
    mine = ReadingFactory(meter=meter)
    ReadingFactory(meter=other)
    recorded = ReadingFactory(meter=other, kwh_amount=Decimal("-1"), status="recorded")

    by_meter = get("/api/meters/my-readings", token=user_token, meter_serial=meter.serial).json()["data"]
    by_status = get("/api/meters/my-readings", token=user_token, status="recorded").json()["data"]
    unknown = get("/api/meters/my-readings", token=user_token, meter_serial="NOPE").json()["data"]

    assert [r["id"] for r in by_meter] == [str(mine.id)]
    assert [r["id"] for r in by_status] == [str(recorded.id)]
    assert unknown == []
    assert get("/api/meters/my-readings", token=user_token, source="tidal").status_code == 400


def test_stats_without_readings_are_zero(get, user_token):
    body = get("/api/meters/stats", token=user_token).json()

    zero = "0.000000000"
    assert body == {"total_readings": 0, "unminted_kwh": zero, "minted_kwh": zero, "total_kwh": zero}


def test_reads_need_credentials(api):
    assert api.get("/api/meters/my-readings").status_code == 401
    assert api.get("/api/meters/stats").status_code == 401


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return sorted(r["id"] for r in response.json()["data"])


def test_the_list_filters_by_meter_serial_and_by_meter_id(get, meter, user_token):
    other = MeterFactory(owner=meter.owner)
    mine = ReadingFactory(meter=meter)
    theirs = ReadingFactory(meter=other)

    by_serial = get("/api/meters/my-readings", token=user_token, meter_serial=other.serial)
    by_id = get("/api/meters/my-readings", token=user_token, meter_id=str(meter.id))
    both_agreeing = get("/api/meters/my-readings", token=user_token, meter_serial=meter.serial, meter_id=str(meter.id))
    both_differing = get("/api/meters/my-readings", token=user_token, meter_serial=other.serial, meter_id=str(meter.id))

    assert ids(by_serial) == [str(theirs.id)]
    assert ids(by_id) == [str(mine.id)]
    assert ids(both_agreeing) == [str(mine.id)]
    assert ids(both_differing) == []


def test_another_accounts_meter_gives_an_empty_page_not_its_readings(get, meter, user_token):
    ReadingFactory(meter=meter)
    strangers = ReadingFactory()  # another owner's meter and reading

    by_serial = get("/api/meters/my-readings", token=user_token, meter_serial=strangers.meter.serial)
    by_id = get("/api/meters/my-readings", token=user_token, meter_id=str(strangers.meter_id))

    assert ids(by_serial) == [] and by_serial.json()["pagination"]["total_items"] == 0
    assert ids(by_id) == [] and by_id.json()["pagination"]["total_items"] == 0


def test_a_device_key_filtering_by_another_of_its_owners_meters_sees_nothing(get, meter, device_key):
    own = ReadingFactory(meter=meter)
    sibling = ReadingFactory(meter=MeterFactory(owner=meter.owner))

    response = get("/api/meters/my-readings", key=device_key, meter_id=str(sibling.meter_id))
    by_serial = get("/api/meters/my-readings", key=device_key, meter_serial=sibling.meter.serial)
    own_id = get("/api/meters/my-readings", key=device_key, meter_id=str(meter.id))

    assert ids(response) == [] and ids(by_serial) == []
    assert ids(own_id) == [str(own.id)]


def test_the_list_filters_by_one_status_or_several(get, meter, user_token):
    pending = ReadingFactory(meter=meter)
    failed = ReadingFactory(meter=meter, status="failed")
    held = ReadingFactory(meter=meter, status="held")
    ReadingFactory(meter=meter, status="minted", minted=True, mint_tx_signature="sig")

    one = get("/api/meters/my-readings", token=user_token, status="held")
    several = get("/api/meters/my-readings", token=user_token, status="pending,failed, held")

    assert ids(one) == [str(held.id)]
    assert ids(several) == sorted(str(r.id) for r in (pending, failed, held))


@pytest.mark.parametrize("status", ["bogus", "pending,bogus", "pending,", "", "PENDING"])
def test_an_unknown_status_is_a_400_naming_the_field(get, meter, user_token, status):
    ReadingFactory(meter=meter)

    response = get("/api/meters/my-readings", token=user_token, status=status)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == "status"


def test_the_list_filters_by_a_reading_time_range(get, meter, user_token, recent):
    at = {
        offset: ReadingFactory(meter=meter, reading_timestamp=recent + timedelta(minutes=offset))
        for offset in (0, 15, 30, 45)
    }
    since, until = rfc3339(recent + timedelta(minutes=15)), rfc3339(recent + timedelta(minutes=45))

    in_range = get("/api/meters/my-readings", token=user_token, since=since, until=until)
    from_since = get("/api/meters/my-readings", token=user_token, since=since)
    before_until = get("/api/meters/my-readings", token=user_token, until=until)
    with_offset = get(
        "/api/meters/my-readings",
        token=user_token,
        since=(recent + timedelta(minutes=30)).astimezone(timezone.get_fixed_timezone(420)).isoformat(),
    )

    assert ids(in_range) == sorted(str(at[m].id) for m in (15, 30))  # since inclusive, until exclusive
    assert ids(from_since) == sorted(str(at[m].id) for m in (15, 30, 45))
    assert ids(before_until) == sorted(str(at[m].id) for m in (0, 15, 30))
    assert ids(with_offset) == sorted(str(at[m].id) for m in (30, 45))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01T00:00:00Z"}, "until"),
        ({"since": "2025-03-01T12:00:00Z", "until": "2025-03-01T11:00:00Z"}, "until"),
        ({"meter_id": "not-a-uuid"}, "meter_id"),
        ({"meter_serial": "x" * 65}, "meter_serial"),
        ({"since": "9999-12-31T23:59:59-23:00"}, "since"),
        ({"since": "2025-03-01T12:00:00+25:00"}, "since"),
        ({"status": "pending," * 40}, "status"),
    ],
)
def test_bad_filter_values_are_400_naming_the_field(get, meter, user_token, params, field):
    response = get("/api/meters/my-readings", token=user_token, **params)

    assert response.status_code == 400
    assert response.json()["error"] == {**response.json()["error"], "code": "validation_error", "field": field}
