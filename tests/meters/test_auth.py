"""Credentials: user tokens, device and fleet API keys, revocation, last use, and the 401/403 answers."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from meters.models import ApiKey, MeterReading
from meters.services import api_keys
from meters.services.api_keys import api_key_revoke
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.meters.conftest import rfc3339

SUBMIT = "/api/meters/submit-reading"
pytestmark = pytest.mark.django_db


def reading(meter, moment):
    return {"meter_serial": meter.serial, "kwh_amount": "1", "reading_timestamp": rfc3339(moment)}


def test_a_user_gets_a_token_for_a_correct_password(post, meter):
    response = post("/api/auth/token", {"username": meter.owner.username, "password": "password"})

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=meter.owner).key, "user_id": str(meter.owner_id)}


def test_the_same_token_comes_back_on_the_next_login(post, meter):
    first = post("/api/auth/token", {"username": meter.owner.username, "password": "password"}).json()["token"]
    second = post("/api/auth/token", {"username": meter.owner.username, "password": "password"}).json()["token"]

    assert first == second and Token.objects.filter(user=meter.owner).count() == 1


def test_a_blank_password_is_a_validation_error(post, meter):
    response = post("/api/auth/token", {"username": meter.owner.username, "password": ""})

    assert response.status_code == 400 and response.json()["error"]["field"] == "password"
    assert not Token.objects.exists()


def test_a_wrong_password_answers_401_with_www_authenticate(post, meter):
    response = post("/api/auth/token", {"username": meter.owner.username, "password": "nope"})

    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_credentials"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert not Token.objects.exists()


def test_an_inactive_user_gets_no_token(post):
    user = UserFactory(is_active=False)

    response = post("/api/auth/token", {"username": user.username, "password": "password"})

    assert response.status_code == 401 and not Token.objects.exists()


def test_a_stale_authorization_header_does_not_block_logging_in(post, meter):
    response = post(
        "/api/auth/token",
        {"username": meter.owner.username, "password": "password"},
        HTTP_AUTHORIZATION="Bearer expired-garbage",
    )

    assert response.status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer"])
def test_a_user_token_works_under_either_keyword(api, user_token, scheme):
    response = api.get("/api/meters/stats", HTTP_AUTHORIZATION=f"{scheme} {user_token}")

    assert response.status_code == 200


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_an_api_key_works_as_x_api_key_or_bearer(post, meter, device_key, recent, header):
    value = device_key if header == "HTTP_X_API_KEY" else f"Bearer {device_key}"

    response = post(SUBMIT, reading(meter, recent), **{header: value})

    assert response.status_code == 201 and MeterReading.objects.filter(meter=meter).count() == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"},
    ],
)
def test_no_credentials_is_401_not_authenticated(post, meter, recent, headers):
    response = post(SUBMIT, reading(meter, recent), **headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_X_API_KEY": "gtk_unknown"},
        {"HTTP_X_API_KEY": ""},
        {"HTTP_X_API_KEY": "\u00ff\u00fe"},
        {"HTTP_AUTHORIZATION": "Bearer gtk_unknown"},
        {"HTTP_AUTHORIZATION": "Bearer 0123456789abcdef0123456789abcdef01234567"},
        {"HTTP_AUTHORIZATION": "Token"},
        {"HTTP_AUTHORIZATION": "Token a b"},
        {"HTTP_AUTHORIZATION": "Bearer \u00e9t\u00e9"},
    ],
)
def test_invalid_credentials_are_401_invalid_credentials(post, meter, recent, headers):
    response = post(SUBMIT, reading(meter, recent), **headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert not MeterReading.objects.exists()


def test_a_revoked_key_is_refused_at_once(post, meter, recent):
    key, raw = api_key_for(meter=meter)
    assert post(SUBMIT, reading(meter, recent), key=raw).status_code == 201

    api_key_revoke(key=key)
    response = post(SUBMIT, reading(meter, recent + timedelta(hours=1)), key=raw)

    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
    assert MeterReading.objects.count() == 1


def test_a_key_revoked_elsewhere_is_refused_once_the_cache_entry_expires(post, meter, recent):
    key, raw = api_key_for(meter=meter)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # as another process would

    response = post(SUBMIT, reading(meter, recent), key=raw)

    assert response.status_code == 401 and not MeterReading.objects.exists()


def test_revoking_twice_keeps_the_first_time(meter):
    key, _ = api_key_for(meter=meter)
    first = api_key_revoke(key=key).revoked_at

    assert api_key_revoke(key=key).revoked_at == first


def test_the_key_of_an_inactive_owner_is_refused(post, meter, recent):
    _, raw = api_key_for(meter=meter)
    type(meter.owner).objects.filter(pk=meter.owner_id).update(is_active=False)

    assert post(SUBMIT, reading(meter, recent), key=raw).status_code == 401


def test_last_used_is_recorded_at_most_once_a_minute(post, meter, recent):
    key, raw = api_key_for(meter=meter)

    post(SUBMIT, reading(meter, recent), key=raw)
    key.refresh_from_db()
    first_use = key.last_used_at
    post(SUBMIT, reading(meter, recent + timedelta(hours=1)), key=raw)
    key.refresh_from_db()

    assert first_use is not None and key.last_used_at == first_use


def test_last_used_moves_when_the_previous_write_is_over_a_minute_old(post, meter, recent):
    key, raw = api_key_for(meter=meter)
    long_ago = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=long_ago)

    post(SUBMIT, reading(meter, recent), key=raw)

    key.refresh_from_db()
    assert key.last_used_at > long_ago


def test_keys_are_stored_only_as_a_hash(meter):
    key, raw = api_key_for(meter=meter)

    assert raw.startswith("gtk_") and len(raw) > 40
    assert key.key_hash == api_keys.hash_key(raw) and raw not in (key.key_hash, key.prefix)
    assert key.prefix == raw[:12]


def test_a_device_key_must_belong_to_a_meter_of_its_owner(meter):
    from gridtoken.exceptions import ValidationFailed

    with pytest.raises(ValidationFailed):
        api_keys.api_key_create(owner=meter.owner, scope="device")
    with pytest.raises(ValidationFailed):
        api_keys.api_key_create(owner=meter.owner, scope="fleet", meter=meter)
    with pytest.raises(ValidationFailed):
        api_keys.api_key_create(owner=UserFactory(), scope="device", meter=meter)
    with pytest.raises(ValidationFailed):
        api_keys.api_key_create(owner=meter.owner, scope="admin")
    assert not ApiKey.objects.exists()


def test_a_session_login_can_read(api, meter):
    api.force_login(meter.owner)

    assert api.get("/api/meters/stats").status_code == 200


def test_a_session_post_without_csrf_is_refused(meter, recent):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(meter.owner)

    response = client.post(SUBMIT, reading(meter, recent), format="json")

    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert not MeterReading.objects.exists()


def test_each_user_only_reaches_their_own_meters_with_their_token(post, recent):
    mine, theirs = MeterFactory(), MeterFactory()
    token = Token.objects.create(user=mine.owner).key

    assert post(SUBMIT, reading(theirs, recent), token=token).status_code == 403
    assert post(SUBMIT, reading(mine, recent), token=token).status_code == 201
