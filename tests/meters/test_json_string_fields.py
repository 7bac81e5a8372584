"""Found by Schemathesis (negative_data_rejection): a string field took a JSON number as its text
(``{"location": 0}`` stored "0"); it is a 400 naming the field now, and nothing is written."""

import pytest
from rest_framework.authtoken.models import Token

from meters.models import ApiKey, Meter
from tests.factories import UserFactory
from tests.meters.test_errors_and_fuzz import assert_error_shape

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("field", "value"), [("location", 0), ("meter_type", 1.5), ("serial", 12345)], ids=str)
def test_a_number_for_a_meters_string_field_is_a_400(post, user_token, field, value):
    body = {"serial": "NUMBERS-1", field: value}

    response = post("/api/meters", body, token=user_token)

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == field
    assert not Meter.objects.filter(serial__in=["NUMBERS-1", "12345"]).exists()


def test_a_number_for_a_simulator_meters_type_is_a_400(post, meter, fleet_key):
    body = {"meter_id": "SIM-NUMBERS-1", "wallet_address": meter.wallet_address, "meter_type": 5}

    response = post("/api/v1/simulator/meters/register", body, key=fleet_key)

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == "meter_type"
    assert not Meter.objects.filter(serial="SIM-NUMBERS-1").exists()


def test_a_numeric_username_is_a_400_not_a_login_attempt(post):
    response = post("/api/auth/token", {"username": 5, "password": "password"})

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == "username"


def test_a_numeric_key_name_is_a_400(post):
    operator = UserFactory(is_staff=True)
    token = Token.objects.create(user=operator).key

    response = post("/api/admin/api-keys", {"owner": operator.username, "name": 42}, token=token)

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == "name"
    assert not ApiKey.objects.exists()
