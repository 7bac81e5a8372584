"""Every registered ModelAdmin, walked as a superuser with empty and garbage input: never a 500, and no row
created, changed or deleted where the admin forbids it.

The walk iterates ``admin.site._registry``, so an admin registered later is walked too. ``samples`` puts one
row of every model it knows in the database, written by the services where that is cheap; a model it does not
know yet is still walked on its list, its add page and the change and delete pages of a missing and a malformed
primary key.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.authtoken.models import Token

from certificates.models import CertificateBundle, CertificateMint, ChainOperation, Issuance
from certificates.services.issuance import certificates_issue_due
from gridtoken.admin import TAMPERED_SELECTION
from meters.archive.models import ArchivedPartition
from meters.models import DeadLetter, Meter, MeterReading
from meters.services.dead_letters import Origin, dead_letter_record
from minting.models import MintBatch, TokenMint
from minting.services.control import control_get
from tests.certificates.helpers import add_readings, close_hour, make_device
from tests.factories import ReadingFactory, UserFactory, api_key_for

pytestmark = pytest.mark.django_db

# Written only by services (ingestion, the minting pipeline, chain_init, the certificate registry): the admin
# shows them and acts on them through actions, and never adds, edits or deletes one by hand.
SERVICE_WRITTEN = (
    MeterReading,
    MintBatch,
    TokenMint,
    CertificateMint,
    Issuance,
    CertificateBundle,
    ChainOperation,
    DeadLetter,
    ArchivedPartition,
)

GARBAGE = (
    "",
    "\x00",
    "x" * 5000,
    "1e999999999",
    "-1e999999999",
    "NaN",
    "-Infinity",
    "-0",
    "9" * 400,
    "0.000000000000000000000000001",
    "2026-13-45",
    "not-a-uuid",
    "' OR 1=1 --",
    '{"spike": "flag"',
    "[" * 50_000 + "]" * 50_000,
)
# Refused before any form is read: no permission, or a body past DATA_UPLOAD_MAX_MEMORY_SIZE.
FORBIDDEN = (403, 400)
# A URL carries less: the values that reach a lookup, a date or a page number.
QUERY_GARBAGE = ("", "not-a-uuid", "1e999999999", "NaN", "-1", "9" * 400, "2026-13-45", "x" * 2000, "' OR 1=1 --")

REGISTRY = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)
MODEL_IDS = [model._meta.label for model, _ in REGISTRY]


class FormFields(HTMLParser):
    """The names of the inputs, selects and textareas of an admin page, and its changelist's query links."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.queries: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag in ("input", "select", "textarea") and name and attrs.get("type") != "submit" and name not in self.names:
            self.names.append(name)
        if tag == "a" and (attrs.get("href") or "").startswith("?"):
            self.queries.add(attrs["href"][1:])


def parsed(response) -> FormFields:
    page = FormFields()
    page.feed(response.content.decode())
    return page


@pytest.fixture
def superuser(samples):
    return samples


@pytest.fixture
def operator(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture(scope="module")
def samples(django_db_setup, django_db_blocker):
    """One row of each model the admin shows, the registry's through its own services: written and committed
    once for the module (each test runs in its own transaction, rolled back, so a test that deletes or edits
    rows leaves the next one the same rows), and flushed afterwards as a transactional test's rows are. Returns
    the superuser who walks (hashing a password costs more than a page, so one for all tests)."""
    with django_db_blocker.unblock():
        superuser = UserFactory(is_staff=True, is_superuser=True)
        reading = ReadingFactory()
        api_key_for(meter=reading.meter)
        Group.objects.create(name="operators")
        Token.objects.create(user=reading.user)
        control_get()
        TokenMint.objects.create(address="Mint111", decimals=9, token_program="Tok", authority="Auth", rpc_url="x")
        CertificateMint.objects.create(address="Cert111", token_program="Tok22", authority="Auth", rpc_url="x")
        MintBatch.objects.create(
            signature="Sig111", raw_transaction=b"raw", last_valid_block_height=1, mint_address="M"
        )
        dead_letter_record(
            origin=Origin(door="mqtt", topic="gridtoken/meters/M-1/readings", payload=b"{}"), error=KeyError("x")
        )
        device = make_device()
        add_readings(device, 0, ["1"])
        close_hour(device, 0)
        certificates_issue_due()
        assert CertificateBundle.objects.exists() and ChainOperation.objects.exists()
    yield superuser
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


def snapshot(model) -> list[dict]:
    return list(model._default_manager.order_by("pk").values())


def permissions(model_admin, superuser) -> tuple[bool, bool, bool]:
    request = RequestFactory().get("/admin/")
    request.user = superuser
    return (
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request),
        model_admin.has_delete_permission(request),
    )


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def no_server_error(response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code}"


def test_saving_an_empty_certificate_mint_form_stores_no_mint(operator):
    before = snapshot(CertificateMint)

    response = operator.post(url(CertificateMint, "add"), {})

    assert response.status_code == 403
    assert snapshot(CertificateMint) == before


def test_an_action_posted_with_an_altered_selection_does_nothing_and_says_so(operator, samples):
    meter = Meter.objects.order_by("pk").first()

    response = operator.post(
        url(Meter, "changelist"), {"action": "suspend", "_selected_action": [str(meter.pk), "not-a-uuid"]}, follow=True
    )

    assert [str(message) for message in response.context["messages"]] == [TAMPERED_SELECTION]
    meter.refresh_from_db()
    assert meter.status == Meter.Status.ACTIVE


@pytest.mark.parametrize("model", SERVICE_WRITTEN, ids=lambda model: model._meta.label)
def test_service_written_records_have_no_add_change_or_delete_but_stay_visible(model, superuser):
    model_admin = admin.site._registry[model]
    request = RequestFactory().get("/admin/")
    request.user = superuser

    assert permissions(model_admin, superuser) == (False, False, False)
    assert model_admin.has_view_permission(request)
    assert "delete_selected" not in model_admin.get_actions(request)


@pytest.mark.parametrize(("model", "model_admin"), REGISTRY, ids=MODEL_IDS)
def test_the_changelist_answers_every_search_filter_and_garbage_query(model, model_admin, operator, samples):
    changelist = url(model, "changelist")
    page = operator.get(changelist)
    assert page.status_code == 200
    queries = parsed(page).queries | {"o=garbage", "p=99999999", "_facets=True"}
    for query in sorted(queries):
        no_server_error(operator.get(f"{changelist}?{query}"), f"{changelist}?{query}")
    parameters = {name for query in queries for name, _ in parse_qsl(query)}
    if model_admin.search_fields:
        parameters.add("q")
    for name in sorted(parameters):
        for value in QUERY_GARBAGE:
            garbled = f"{changelist}?{urlencode({name: value})}"
            no_server_error(operator.get(garbled), garbled)


@pytest.mark.parametrize(("model", "model_admin"), REGISTRY, ids=MODEL_IDS)
def test_the_add_page_refuses_empty_and_garbage_forms_without_a_server_error(
    model, model_admin, operator, superuser, samples
):
    may_add = permissions(model_admin, superuser)[0]
    before = snapshot(model)
    page = operator.get(url(model, "add"))
    assert page.status_code == (200 if may_add else 403)
    names = parsed(page).names or [field.name for field in model._meta.fields]

    for value in GARBAGE:
        response = operator.post(url(model, "add"), dict.fromkeys(names, value))
        no_server_error(response, f"add {value[:20]!r}")
        if not may_add:
            assert response.status_code in FORBIDDEN
            assert snapshot(model) == before


def _editable_rows(model) -> list:
    """The primary key the admin's URLs use (a proxy may present another one: DRF's token is its user's)."""
    return [row.pk for row in model._default_manager.order_by("pk")[:1]]


@pytest.mark.parametrize(("model", "model_admin"), REGISTRY, ids=MODEL_IDS)
def test_the_change_page_refuses_garbage_and_forbidden_edits_change_nothing(
    model, model_admin, operator, superuser, samples
):
    may_change = permissions(model_admin, superuser)[1]
    for missing in ("00000000-0000-0000-0000-000000000000", "999999", "not-a-pk"):
        no_server_error(operator.get(url(model, "change", missing)), f"change {missing}")
        no_server_error(operator.post(url(model, "change", missing), {}), f"change {missing}")

    for pk in _editable_rows(model):
        before = snapshot(model)
        page = operator.get(url(model, "change", pk))
        assert page.status_code == 200
        names = parsed(page).names or [field.name for field in model._meta.fields]
        for value in GARBAGE:
            response = operator.post(url(model, "change", pk), dict.fromkeys(names, value))
            no_server_error(response, f"change {value[:20]!r}")
            if not may_change:
                assert response.status_code in FORBIDDEN
                assert snapshot(model) == before
        no_server_error(operator.post(url(model, "change", pk), {}), "change, empty form")
        if not may_change:
            assert snapshot(model) == before


@pytest.mark.parametrize(("model", "model_admin"), REGISTRY, ids=MODEL_IDS)
def test_the_delete_page_and_action_delete_nothing_the_admin_forbids(model, model_admin, operator, superuser, samples):
    may_delete = permissions(model_admin, superuser)[2]
    for missing in ("00000000-0000-0000-0000-000000000000", "999999", "not-a-pk"):
        no_server_error(operator.post(url(model, "delete", missing), {"post": "yes"}), f"delete {missing}")

    before = snapshot(model)
    selected = [str(row.pk) for row in model._default_manager.all()]
    for action in ("delete_selected", "garbage"):
        response = operator.post(
            url(model, "changelist"), {"action": action, "_selected_action": selected, "post": "yes"}
        )
        no_server_error(response, f"action {action}")
    request = RequestFactory().get("/admin/")
    request.user = superuser
    untouched = snapshot(model)
    for action in [*model_admin.get_actions(request), "garbage"]:
        for value in GARBAGE:  # a tampered form: the selection names no row of this model
            response = operator.post(
                url(model, "changelist"), {"action": action, "_selected_action": [value], "post": "yes"}
            )
            no_server_error(response, f"action {action} on {value[:20]!r}")
            assert snapshot(model) == untouched, f"action {action} on {value[:20]!r}"
    for pk in _editable_rows(model):
        response = operator.post(url(model, "delete", pk), {"post": "yes"})
        no_server_error(response, "delete")
        if not may_delete:
            assert response.status_code == 403
    if not may_delete:
        assert snapshot(model) == before
