"""A certificate operation that cannot be built costs that operation an attempt (or fails it, when it never can
be built), never the other operations' mints, and is never retried forever. Against the local chain.

The unexpected error is injected by wrapping the real instruction builder for one operation: no real input
triggers an unknown bug, and building runs after the claim and before its commit. The unusable wallet is real:
a legacy row the registry's own checks would refuse today.
"""

import dataclasses
import logging
import os
from collections import defaultdict

import pytest
from django.core.management import call_command
from django.utils import timezone

from certificates.models import ChainOperation
from certificates.services import chain as certificate_chain
from certificates.services.chain import certificate_client, operations_drain
from gridtoken import observability
from minting.services.control import control_get
from tests.certificates.test_chain import issue
from tests.factories import UserFactory
from tests.minting.pipeline_harness import use_chain

pytestmark = pytest.mark.django_db
SYSTEM_PROGRAM = "11111111111111111111111111111111"  # a valid key, but no wallet: parse_wallet refuses it


@pytest.fixture
def chain(settings, localnet, tmp_path):
    chain = use_chain(settings, localnet, tmp_path)
    call_command("certificates_chain_init", "--new-mint", stdout=open(os.devnull, "w"))  # noqa: SIM115
    return chain


@pytest.fixture
def poisoned(monkeypatch):
    """Building raises for the operations whose ids are put in the returned set, as a bug would."""
    ids: set = set()
    real = certificate_chain._instructions

    def instructions(client, op, missing):
        if op.id in ids:
            raise ArithmeticError("a bug nobody saw coming")
        return real(client, op, missing)

    monkeypatch.setattr(certificate_chain, "_instructions", instructions)
    return ids


def assert_minted_once(operations: list[ChainOperation]) -> None:
    """Each operation confirmed, and the chain holds exactly their Wh: per wallet and in supply."""
    client = certificate_client()
    held: dict[str, int] = defaultdict(int)
    for op in operations:
        op.refresh_from_db()
        assert (op.status, op.batch.status) == ("confirmed", "confirmed")
        held[op.mint_to] += op.amount_wh
    assert {wallet: client.token_balance(wallet) for wallet in held} == held
    assert client.token_supply() == sum(held.values())


def test_an_unexpected_error_for_one_operation_costs_it_an_attempt_and_every_other_operation_is_minted(
    chain, poisoned, mint_internal_errors_counter, caplog
):
    issue(devices=3, hours=2)
    operations = list(ChainOperation.objects.order_by("created_at", "id"))
    bad = operations[3]
    poisoned.add(bad.id)

    with caplog.at_level(logging.ERROR, logger="certificates.chain"):
        result = operations_drain()

    assert (result.claimed, result.confirmed, result.retried) == (6, 5, 1)
    bad.refresh_from_db()
    assert (bad.status, bad.attempts, bad.batch_id, bad.signature) == ("pending", 1, None, "")
    assert bad.last_error == "internal_error: ArithmeticError: a bug nobody saw coming"
    assert bad.next_attempt_at > timezone.now()
    others = [op for op in operations if op.id != bad.id]
    assert_minted_once(others)
    assert {op.attempts for op in others} == {0}
    assert control_get().chain_failures == 0  # the platform is fine: reading minting goes on
    [logged] = [r for r in caplog.records if r.getMessage() == "a certificate operation raised an unexpected error"]
    assert logged.exc_info is not None and logged.operation_id == str(bad.id)
    assert observability.mint_internal_error_count() == 1
    assert operations_drain().claimed == 0  # it waits out its back-off


def test_an_operation_minting_to_an_unusable_wallet_is_failed_at_once_and_the_others_are_minted(
    chain, mint_internal_errors_counter
):
    issue(devices=3, hours=1)
    operations = list(ChainOperation.objects.order_by("created_at", "id"))
    bad = operations[1]
    ChainOperation.objects.filter(id=bad.id).update(mint_to=SYSTEM_PROGRAM)

    result = operations_drain()

    assert (result.claimed, result.confirmed, result.retried) == (3, 2, 0)
    bad.refresh_from_db()
    assert (bad.status, bad.attempts, bad.batch_id) == ("failed", 1, None)
    assert bad.last_error.startswith(f"refused by the chain: {SYSTEM_PROGRAM!r} is not a usable wallet")
    assert_minted_once([op for op in operations if op.id != bad.id])
    assert observability.mint_internal_error_count() == 0  # a refused wallet is no bug
    assert operations_drain().claimed == 0


def test_an_operation_that_keeps_failing_is_failed_after_its_last_attempt_and_the_admin_retry_mints_it(
    chain, poisoned, mint_internal_errors_counter, settings, client
):
    settings.TOKENIZATION = dataclasses.replace(settings.TOKENIZATION, max_retry_attempts=3)
    (issuance,) = issue(devices=1, hours=1)
    bad = issuance.operations.get()
    ChainOperation.objects.filter(id=bad.id).update(attempts=2)
    poisoned.add(bad.id)

    assert operations_drain().claimed == 1
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("failed", 3)
    assert bad.last_error.startswith("internal_error: ")
    assert operations_drain().claimed == 0  # never claimed again by itself

    poisoned.clear()  # the bug is fixed: the operator retries it from the admin
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    client.post(
        "/admin/certificates/chainoperation/", {"action": "retry", "_selected_action": [str(bad.id)]}, follow=True
    )
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("pending", 0)
    assert operations_drain().confirmed == 1
    assert_minted_once([bad])
