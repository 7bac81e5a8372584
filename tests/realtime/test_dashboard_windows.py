"""The dashboard's settlement-window table (generated, consumed and net kWh per meter and window) and its
held and flagged counts."""

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from gridtoken.events import rfc3339
from realtime import selectors
from tests.factories import ReadingFactory

pytestmark = pytest.mark.django_db

WINDOW = timedelta(seconds=900)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def window_start(windows_ago: int) -> datetime:
    """A window far enough from the current one that a test crossing a window boundary still sees it."""
    epoch = int(datetime.now(UTC).timestamp())
    return datetime.fromtimestamp(epoch - epoch % 900, tz=UTC) - WINDOW * windows_ago


def window_table(response) -> dict[tuple[str, str], dict[str, str]]:
    """{(meter serial, window start): {column class: cell text}} as the page shows it."""
    html = response.content.decode()
    body = html[html.index('<table id="windows">') :]
    body = body[: body.index("</table>")]
    table = {}
    for row in re.findall(r"<tr data-meter-id=.*?</tr>", body, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        named = dict(re.findall(r'<td class="num (\w+)"[^>]*>([^<]*)</td>', row))
        minted = re.search(r'<td class="minted">.*?>([^<]*)</span>', row)
        named["minted"] = minted.group(1) if minted else None
        table[(cells[0], re.search(r'<time datetime="([^"]*)"', cells[1]).group(1))] = named
    return table


def reading(meter, at: datetime, net: str, generated: str | None = None, consumed: str | None = None, **fields):
    return ReadingFactory(
        meter=meter,
        kwh_amount=Decimal(net),
        generated_kwh=None if generated is None else Decimal(generated),
        consumed_kwh=None if consumed is None else Decimal(consumed),
        mintable_kwh=max(Decimal(net), Decimal(0)),
        reading_timestamp=at,
        **{"status": "pending" if Decimal(net) > 0 else "recorded", **fields},
    )


@pytest.fixture
def two_windows(meter):
    """Window A: a surplus and a deficit reading (and a rejected one); window B: a net without directions."""
    a, b = window_start(3), window_start(2)
    reading(meter, a + timedelta(minutes=1), "2.5", "3", "0.5")
    reading(meter, a + timedelta(minutes=6), "-1.000000001", "0.2", "1.200000001", flags=["spike"], status="held")
    reading(meter, a + timedelta(minutes=11), "40", "40", "0", status="rejected")  # refused: counts nowhere
    reading(meter, b + timedelta(minutes=2), "0.75")
    return a, b


def test_the_window_table_sums_each_meters_windows_exactly(producer, meter, two_windows):
    a, b = two_windows

    table = window_table(signed_in(producer).get("/dashboard/"))

    assert table == {
        (meter.serial, rfc3339(a)): {
            "generated": "3.200000000 kWh",
            "consumed": "1.700000001 kWh",
            "net": "1.499999999 kWh",
            "held": "1",
            "flagged": "1",
            "minted": None,  # mint basis "reading": windows are not minted as such
        },
        # No directions sent: its positive net counts as generated, as window settlement counts it.
        (meter.serial, rfc3339(b)): {
            "generated": "0.750000000 kWh",
            "consumed": "0.000000000 kWh",
            "net": "0.750000000 kWh",
            "held": "0",
            "flagged": "0",
            "minted": None,
        },
    }


def test_a_producer_sees_only_their_own_meters_and_an_operator_sees_every_meter(
    producer, operator, meter, neighbour_meter, two_windows
):
    a, _ = two_windows
    reading(neighbour_meter, a + timedelta(minutes=3), "-4", "0", "4")

    mine = window_table(signed_in(producer).get("/dashboard/"))
    everyone = window_table(signed_in(operator).get("/dashboard/"))

    assert {serial for serial, _ in mine} == {meter.serial}
    assert {serial for serial, _ in everyone} == {meter.serial, neighbour_meter.serial}
    assert everyone[(neighbour_meter.serial, rfc3339(a))]["net"] == "-4.000000000 kWh"


def test_under_the_window_basis_a_window_shows_whether_it_was_minted(producer, meter, two_windows, settings):
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, mint_basis="window")
    a, b = two_windows
    # The derived window row repeats its readings' energy: it must not be summed a second time.
    ReadingFactory(
        meter=meter,
        source="window",
        window_start=a,
        reading_timestamp=a,
        kwh_amount=Decimal("1.499999999"),
        generated_kwh=Decimal("3.2"),
        consumed_kwh=Decimal("1.700000001"),
        mintable_kwh=Decimal("1.499999999"),
        status="minted",
        minted=True,
        mint_tx_signature="WindowSig",
        token_amount=1_499_999_999,
    )
    ReadingFactory(
        meter=meter, source="window", window_start=b, reading_timestamp=b, kwh_amount=Decimal("0.75"), status="pending"
    )

    table = window_table(signed_in(producer).get("/dashboard/"))

    assert table[(meter.serial, rfc3339(a))]["minted"] == "minted"
    assert table[(meter.serial, rfc3339(a))]["generated"] == "3.200000000 kWh"
    assert table[(meter.serial, rfc3339(b))]["minted"] == "not minted"
    assert table[(meter.serial, rfc3339(b))]["net"] == "0.750000000 kWh"


def test_the_table_covers_the_last_24_windows_in_one_query(producer, meter, people):
    for windows_ago in (22, 30):
        reading(meter, window_start(windows_ago) + timedelta(minutes=1), "1")
    for number in range(selectors.WINDOW_METERS + 2):  # serials after the first meter's: they fill the rest
        reading(people.meter(producer, serial=f"SM-Z{number:03d}"), window_start(2) + timedelta(minutes=1), "1")

    with CaptureQueriesContext(connection) as queries:
        rows = selectors.window_table(user=producer)

    assert len(queries) == 1
    assert len({row.meter_id for row in rows}) == selectors.WINDOW_METERS
    assert [row.window_start for row in rows if row.meter_id == str(meter.pk)] == [window_start(22)]


def test_held_and_flagged_counts_link_operators_to_the_filtered_admin_list(producer, operator, meter, two_windows):
    reading(meter, window_start(4), "1", flags=["clock_drift", "spike"], status="held")

    operator_page = signed_in(operator).get("/dashboard/").content.decode()
    producer_page = signed_in(producer).get("/dashboard/").content.decode()

    assert '<span id="held-count">2</span>' in operator_page
    assert 'href="/admin/meters/meterreading/?status__exact=held"' in operator_page
    flagged = dict(re.findall(r'<tr data-flag="(\w+)"><td><a href="([^"]+)">', operator_page))
    assert flagged == {
        "spike": "/admin/meters/meterreading/?flag=spike",
        "clock_drift": "/admin/meters/meterreading/?flag=clock_drift",
    }
    assert re.search(r'<tr data-flag="spike">.*?<td class="num">2</td>', operator_page)
    assert '<span id="held-count">2</span>' in producer_page
    assert "/admin/meters/" not in producer_page  # producers cannot open the admin: counts only
