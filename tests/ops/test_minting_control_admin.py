"""Django admin's control row: the switch stays editable; what the workers record is shown, read-only.

(Here rather than in tests/minting/test_admin_api_site.py: the operator-visibility work owns this file.)
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from minting.models import MintingControl, TokenMint
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CHANGE = "/admin/minting/mintingcontrol/1/change/"


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def recorded():
    TokenMint.objects.create(address="Mint111", decimals=9, token_program="Tok", authority="Auth111", rpc_url="x")
    return MintingControl.objects.create(
        id=1,
        auto_mint_enabled=True,
        chain_failures=3,
        chain_retry_at=timezone.now() + timedelta(seconds=50),
        chain_error_code="supply_overflow",
        chain_error="instruction 1 (spl-token): the amount overflows the mint's supply",
        fee_payer_lamports=7_250_000,
        fee_payer_checked_at=timezone.now(),
        decisions_blocked_at=timezone.now(),
        decisions_blocked_reason="history_unavailable: the node keeps no transaction history",
        accounts_epoch=41,
    )


def test_the_change_page_shows_the_breaker_the_fee_payer_and_blocked_decisions(staff_client, recorded):
    page = staff_client.get(CHANGE).content.decode()
    for shown in (
        "supply_overflow",
        "the amount overflows the mint&#x27;s supply",
        "0.00725",  # SOL
        "7250000",
        "Auth111",
        "history_unavailable: the node keeps no transaction history",
        "Outage breaker",
        "Fee payer",
        "Settlement decisions",
    ):
        assert shown in page, shown
    assert "accounts_epoch" not in page and "Accounts epoch" not in page
    assert 'name="auto_mint_enabled"' in page  # the one editable field
    for recorded_field in ("chain_error_code", "fee_payer_lamports", "decisions_blocked_reason", "chain_retry_at"):
        assert f'name="{recorded_field}"' not in page


def test_the_list_shows_whether_minting_is_paused_and_why(staff_client, recorded):
    page = staff_client.get("/admin/minting/mintingcontrol/").content.decode()
    assert "supply_overflow" in page and "0.00725" in page
    assert page.count('alt="True"') == 2  # auto-mint on, and paused now


def test_saving_the_switch_leaves_what_the_workers_recorded_alone(staff_client, recorded):
    response = staff_client.post(CHANGE, {"chain_error_code": "", "fee_payer_lamports": "0", "accounts_epoch": "0"})
    assert response.status_code == 302
    control = MintingControl.objects.get()
    assert control.auto_mint_enabled is False  # the unticked checkbox
    assert (control.chain_error_code, control.fee_payer_lamports, control.accounts_epoch) == (
        "supply_overflow",
        7_250_000,
        41,
    )
