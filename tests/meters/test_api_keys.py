"""Fleet and device keys issued without the admin: ``manage.py api_key`` and the operator API
(/api/admin/api-keys), both through the one key service; the keys they issue work on the ingestion API."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from meters.models import ApiKey, MeterReading
from meters.services.api_keys import hash_key
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.meters.conftest import rfc3339
from tests.meters.test_schema import served_schema

pytestmark = pytest.mark.django_db
KEYS = "/api/admin/api-keys"


def command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def submit(key: str, meter, moment) -> int:
    body = {"meter_serial": meter.serial, "kwh_amount": "1.5", "reading_timestamp": rfc3339(moment)}
    return APIClient().post("/api/meters/submit-reading", body, format="json", HTTP_X_API_KEY=key).status_code


@pytest.fixture
def staff():
    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True))
    return client


# ---- manage.py api_key ---------------------------------------------------------------------------------


def test_the_command_issues_a_fleet_key_printed_once_and_stored_as_its_hash(recent):
    meter = MeterFactory()

    out, err = command("create", "--owner", meter.owner.username, "--scope", "fleet", "--name", "bridge")

    plaintext = out.strip()
    key = ApiKey.objects.get(owner=meter.owner)
    assert plaintext.startswith("gtk_") and key.key_hash == hash_key(plaintext)
    assert (key.scope, key.meter, key.name, key.prefix) == ("fleet", None, "bridge", plaintext[:12])
    assert key.prefix in err and plaintext not in err
    assert submit(plaintext, meter, recent) == 201  # a fleet key writes for the owner's meters
    listing, _ = command("list")
    assert key.prefix in listing and meter.owner.username in listing and plaintext not in listing


def test_the_command_issues_a_device_key_for_a_serial_of_the_owner():
    meter = MeterFactory()

    out, _ = command("create", "--owner", meter.owner.username, "--scope", "device", "--meter", meter.serial)

    key = ApiKey.objects.get(key_hash=hash_key(out.strip()))
    assert (key.scope, key.meter_id) == ("device", meter.pk)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--owner", "nobody"], "unknown_owner"),
        (["--owner", "{owner}", "--scope", "device"], "validation_error"),  # a device key needs its meter
        (["--owner", "{owner}", "--scope", "device", "--meter", "NO-SUCH"], "unknown_meter"),
        (["--owner", "{owner}", "--scope", "device", "--meter", "{foreign}"], "validation_error"),
        (["--owner", "{owner}", "--meter", "{own}"], "validation_error"),  # fleet keys have no meter
    ],
)
def test_the_command_refuses_what_the_key_rules_refuse_and_issues_nothing(args, code):
    meter, foreign = MeterFactory(), MeterFactory()
    names = {"owner": meter.owner.username, "foreign": foreign.serial, "own": meter.serial}

    with pytest.raises(CommandError, match=f"^{code}: "):
        command("create", *[arg.format(**names) for arg in args])

    assert not ApiKey.objects.exists()


def test_the_command_revokes_by_prefix_and_the_key_stops_working(recent):
    meter = MeterFactory()
    key, plaintext = api_key_for(owner=meter.owner)
    other, _ = api_key_for(owner=meter.owner)

    out, _ = command("revoke", key.prefix)
    again, _ = command("revoke", str(key.pk))

    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked_at is not None and other.revoked_at is None
    assert "revoked at" in out and "already revoked" in again
    assert submit(plaintext, meter, recent) == 401
    assert key.prefix not in command("list")[0] and key.prefix in command("list", "--all")[0]
    with pytest.raises(CommandError, match=r"^api_key_not_found: "):
        command("revoke", "gtk_NotAKey1")


# ---- the operator API ----------------------------------------------------------------------------------


def test_an_operator_issues_a_fleet_key_shown_once_in_the_201(staff, recent):
    meter = MeterFactory()

    response = staff.post(KEYS, {"owner": meter.owner.username, "name": "aggregator"}, format="json")

    assert response.status_code == 201
    body = response.json()
    key = ApiKey.objects.get(pk=body["id"])
    assert key.key_hash == hash_key(body["api_key"]) and key.scope == "fleet" and key.meter is None
    assert body | {"api_key": None, "created_at": None} == {
        "id": str(key.pk),
        "prefix": body["api_key"][:12],
        "name": "aggregator",
        "scope": "fleet",
        "owner": meter.owner.username,
        "owner_id": str(meter.owner.pk),
        "meter_serial": None,
        "created_at": None,
        "last_used_at": None,
        "revoked_at": None,
        "active": True,
        "api_key": None,
    }
    assert body["created_at"].endswith("Z")
    assert submit(body["api_key"], meter, recent) == 201
    assert MeterReading.objects.filter(meter=meter).count() == 1
    listed = staff.get(KEYS).json()["api_keys"]
    assert [k["id"] for k in listed] == [str(key.pk)] and "api_key" not in listed[0]
    assert body["api_key"] not in staff.get(KEYS).content.decode()


def test_an_operator_issues_a_device_key_for_a_meter_serial(staff):
    meter = MeterFactory()

    response = staff.post(
        KEYS, {"owner": meter.owner.username, "scope": "device", "meter": meter.serial}, format="json"
    )

    assert response.status_code == 201 and response.json()["meter_serial"] == meter.serial
    assert ApiKey.objects.get(pk=response.json()["id"]).meter_id == meter.pk


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"owner": "nobody"}, "unknown_owner", "owner"),
        ({"owner": "{inactive}"}, "owner_inactive", "owner"),
        ({"owner": "{owner}", "scope": "device"}, "validation_error", "meter"),
        ({"owner": "{owner}", "scope": "device", "meter": "NO-SUCH"}, "unknown_meter", "meter"),
        ({"owner": "{owner}", "scope": "device", "meter": "{foreign}"}, "validation_error", "meter"),
        ({"owner": "{owner}", "scope": "root"}, "validation_error", "scope"),
        ({}, "validation_error", "owner"),
    ],
)
def test_issuing_refuses_with_a_stable_400_code_and_issues_nothing(staff, body, code, field):
    meter, foreign = MeterFactory(), MeterFactory()
    inactive = UserFactory(is_active=False)
    names = {"owner": meter.owner.username, "foreign": foreign.serial, "inactive": inactive.username}

    response = staff.post(KEYS, {k: v.format(**names) for k, v in body.items()}, format="json")

    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"].get("field")) == (code, field)
    assert not ApiKey.objects.exists()


def test_the_api_takes_json_only(staff):
    owner = UserFactory()

    response = staff.post(KEYS, {"owner": owner.username}, format="multipart")

    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    assert not ApiKey.objects.exists()


def test_listing_filters_by_owner_scope_and_state(staff):
    meter = MeterFactory()
    fleet, _ = api_key_for(owner=meter.owner)
    device, _ = api_key_for(meter=meter)
    elsewhere, _ = api_key_for(owner=UserFactory())
    staff.delete(f"{KEYS}/{elsewhere.prefix}")

    def ids(query: str) -> set[str]:
        response = staff.get(f"{KEYS}{query}")
        assert response.status_code == 200
        return {k["id"] for k in response.json()["api_keys"]}

    assert ids("") == {str(fleet.pk), str(device.pk), str(elsewhere.pk)}
    assert ids(f"?owner={meter.owner.username}") == {str(fleet.pk), str(device.pk)}
    assert ids("?scope=device") == {str(device.pk)}
    assert ids("?active=false") == {str(elsewhere.pk)}
    assert ids("?active=true&scope=fleet") == {str(fleet.pk)}


def test_an_operator_revokes_by_prefix_or_id_and_the_key_stops_working(staff, recent):
    meter = MeterFactory()
    key, plaintext = api_key_for(owner=meter.owner)
    second, second_plaintext = api_key_for(owner=meter.owner)

    deleted = staff.delete(f"{KEYS}/{key.prefix}")
    posted = staff.post(f"{KEYS}/{second.pk}/revoke")
    again = staff.post(f"{KEYS}/{second.pk}/revoke")

    assert (deleted.status_code, posted.status_code, again.status_code) == (200, 200, 200)
    assert deleted.json()["active"] is False and deleted.json()["revoked_at"].endswith("Z")
    assert again.json()["revoked_at"] == posted.json()["revoked_at"]  # the first revocation time is kept
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 0 and ApiKey.objects.count() == 2
    assert submit(plaintext, meter, recent) == 401
    assert submit(second_plaintext, meter, recent + timedelta(hours=1)) == 401


def test_revoking_an_unknown_or_ambiguous_key_is_a_stable_4xx(staff):
    owner = UserFactory()
    first, _ = api_key_for(owner=owner)
    second, _ = api_key_for(owner=owner)
    ApiKey.objects.filter(pk=second.pk).update(prefix=first.prefix)  # two keys sharing 48 random bits

    unknown = staff.delete(f"{KEYS}/gtk_NotAKey1")
    not_a_ref = staff.delete(f"{KEYS}/whatever")
    ambiguous = staff.delete(f"{KEYS}/{first.prefix}")

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "api_key_not_found")
    assert (not_a_ref.status_code, not_a_ref.json()["error"]["code"]) == (404, "api_key_not_found")
    assert (ambiguous.status_code, ambiguous.json()["error"]["code"]) == (409, "api_key_ambiguous")
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_only_operators_may_manage_keys(meter, fleet_key, user_token):
    anonymous, producer, with_fleet_key = APIClient(), APIClient(), APIClient()
    producer.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token}")
    with_fleet_key.credentials(HTTP_X_API_KEY=fleet_key)
    body = {"owner": meter.owner.username}

    assert anonymous.post(KEYS, body, format="json").status_code == 401
    refused = producer.post(KEYS, body, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert producer.get(KEYS).status_code == 403
    # A fleet key is not a credential these views accept: it is ignored, the caller is anonymous.
    assert with_fleet_key.post(KEYS, body, format="json").status_code == 401
    key = ApiKey.objects.get()
    assert producer.delete(f"{KEYS}/{key.prefix}").status_code == 403
    assert ApiKey.objects.count() == 1 and ApiKey.objects.get().revoked_at is None


def test_an_operator_token_works_like_an_admin_session(meter):
    operator = UserFactory(is_staff=True)
    credentials = {"username": operator.username, "password": "password"}
    token = APIClient().post("/api/auth/token", credentials, format="json").json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token['token']}")

    assert client.post(KEYS, {"owner": meter.owner.username}, format="json").status_code == 201


def test_the_schema_documents_the_operations_with_request_and_response_bodies(client):
    schema = served_schema(client)

    create = schema["paths"][KEYS]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OperatorApiKeyCreateInput"
    }
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OperatorApiKeyIssued"
    }
    listing = schema["paths"][KEYS]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"owner", "scope", "active", "limit"}
    assert "200" in listing["responses"]
    assert "200" in schema["paths"][f"{KEYS}/{{key}}"]["delete"]["responses"]
    assert "200" in schema["paths"][f"{KEYS}/{{key}}/revoke"]["post"]["responses"]
    assert "api_key" in schema["components"]["schemas"]["OperatorApiKeyIssued"]["properties"]
    assert "api_key" not in schema["components"]["schemas"]["OperatorApiKey"]["properties"]
