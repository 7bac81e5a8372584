"""The operator admin: API keys issued with the plaintext shown once, revoked; meters suspended; readings browsed."""

import re
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.utils import timezone

from meters.models import ApiKey, Meter, MeterReading
from meters.services.api_keys import hash_key
from tests.factories import MeterFactory, ReadingFactory, UserFactory, api_key_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def shown_key(response) -> str:
    [text] = [str(m) for m in get_messages(response.wsgi_request) if "<code>gtk_" in str(m)]
    return re.search(r"<code>(gtk_[^<]+)</code>", text).group(1)


def test_issuing_a_fleet_key_shows_its_plaintext_once_and_stores_its_hash(operator):
    owner = UserFactory()

    response = operator.post("/admin/meters/apikey/add/", {"name": "aggregator", "scope": "fleet", "owner": owner.pk})

    assert response.status_code == 302
    key = ApiKey.objects.get(owner=owner)
    plaintext = shown_key(response)
    assert key.key_hash == hash_key(plaintext) and key.scope == "fleet" and key.name == "aggregator"
    first = operator.get(f"/admin/meters/apikey/{key.pk}/change/").content.decode()
    again = operator.get(f"/admin/meters/apikey/{key.pk}/change/").content.decode()
    assert plaintext in first  # the one message
    assert plaintext not in again and key.prefix in again


def test_issuing_a_device_key_needs_a_meter_of_the_owner(operator):
    owner, foreign = UserFactory(), MeterFactory()

    missing = operator.post("/admin/meters/apikey/add/", {"scope": "device", "owner": owner.pk})
    mismatched = operator.post("/admin/meters/apikey/add/", {"scope": "device", "owner": owner.pk, "meter": foreign.pk})
    fleet_with_meter = operator.post(
        "/admin/meters/apikey/add/", {"scope": "fleet", "owner": foreign.owner.pk, "meter": foreign.pk}
    )

    assert {missing.status_code, mismatched.status_code, fleet_with_meter.status_code} == {200}  # form redisplayed
    assert not ApiKey.objects.exists()


def test_a_device_key_issued_in_the_admin_works(operator, api, recent):
    meter = MeterFactory()
    response = operator.post(
        "/admin/meters/apikey/add/", {"scope": "device", "owner": meter.owner.pk, "meter": meter.pk}
    )

    from tests.meters.conftest import rfc3339

    submitted = api.post(
        "/api/meters/submit-reading",
        {"kwh_amount": "1", "reading_timestamp": rfc3339(recent)},
        format="json",
        HTTP_X_API_KEY=shown_key(response),
    )
    assert submitted.status_code == 201


def test_revoking_keys_in_the_admin(operator):
    meter = MeterFactory()
    key, _ = api_key_for(meter=meter)

    operator.post("/admin/meters/apikey/", {"action": "revoke", "_selected_action": [key.pk]})

    key.refresh_from_db()
    assert key.revoked_at is not None


def test_renaming_a_key_keeps_its_hash(operator):
    key, _ = api_key_for(meter=MeterFactory())

    operator.post(f"/admin/meters/apikey/{key.pk}/change/", {"name": "renamed"})

    stored = ApiKey.objects.get(pk=key.pk)
    assert (stored.name, stored.key_hash) == ("renamed", key.key_hash)


def test_suspending_and_activating_meters(operator):
    meters = MeterFactory.create_batch(2)
    ids = [m.pk for m in meters]

    operator.post("/admin/meters/meter/", {"action": "suspend", "_selected_action": ids})
    assert set(Meter.objects.values_list("status", flat=True)) == {"suspended"}
    operator.post("/admin/meters/meter/", {"action": "activate", "_selected_action": ids})
    assert set(Meter.objects.values_list("status", flat=True)) == {"active"}


def test_issuing_a_device_key_from_the_meter_list(operator):
    meter = MeterFactory()

    response = operator.post(
        "/admin/meters/meter/", {"action": "issue_device_key", "_selected_action": [meter.pk]}, follow=True
    )

    key = ApiKey.objects.get(meter=meter)
    assert key.key_hash == hash_key(shown_key(response))


@pytest.mark.parametrize(
    "query",
    ["", "?status__exact=pending", "?minted__exact=1", "?q={serial}", "?q={id}", "?reading_timestamp__year=2025"],
)
def test_the_reading_list_filters_and_searches(operator, query):
    reading = ReadingFactory()
    query = query.format(serial=reading.meter.serial, id=reading.pk)

    response = operator.get(f"/admin/meters/meterreading/{query}")

    assert response.status_code == 200
    if query != "?minted__exact=1" and "year" not in query:
        assert str(reading.pk) in response.content.decode()


def test_the_reading_search_is_exact_and_finds_a_batch_by_its_signature(operator):
    from minting.models import MintBatch

    batch = MintBatch.objects.create(
        signature="SearchSig", raw_transaction=b"\x01", last_valid_block_height=1, mint_address="Mint111"
    )
    minted, other = ReadingFactory(batch=batch), ReadingFactory()

    by_signature = operator.get(f"/admin/meters/meterreading/?q={batch.signature}").content.decode()
    by_prefix = operator.get(f"/admin/meters/meterreading/?q={minted.meter.serial[:-1]}").content.decode()

    assert str(minted.pk) in by_signature and str(other.pk) not in by_signature
    assert str(minted.pk) not in by_prefix and str(other.pk) not in by_prefix


def test_the_reading_list_filters_by_meter(operator):
    shown, hidden = ReadingFactory(), ReadingFactory()

    page = operator.get(f"/admin/meters/meterreading/?meter__id__exact={shown.meter_id}").content.decode()

    assert str(shown.pk) in page and str(hidden.pk) not in page


def test_admin_pages_render(operator):
    reading = ReadingFactory()
    key, _ = api_key_for(meter=reading.meter)
    for path in [
        f"/admin/meters/apikey/{key.pk}/change/",
        "/admin/meters/meter/",
        f"/admin/meters/meter/{reading.meter_id}/change/",
        f"/admin/meters/meterreading/{reading.pk}/change/",
        "/admin/meters/apikey/",
        "/admin/meters/apikey/add/",
        "/admin/meters/user/",
        f"/admin/meters/user/{reading.user_id}/change/",
    ]:
        assert operator.get(path).status_code == 200, path
    assert operator.get("/admin/meters/meterreading/add/").status_code == 403


# Readings are money records: the admin never deletes them, nor the meters and users they belong to (the
# foreign keys PROTECT them, and the admin refuses before it would list every protected reading on its
# confirmation page).


def test_readings_cannot_be_deleted_in_the_admin_even_by_a_superuser(operator):
    reading = ReadingFactory()
    readings_admin = admin.site._registry[MeterReading]

    changelist = operator.get("/admin/meters/meterreading/").content.decode()
    change_page = operator.get(f"/admin/meters/meterreading/{reading.pk}/change/").content.decode()
    delete_view = operator.get(f"/admin/meters/meterreading/{reading.pk}/delete/")
    confirmed = operator.post(f"/admin/meters/meterreading/{reading.pk}/delete/", {"post": "yes"})
    action = operator.post(
        "/admin/meters/meterreading/",
        {"action": "delete_selected", "_selected_action": [reading.pk], "post": "yes"},
    )

    assert 'value="delete_selected"' not in changelist and 'value="mint_now"' in changelist
    assert f"/admin/meters/meterreading/{reading.pk}/delete/" not in change_page
    assert (delete_view.status_code, confirmed.status_code) == (403, 403)
    assert action.status_code == 302  # "No action selected": the action does not exist here
    assert MeterReading.objects.filter(pk=reading.pk).exists()
    assert readings_admin.has_delete_permission(confirmed.wsgi_request) is False
    assert readings_admin.has_delete_permission(confirmed.wsgi_request, reading) is False


@pytest.mark.parametrize("kind", ["meter", "user"])
def test_a_meter_or_user_with_readings_cannot_be_deleted_in_the_admin(operator, kind):
    reading = ReadingFactory()
    target = reading.meter if kind == "meter" else reading.user
    base = f"/admin/meters/{kind}/"

    change_page = operator.get(f"{base}{target.pk}/change/").content.decode()
    delete_view = operator.get(f"{base}{target.pk}/delete/")
    confirmed = operator.post(f"{base}{target.pk}/delete/", {"post": "yes"})
    action = operator.post(base, {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"})

    assert f"{base}{target.pk}/delete/" not in change_page
    assert (delete_view.status_code, confirmed.status_code) == (403, 403)
    assert action.status_code == 302
    assert "have readings and cannot be deleted" in " ".join(str(m) for m in get_messages(action.wsgi_request))
    assert type(target).objects.filter(pk=target.pk).exists()
    assert MeterReading.objects.filter(pk=reading.pk).exists()


def test_a_meter_without_readings_can_still_be_deleted_in_the_admin(operator):
    meter, spare = MeterFactory(), MeterFactory()
    api_key_for(meter=meter)

    single = operator.post(f"/admin/meters/meter/{meter.pk}/delete/", {"post": "yes"})
    action = operator.post(
        "/admin/meters/meter/", {"action": "delete_selected", "_selected_action": [spare.pk], "post": "yes"}
    )

    assert (single.status_code, action.status_code) == (302, 302)
    assert not Meter.objects.filter(pk__in=[meter.pk, spare.pk]).exists()
    assert not ApiKey.objects.filter(meter_id=meter.pk).exists()


def test_a_selection_with_one_meter_with_readings_deletes_nothing(operator):
    reading, bare = ReadingFactory(), MeterFactory()

    operator.post(
        "/admin/meters/meter/",
        {"action": "delete_selected", "_selected_action": [reading.meter_id, bare.pk], "post": "yes"},
    )

    assert Meter.objects.filter(pk__in=[reading.meter_id, bare.pk]).count() == 2


# Meter data review: sources, statuses and flags to filter by, held readings approved or rejected, and the
# register baseline a replaced meter starts.


def changelist_ids(operator, query: str) -> set[str]:
    page = operator.get(f"/admin/meters/meterreading/{query}").content.decode()
    return {pk for pk in re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', page)}


def test_the_reading_list_filters_by_source_status_and_flag(operator):
    meter = MeterFactory()
    spike = ReadingFactory(meter=meter, status="held", flags=["spike"])
    both = ReadingFactory(meter=meter, flags=["clock_drift", "spike"], source="register")
    drift = ReadingFactory(meter=meter, flags=["clock_drift"])
    plain = ReadingFactory(meter=meter)

    assert changelist_ids(operator, "?flag=spike") == {str(spike.pk), str(both.pk)}
    assert changelist_ids(operator, "?flag=clock_drift") == {str(both.pk), str(drift.pk)}
    assert changelist_ids(operator, "?status__exact=held") == {str(spike.pk)}
    assert changelist_ids(operator, "?source__exact=register") == {str(both.pk)}
    assert changelist_ids(operator, "") == {str(r.pk) for r in (spike, both, drift, plain)}


def test_the_reading_list_shows_net_mintable_and_flags_and_filters_by_source(operator):
    reading = ReadingFactory(
        kwh_amount=Decimal("-0.250000000"), mintable_kwh=Decimal(0), status="recorded", flags=["gap"]
    )

    page = operator.get("/admin/meters/meterreading/").content.decode()

    assert 'href="?flag=spike"' in page and 'href="?source__exact=window"' in page
    assert 'href="?status__exact=held"' in page
    for cell in (
        '<td class="field-net_kwh">-0.25</td>',  # exact, without the column's trailing zeros
        '<td class="field-mintable">0</td>',
        '<td class="field-flag_list">gap</td>',
        f'<span class="gt-abbr" title="{reading.pk}">{str(reading.pk)[-8:]}</span>',  # the short id, whole on hover
        f'<td class="field-read_at nowrap">{reading.reading_timestamp:%Y-%m-%d %H:%M:%S}</td>',
    ):
        assert cell in page, cell


def test_readings_made_in_the_same_minute_have_different_short_ids(operator):
    """Reading ids are time-ordered (UUIDv7): their first digits are the time, the same for a minute's readings."""
    first, second = ReadingFactory(), ReadingFactory()
    assert str(first.pk)[:8] == str(second.pk)[:8]  # the time's digits: no way to tell them apart

    page = operator.get("/admin/meters/meterreading/").content.decode()

    shown = set(re.findall(r'<span class="gt-abbr" title="[0-9a-f-]{36}">([0-9a-f-]+)</span>', page))
    assert len(shown) == 2 and shown == {str(first.pk)[-8:], str(second.pk)[-8:]}


def test_approving_held_readings_releases_them_and_writes_an_audit_line(operator, caplog):
    held = ReadingFactory(status="held", flags=["spike"])
    minted = ReadingFactory(status="minted", minted=True, mint_tx_signature="Sig1", token_amount=1)

    with caplog.at_level("INFO", logger="meters.admin"):
        response = operator.post(
            "/admin/meters/meterreading/",
            {"action": "approve_held", "_selected_action": [held.pk, minted.pk]},
            follow=True,
        )

    held.refresh_from_db()
    minted.refresh_from_db()
    assert held.status == "pending" and minted.status == "minted"
    assert "1 held reading(s) approved." in [str(m) for m in response.context["messages"]]
    [record] = [r for r in caplog.records if r.name == "meters.admin"]
    assert (record.audit, record.decided, record.reading_ids) == ("readings_approved", 1, [str(held.pk)])
    assert record.actor == response.wsgi_request.user.get_username()


def test_rejecting_held_readings_refuses_them_for_good(operator, caplog):
    held = [ReadingFactory(status="held", flags=["capacity"]) for _ in range(2)]
    pending = ReadingFactory()

    with caplog.at_level("INFO", logger="meters.admin"):
        response = operator.post(
            "/admin/meters/meterreading/",
            {"action": "reject_held", "_selected_action": [r.pk for r in [*held, pending]]},
            follow=True,
        )

    assert {r.status for r in MeterReading.objects.filter(pk__in=[r.pk for r in held])} == {"rejected"}
    assert all("rejected by an operator" in r.last_error for r in MeterReading.objects.filter(status="rejected"))
    assert MeterReading.objects.get(pk=pending.pk).status == "pending"
    assert "2 held reading(s) rejected." in [str(m) for m in response.context["messages"]]
    [record] = [r for r in caplog.records if r.name == "meters.admin"]
    assert (record.audit, record.decided) == ("readings_rejected", 2)


def test_deciding_a_selection_without_held_readings_changes_nothing(operator):
    pending = ReadingFactory()

    response = operator.post(
        "/admin/meters/meterreading/", {"action": "approve_held", "_selected_action": [pending.pk]}, follow=True
    )

    assert MeterReading.objects.get(pk=pending.pk).status == "pending"
    assert "nothing decided" in " ".join(str(m) for m in response.context["messages"])


def test_a_replaced_meter_starts_a_new_register_baseline_now(operator, monkeypatch, caplog):
    from meters import selectors

    replaced, untouched = MeterFactory(), MeterFactory()
    selectors.meter_get("id", replaced.pk)  # cached, as a submission would leave it
    before = timezone.now()

    with caplog.at_level("INFO", logger="meters.admin"):
        operator.post("/admin/meters/meter/", {"action": "start_register_baseline", "_selected_action": [replaced.pk]})

    replaced.refresh_from_db()
    untouched.refresh_from_db()
    assert before <= replaced.register_baseline_at <= timezone.now()
    assert untouched.register_baseline_at is None
    assert selectors.meter_get("id", replaced.pk) == (selectors.meter_get("id", replaced.pk, fresh=True)[0], False)
    [record] = [r for r in caplog.records if r.name == "meters.admin"]
    assert (record.audit, record.meters) == ("meter_register_baseline", [replaced.serial])


def test_capacity_register_limit_and_vee_rules_are_edited_on_the_meter_page(operator):
    meter = MeterFactory()
    form = {
        "serial": meter.serial,
        "owner": meter.owner.pk,
        "wallet_address": meter.wallet_address,
        "public_key": "",
        "status": "active",
        "meter_type": "",
        "location": "",
        "zone_id": "",
        "created_at_0": "2025-01-01",
        "created_at_1": "00:00:00",
        "capacity_kw": "7.500",
        "register_max_kwh": "1000000",
        "vee_rules": '{"spike": "flag", "capacity": "reject"}',
    }

    refused = operator.post(f"/admin/meters/meter/{meter.pk}/change/", {**form, "vee_rules": '{"spike": "ignore"}'})
    meter.refresh_from_db()
    assert refused.status_code == 200 and "Unknown rule or action: spike=ignore" in refused.content.decode()
    assert meter.vee_rules == {} and meter.capacity_kw is None

    saved = operator.post(f"/admin/meters/meter/{meter.pk}/change/", form)

    meter.refresh_from_db()
    assert saved.status_code == 302
    assert (meter.capacity_kw, meter.register_max_kwh) == (Decimal("7.500"), Decimal("1000000"))
    assert meter.vee_rules == {"spike": "flag", "capacity": "reject"}


def test_token_amounts_show_in_tokens_with_their_base_units_and_batches_are_mint_batches(operator):
    from minting.models import MintBatch

    reading = ReadingFactory(status="minted", token_amount=2_500_000_000, mint_tx_signature="AdminSig1", minted=True)
    batch = MintBatch.objects.create(
        signature="AdminBatchSig",
        raw_transaction=b"\x01",
        last_valid_block_height=1,
        mint_address="Mint111",
        status="confirmed",
        reading_count=1,
        total_token_amount=12_345_678_901_234_567_891,  # more than 2**53 base units: exact, not a float
    )
    MeterReading.objects.filter(pk=reading.pk).update(batch=batch)

    index = operator.get("/admin/").content.decode()
    batches = operator.get("/admin/minting/mintbatch/").content.decode()
    detail = operator.get(f"/admin/minting/mintbatch/{batch.pk}/change/").content.decode()
    readings = operator.get("/admin/meters/meterreading/").content.decode()

    assert "Mint batches" in index and "Mint batchs" not in index
    cells = re.compile(r'<td class="field-([a-z_]+)">([^<]*)</td>')
    assert {"total_tokens": "12345678901.234567891", "total_base_units": "12345678901234567891"}.items() <= dict(
        cells.findall(batches)
    ).items()
    assert "12345678901.234567891" in detail and "2.500000000" in detail  # the batch and its reading inline
    # The signature cell: short, whole in its tooltip and in the copy button, and the admin's script that copies.
    assert 'title="AdminBatchSig"' in batches and 'class="gt-copy" data-copy="AdminBatchSig"' in batches
    assert "gridtoken/admin.js" in batches and "gridtoken/admin.css" in batches
    assert {"tokens_minted": "2.5", "token_base_units": "2500000000"}.items() <= dict(cells.findall(readings)).items()
