"""Write rate limits per API key and per user, in the real Redis; reads are never limited."""

import dataclasses
import logging
from datetime import timedelta

import pytest

from meters import ratelimit
from meters.models import MeterReading
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.meters.conftest import rfc3339

SUBMIT = "/api/meters/submit-reading"
pytestmark = pytest.mark.django_db


def reading(meter, moment):
    return {"meter_serial": meter.serial, "kwh_amount": "1", "reading_timestamp": rfc3339(moment)}


def test_writes_over_the_key_limit_get_429_with_retry_after(post, meter, device_key, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=2, rate_limit_user_per_min=0)

    codes = [
        post(SUBMIT, reading(meter, recent + timedelta(minutes=15 * i)), key=device_key).status_code for i in range(3)
    ]
    response = post(SUBMIT, reading(meter, recent + timedelta(hours=1)), key=device_key)

    assert codes == [201, 201, 429]
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 120
    assert response.json()["error"]["details"] == {"retry_after": int(response["Retry-After"])}
    assert MeterReading.objects.count() == 2


def test_another_key_of_the_same_user_has_its_own_key_budget(post, meter, device_key, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=1, rate_limit_user_per_min=0)
    _, fleet = api_key_for(owner=meter.owner)

    assert post(SUBMIT, reading(meter, recent), key=device_key).status_code == 201
    assert post(SUBMIT, reading(meter, recent + timedelta(hours=1)), key=device_key).status_code == 429
    assert post(SUBMIT, reading(meter, recent + timedelta(hours=2)), key=fleet).status_code == 201


def test_the_user_limit_spans_all_of_a_users_keys(post, meter, device_key, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=0, rate_limit_user_per_min=2)
    _, fleet = api_key_for(owner=meter.owner)

    post(SUBMIT, reading(meter, recent), key=device_key)
    post(SUBMIT, reading(meter, recent + timedelta(hours=1)), key=fleet)
    response = post(SUBMIT, reading(meter, recent + timedelta(hours=2)), key=fleet)

    assert response.status_code == 429 and "user" in response.json()["error"]["message"]
    assert MeterReading.objects.count() == 2


def test_the_user_limit_applies_to_token_writes(post, meter, user_token, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=0, rate_limit_user_per_min=1)

    assert post(SUBMIT, reading(meter, recent), token=user_token).status_code == 201
    assert post(SUBMIT, reading(meter, recent + timedelta(hours=1)), token=user_token).status_code == 429


def test_users_do_not_share_a_budget(post, meter, device_key, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=1, rate_limit_user_per_min=1)
    other = MeterFactory()
    _, other_key = api_key_for(meter=other)

    post(SUBMIT, reading(meter, recent), key=device_key)

    assert post(SUBMIT, reading(other, recent), key=other_key).status_code == 201


def test_a_batch_counts_as_one_write(post, meter, fleet_key, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=1, rate_limit_user_per_min=0)
    batch = {"readings": [reading(meter, recent + timedelta(minutes=15 * i)) | {"kwh": 1} for i in range(5)]}

    first = post("/api/v1/meters/batch/readings", batch, key=fleet_key)
    second = post("/api/v1/meters/batch/readings", batch, key=fleet_key)

    assert first.json()["success_count"] == 5 and second.status_code == 429


def test_reads_are_not_limited(api, post, meter, device_key, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=1, rate_limit_user_per_min=1)
    post(SUBMIT, reading(meter, recent), key=device_key)

    statuses = {api.get("/api/meters/stats", HTTP_X_API_KEY=device_key).status_code for _ in range(5)}

    assert statuses == {200}


def test_zero_turns_the_limits_off(post, meter, device_key, recent, ingest_settings):
    ingest_settings(rate_limit_key_per_min=0, rate_limit_user_per_min=0)

    codes = {
        post(SUBMIT, reading(meter, recent + timedelta(minutes=15 * i)), key=device_key).status_code for i in range(5)
    }

    assert codes == {201}


def test_with_redis_down_writes_are_allowed_and_logged(post, meter, device_key, recent, settings, caplog):
    settings.SERVICE = dataclasses.replace(settings.SERVICE, redis_url="redis://127.0.0.1:1/0")
    ratelimit._last_warning = 0.0

    with caplog.at_level(logging.WARNING, logger="meters.ratelimit"):
        response = post(SUBMIT, reading(meter, recent), key=device_key)

    assert response.status_code == 201 and MeterReading.objects.count() == 1
    assert any("rate limiter unavailable" in record.getMessage() for record in caplog.records)


def test_the_sliding_window_remembers_the_previous_minute():
    key_id = "sliding-window-test"
    start = 1_000_000 * 60.0  # the start of a minute
    limit = {"rate_limit_key_per_min": 4, "rate_limit_user_per_min": 0}
    with pytest.MonkeyPatch.context() as patch:
        from django.conf import settings

        patch.setattr(settings, "INGEST", dataclasses.replace(settings.INGEST, **limit))
        ratelimit._client().delete(*[f"gt:rl:key:{key_id}:{b}" for b in (1_000_000, 1_000_001)])
        for _ in range(4):
            ratelimit.check_write_allowed(key_id=key_id, now=start + 50)
        # 10 s into the next minute, 5/6 of the previous minute still counts: 4 * 50/60 + 1 > 4
        with pytest.raises(ratelimit.RateLimited) as refused:
            ratelimit.check_write_allowed(key_id=key_id, now=start + 70)
        # at 59 s into the next minute, 4 * 1/60 + 2 = 2.07 <= 4
        ratelimit.check_write_allowed(key_id=key_id, now=start + 119)
    assert refused.value.retry_after >= 1


def test_retry_after_covers_a_full_current_window():
    assert ratelimit._retry_after(current=10, previous=0, limit=5, elapsed=30) == 60
    # 6 * 30/60 + 3 = 6 decays by 6/60 per second: 2 over the limit takes 20 s
    assert ratelimit._retry_after(current=3, previous=6, limit=4, elapsed=30) == 20


def test_token_logins_are_limited_per_username_right_password_or_not(api, meter, stranger, ingest_settings):
    ingest_settings(rate_limit_login_per_min=3)

    def login(user, password):
        return api.post("/api/auth/token", {"username": user.username, "password": password}, format="json")

    codes = [login(meter.owner, "wrong").status_code for _ in range(3)]
    refused = login(meter.owner, "password")  # the right password, but the account's budget is spent

    assert codes == [401, 401, 401]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
    assert login(stranger, "password").status_code == 200  # other accounts are unaffected


def session_login(client, path, user, password):
    return client.post(path, {"username": user.username, "password": password, "next": "/dashboard/"})


@pytest.mark.parametrize("path", ["/login", "/admin/login/"])
def test_session_logins_are_limited_per_username_right_password_or_not(client, path, ingest_settings):
    ingest_settings(rate_limit_login_per_min=3)
    operator, other = UserFactory(is_staff=True), UserFactory(is_staff=True)

    codes = [session_login(client, path, operator, "wrong").status_code for _ in range(3)]
    refused = session_login(client, path, operator, "password")  # right, but the account's budget is spent

    assert codes == [200, 200, 200]  # the form again, with "did not match"
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert f"Try again in {refused['Retry-After']} s" in refused.content.decode()
    assert "_auth_user_id" not in client.session  # not signed in
    signed_in = session_login(client, path, other, "password")  # other accounts are unaffected
    assert signed_in.status_code == 302 and client.session["_auth_user_id"] == str(other.pk)


def test_the_token_endpoint_dashboard_and_admin_share_one_budget_per_username(api, client, ingest_settings):
    ingest_settings(rate_limit_login_per_min=2)
    operator = UserFactory(is_staff=True)

    token = api.post("/api/auth/token", {"username": operator.username, "password": "wrong"}, format="json")
    dashboard = session_login(client, "/login", operator, "wrong")
    admin = session_login(client, "/admin/login/", operator, "password")

    assert (token.status_code, dashboard.status_code, admin.status_code) == (401, 200, 429)


def test_with_redis_down_session_logins_still_work(client, settings):
    settings.SERVICE = dataclasses.replace(settings.SERVICE, redis_url="redis://127.0.0.1:1/0")
    user = UserFactory()

    assert session_login(client, "/login", user, "password").status_code == 302
