import dataclasses
import json
import os
import re
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from gridtoken.events import rfc3339
from minting.models import ChainCostDay, MintBatch, MintingControl, TokenMint
from realtime import views
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_readings(response) -> list[dict]:
    html = response.content.decode()
    start = html.index('<script id="dashboard-readings" type="application/json">') + len(
        '<script id="dashboard-readings" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def batch(status: str, *, readings: int = 2, age: timedelta = timedelta(0), signature: str | None = None) -> MintBatch:
    settled = timezone.now() - age
    return MintBatch.objects.create(
        status=status,
        signature=signature or f"Sig{MintBatch.objects.count()}{status}",
        raw_transaction=b"\x01",
        last_valid_block_height=100,
        mint_address="Mint111",
        reading_count=readings,
        total_token_amount=readings * 10**9,
        created_at=settled,
        settled_at=None if status == MintBatch.Status.SIGNED else settled,
    )


def test_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"] == "/login?next=/dashboard/"


def test_login_page_signs_a_producer_in_and_lands_on_the_dashboard(client, producer):
    assert client.get("/login").status_code == 200
    response = client.post("/login", {"username": producer.username, "password": "correct horse battery"})
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")
    assert client.get("/dashboard/").context["user"] == producer


def test_wrong_password_stays_on_the_login_page_with_an_error(client, producer):
    response = client.post("/login", {"username": producer.username, "password": "wrong"})
    assert response.status_code == 200
    assert b"did not match" in response.content


def test_dashboard_shows_only_the_users_own_meters_and_readings(people, producer, meter, neighbour_meter):
    mine = people.reading(meter, "4.5")
    people.reading(neighbour_meter, "9.75")
    response = signed_in(producer).get("/dashboard/")
    assert response.status_code == 200
    assert [m["serial"] for m in response.context["meters"]] == [meter.serial]
    assert [r["reading_id"] for r in page_readings(response)] == [str(mine.pk)]
    html = response.content.decode()
    assert meter.serial in html and neighbour_meter.serial not in html
    assert 'id="pipeline"' not in html


def test_path_without_trailing_slash_serves_the_dashboard_too(producer):
    assert signed_in(producer).get("/dashboard").status_code == 200


def test_minted_reading_shows_tokens_and_an_explorer_link(people, producer, meter, settings):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, cluster="devnet")
    people.reading(meter, "1.25", status="minted", minted=True, mint_tx_signature="5igSig", token_amount=1_250_000_000)
    html = signed_in(producer).get("/dashboard/").content.decode()
    assert "1.250000000" in html
    assert 'href="https://explorer.solana.com/tx/5igSig?cluster=devnet"' in html


@pytest.mark.parametrize(
    ("cluster", "url"),
    [
        ("mainnet-beta", "https://explorer.solana.com/tx/{signature}"),
        ("testnet", "https://explorer.solana.com/tx/{signature}?cluster=testnet"),
        (
            "localnet",
            "https://explorer.solana.com/tx/{signature}?cluster=custom&customUrl=http%3A%2F%2F127.0.0.1%3A8899",
        ),
    ],
)
def test_explorer_link_follows_the_configured_cluster(settings, cluster, url):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, cluster=cluster, rpc_url="http://127.0.0.1:8899")
    assert views.explorer_tx_template() == url


def test_readings_json_lists_the_users_own_readings_newest_first(people, producer, meter, neighbour_meter):
    older = people.reading(meter, "1", submitted_at=timezone.now() - timedelta(minutes=5))
    newer = people.reading(meter, "2")
    people.reading(neighbour_meter, "3")
    body = signed_in(producer).get("/dashboard/readings.json").json()
    assert [r["reading_id"] for r in body["readings"]] == [str(newer.pk), str(older.pk)]
    assert body["readings"][0]["kwh_amount"] == "2.000000000" and body["readings"][0]["status"] == "pending"


@pytest.mark.parametrize("path", ["/dashboard/readings.json", "/dashboard/balance.json", "/dashboard/stats.json"])
def test_json_endpoints_answer_401_in_the_error_shape_to_anonymous_callers(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_stats_json_is_for_operators_only(producer):
    response = signed_in(producer).get("/dashboard/stats.json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_operator_sees_pipeline_figures(people, operator, meter):
    for status in ("pending", "pending", "pending", "minting", "failed", "recorded"):
        people.reading(meter, "1", status=status)
    batch(MintBatch.Status.SIGNED)
    batch(MintBatch.Status.CONFIRMED, readings=5, age=timedelta(seconds=20))
    batch(MintBatch.Status.CONFIRMED, readings=7, age=timedelta(minutes=5))  # outside the minute
    batch(MintBatch.Status.EXPIRED, age=timedelta(minutes=10))
    batch(MintBatch.Status.FAILED, age=timedelta(hours=2))  # outside the hour
    last = batch(MintBatch.Status.CONFIRMED, readings=3, signature="LastSig")
    MintingControl.objects.create(id=1, auto_mint_enabled=False)
    ChainCostDay.objects.create(
        day=timezone.now().astimezone(UTC).date(), batches=3, readings=15, kwh=Decimal("7.5"), fee_lamports=16_000,
        priority_fee_lamports=1_000, rent_lamports=2_000,
    )  # fmt: skip

    figures = signed_in(operator).get("/dashboard/stats.json").json()

    assert {k: figures[k] for k in figures if k not in ("last_batch", "chain", "as_of")} == {
        "readings_total": 6,
        "meters_total": 1,
        "recorded_readings": 1,  # stored with nothing to mint (a baseline, a zero, a reset): counted, not lost
        "held": 0,
        "pending": 3,
        "in_flight_batches": 1,
        "in_flight_readings": 1,
        "minted_readings_per_minute": 8,
        "minted_tokens_per_minute": "8.000000000",  # 5 + 3 tokens in the two batches of the last minute
        "minted_base_units_per_minute": 8 * 10**9,
        "failed_readings": 1,
        "failed_batches_last_hour": 1,
        "auto_mint_enabled": False,
        "chain_cost_today": {"lamports": 18_000, "lamports_per_kwh": "2400.00", "lamports_per_reading": "1200.00"},
    }
    assert (figures["last_batch"]["id"], figures["last_batch"]["signature"]) == (str(last.pk), "LastSig")
    assert figures["last_batch"]["total_token_amount"] == 3 * 10**9


def test_auto_mint_state_falls_back_to_the_environment_before_the_control_row_exists(operator, settings):
    figures = signed_in(operator).get("/dashboard/stats.json").json()
    assert figures["auto_mint_enabled"] is settings.TOKENIZATION.auto_mint_enabled
    assert figures["last_batch"] is None
    assert not MintingControl.objects.exists()  # reading the figures wrote nothing


def test_operator_dashboard_renders_the_pipeline_panel_with_the_toggle(people, operator, meter):
    people.reading(meter, "1")
    response = signed_in(operator).get("/dashboard/")
    html = response.content.decode()
    assert 'id="pipeline"' in html and 'id="toggle-auto-mint"' in html
    assert '<dd id="fig-pending">1</dd>' in html
    assert response.cookies["csrftoken"].value  # the toggle's fetch sends it back


def banner(html: str, banner_id: str) -> str:
    start = html.index(f'id="{banner_id}"')
    return html[html.rindex("<div", 0, start) : html.index("</div>", start)]


def test_operator_dashboard_shows_no_banner_while_the_chain_is_fine(operator):
    html = signed_in(operator).get("/dashboard/").content.decode()
    for banner_id in ("minting-paused-banner", "decisions-blocked-banner", "fee-payer-banner"):
        assert " hidden>" in banner(html, banner_id)
    assert '<span id="fig-fee-payer-sol" data-low="false">unknown</span>' in html


def test_a_pause_by_the_breaker_shows_its_reason_message_and_end_on_the_dashboard(operator, producer):
    until = timezone.now() + timedelta(seconds=45)
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=6,
        chain_retry_at=until,
        chain_error_code="rpc_unauthorized",
        chain_error="https://rpc.example refused getBalance: HTTP 401: check the RPC URL's API key & plan",
    )
    html = signed_in(operator).get("/dashboard/").content.decode()
    paused = banner(html, "minting-paused-banner")
    assert " hidden" not in paused and 'role="alert"' in paused
    assert '<code id="paused-reason">rpc_unauthorized</code>' in paused
    assert f'<time id="paused-until">{rfc3339(until)}</time>' in paused
    assert "check the RPC URL&#x27;s API key &amp; plan" in paused  # escaped: the message is text, never HTML
    assert '<span id="paused-failures">6</span>' in paused
    # Producers see none of it: the banners belong to the operator's pipeline panel.
    assert "minting-paused-banner" not in signed_in(producer).get("/dashboard/").content.decode()


def test_stats_json_carries_the_chain_state_the_page_refreshes_its_banners_from(operator):
    now = timezone.now()
    until, blocked, checked = now + timedelta(seconds=30), now - timedelta(seconds=4), now - timedelta(days=1)
    TokenMint.objects.create(address="Mint111", decimals=9, token_program="Tok", authority="Auth111", rpc_url="x")
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=2,
        chain_retry_at=until,
        chain_error_code="insufficient_funds",
        chain_error="the fee payer Auth111 holds 4000 lamports but ... need about 5000: send it SOL",
        fee_payer_lamports=4_000,
        fee_payer_checked_at=checked,
        decisions_blocked_at=blocked,
        decisions_blocked_reason="history_unavailable: the node has no transaction history",
        accounts_epoch=7,
    )
    chain = signed_in(operator).get("/dashboard/stats.json").json()["chain"]
    assert chain == {
        "paused": True,
        "reason_code": "insufficient_funds",
        "message": "the fee payer Auth111 holds 4000 lamports but ... need about 5000: send it SOL",
        "paused_until": rfc3339(until),
        "failures": 2,
        "decisions_blocked": True,
        "decisions_blocked_code": "history_unavailable",
        "decisions_blocked_reason": "history_unavailable: the node has no transaction history",
        "decisions_blocked_at": rfc3339(blocked),
        "fee_payer_address": "Auth111",
        "fee_payer_lamports": 4_000,
        "fee_payer_sol": "0.000004",
        "fee_payer_low": True,
        "fee_payer_checked_at": rfc3339(checked),
    }  # accounts_epoch is internal: not shown


def test_blocked_decisions_and_a_low_fee_payer_show_their_banners(operator):
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        fee_payer_lamports=49_999_999,
        decisions_blocked_at=timezone.now() - timedelta(seconds=10),
        decisions_blocked_reason="node_behind: Node is behind by 42 slots",
    )
    TokenMint.objects.create(address="Mint111", decimals=9, token_program="Tok", authority="Auth111", rpc_url="x")
    html = signed_in(operator).get("/dashboard/").content.decode()
    blocked = banner(html, "decisions-blocked-banner")
    assert " hidden" not in blocked and '<code id="blocked-code">node_behind</code>' in blocked
    assert "Node is behind by 42 slots" in blocked
    low = banner(html, "fee-payer-banner")
    assert " hidden" not in low and '<span id="low-fee-payer-sol">0.049999999</span>' in low
    assert '<code id="low-fee-payer-address">Auth111</code>' in low
    assert '<span id="fig-fee-payer-sol" data-low="true">0.049999999 SOL</span>' in html
    assert " hidden>" in banner(html, "minting-paused-banner")


def test_an_old_block_an_elapsed_pause_and_a_funded_payer_show_no_banner(operator):
    MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=3,
        chain_retry_at=timezone.now() - timedelta(seconds=1),
        chain_error_code="rpc_unavailable",
        fee_payer_lamports=2_500_000_000,
        decisions_blocked_at=timezone.now() - timedelta(minutes=5),
        decisions_blocked_reason="node_behind: Node is behind by 42 slots",
    )
    html = signed_in(operator).get("/dashboard/").content.decode()
    for banner_id in ("minting-paused-banner", "decisions-blocked-banner", "fee-payer-banner"):
        assert " hidden>" in banner(html, banner_id)
    assert '<span id="fig-fee-payer-sol" data-low="false">2.5 SOL</span>' in html


def test_the_page_script_refreshes_the_banners_from_the_stats(client):
    script = b"".join(client.get("/dashboard/assets/dashboard.js").streaming_content).decode()
    for banner_id in ("minting-paused-banner", "decisions-blocked-banner", "fee-payer-banner", "fig-fee-payer-sol"):
        assert f'"{banner_id}"' in script


def test_balance_is_unavailable_not_an_error_when_the_chain_cannot_be_reached(producer, meter, settings):
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=f"http://127.0.0.1:{free_port()}", rpc_timeout_secs=1)
    response = signed_in(producer).get("/dashboard/balance.json")
    assert response.status_code == 200
    assert response.json()["wallets"] == [
        {"wallet": producer.wallet_address, "status": "unavailable", "balance": None, "base_units": None}
    ]


def test_balances_cover_the_users_wallet_and_every_other_wallet_their_meters_pay_into(people, producer, meter):
    other = people.meter(producer, serial="SM-ELSEWHERE")
    other.wallet_address = "SomeOtherWallet"
    other.save()
    wallets = [w["wallet"] for w in signed_in(producer).get("/dashboard/balance.json").json()["wallets"]]
    assert wallets == [producer.wallet_address, "SomeOtherWallet"]


def test_user_without_any_wallet_gets_an_empty_balance_list(people):
    user = people.user()
    user.wallet_address = None
    user.save()
    assert signed_in(user).get("/dashboard/balance.json").json()["wallets"] == []


def test_dashboard_assets_are_served_without_collectstatic(client):
    script = client.get("/dashboard/assets/dashboard.js")
    assert script.status_code == 200 and "javascript" in script["Content-Type"]
    assert b"new WebSocket" in b"".join(script.streaming_content)
    assert client.get("/dashboard/assets/dashboard.css").status_code == 200
    assert client.get("/dashboard/assets/../views.py").status_code == 400  # a path outside the assets is refused


def test_logout_ends_the_session(producer):
    client = signed_in(producer)
    assert client.post("/logout").status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_token_units_are_exact_decimals():
    assert views.token_units(1) == "0.000000001"
    assert views.token_units(123_456_789_012) == "123.456789012"


@pytest.mark.django_db(transaction=True)
def test_balance_is_read_from_the_chain_after_a_real_mint(people, settings, localnet, tmp_path):
    from django.core.management import call_command
    from solders.keypair import Keypair

    from minting.services.operator import reading_mint_now

    producer = people.user()
    producer.wallet_address = str(Keypair().pubkey())
    producer.save()
    reading = people.reading(people.meter(producer), "1.25")
    settings.CHAIN = dataclasses.replace(settings.CHAIN, rpc_url=localnet.url, keypair_path=tmp_path / "authority.json")
    call_command("chain_init", "--new-mint", stdout=open(os.devnull, "w"))  # noqa: SIM115
    client = signed_in(producer)
    assert client.get("/dashboard/balance.json").json()["wallets"][0]["balance"] == "0.000000000"

    _reading, confirmed = reading_mint_now(reading_id=reading.pk)

    assert confirmed
    wallet = client.get("/dashboard/balance.json").json()["wallets"][0]
    assert wallet == {
        "wallet": producer.wallet_address,
        "status": "ok",
        "balance": "1.250000000",
        "base_units": 1_250_000_000,
    }


def test_an_operator_without_meters_sees_fleet_figures_instead_of_empty_producer_panels(people, producer, meter):
    operator = people.user(staff=True)
    operator.wallet_address = None
    operator.save()
    people.reading(meter, "2.5", status="pending")
    people.reading(meter, "1", status="held")
    people.reading(meter, "1", status="failed")
    last = batch(MintBatch.Status.CONFIRMED, readings=3, age=timedelta(seconds=10), signature="LastBatchSig")
    MintBatch.objects.filter(pk=last.pk).update(total_token_amount=3_250_000_000)

    html = signed_in(operator).get("/dashboard/").content.decode()

    assert 'id="balances"' not in html and 'id="meters"' not in html and 'id="readings"' not in html
    assert "No wallet yet" not in html and "No meters registered" not in html
    assert '<span id="fig-readings-total">3</span> from <span id="fig-meters-total">1</span> meters' in html
    assert '<span id="fig-held">1</span>' in html and '<span id="fig-failed">1</span>' in html
    assert 'title="3250000000 base units/min">3.250000000 tokens/min</span>' in html
    assert 'title="3250000000 base units">3.250000000 tokens</span>' in html
    assert f'<time id="fig-last-batch-time">{rfc3339(last.created_at)}</time>' in html
    assert rfc3339(last.created_at).endswith("Z")
    assert ">LastBatchSig</a>" in html and "explorer.solana.com/tx/LastBatchSig" in html


def test_an_operator_with_meters_of_their_own_keeps_those_panels_beside_the_fleet(people):
    operator = people.user(staff=True)
    people.reading(people.meter(operator, serial="SM-OWN"), "1")

    html = signed_in(operator).get("/dashboard/").content.decode()

    assert 'id="pipeline"' in html and 'id="meters"' in html and 'id="readings"' in html
    assert "Your meters" in html and "SM-OWN" in html


def test_a_producer_keeps_their_own_panels_and_sees_no_fleet_figures(people, producer, meter):
    people.reading(meter, "1")

    html = signed_in(producer).get("/dashboard/").content.decode()

    assert 'id="balances"' in html and 'id="meters"' in html and 'id="readings"' in html
    assert 'id="pipeline"' not in html and "fig-readings-total" not in html


def test_meters_are_listed_by_serial_with_utc_z_times_and_tokens_carry_their_base_units(people, producer):
    later, earlier = people.meter(producer, serial="SM-B"), people.meter(producer, serial="SM-A")
    reading = people.reading(later, "1.25", status="minted", token_amount=1_250_000_000, mint_tx_signature="Sig1")
    people.reading(earlier, "1")

    response = signed_in(producer).get("/dashboard/")
    html = response.content.decode()

    assert [m["serial"] for m in response.context["meters"]] == ["SM-A", "SM-B"]
    assert html.index(">SM-A<") < html.index(">SM-B<")
    # Lists show UTC to the second on one line; the element keeps the exact RFC 3339 time.
    times = re.findall(r'<time datetime="([^"]*)" title="([^"]*)">([^<]*)</time>', html)
    assert len(times) == 6, times  # two meters' last reading, two readings, their two settlement windows
    for exact, title, shown in times:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", exact) and title == exact
        assert shown == exact.replace("T", " ")[:19]
    assert f'<time datetime="{rfc3339(reading.submitted_at)}"' in html
    assert '<td class="num tokens" title="1250000000 base units">1.250000000</td>' in html


def test_stats_json_gives_minted_per_minute_in_tokens_exactly_beyond_float_precision(operator):
    huge = 12_345_678_901_234_567_891  # base units: more than 2**53, where a float stops being exact
    last = batch(MintBatch.Status.CONFIRMED, readings=1, age=timedelta(seconds=5))
    MintBatch.objects.filter(pk=last.pk).update(total_token_amount=huge)

    response = signed_in(operator).get("/dashboard/stats.json")
    figures = json.loads(response.content, parse_int=str)  # the digits as sent

    assert figures["minted_tokens_per_minute"] == "12345678901.234567891"
    assert figures["minted_base_units_per_minute"] == str(huge)
    assert figures["last_batch"]["total_tokens"] == "12345678901.234567891"
    assert figures["last_batch"]["explorer_url"].startswith("https://explorer.solana.com/tx/")
