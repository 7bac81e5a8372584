"""Found by Schemathesis (negative_data_rejection): operator bodies took values of the wrong JSON type, because
DRF's fields coerce (0 as false, any integer as a UUID); each is a 400 now, and nothing changes."""

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from minting.models import MintingControl
from tests.factories import UserFactory
from tests.meters.test_errors_and_fuzz import assert_error_shape

pytestmark = pytest.mark.django_db

TOGGLE = "/api/admin/tokenization/toggle-auto-mint"


@pytest.fixture
def operator() -> Client:
    token = Token.objects.create(user=UserFactory(is_staff=True))
    return Client(HTTP_AUTHORIZATION=f"Bearer {token.key}")


@pytest.mark.parametrize("value", ["0", '"false"', '"off"', '"no"', "1", '"true"', "null"])
def test_only_a_json_boolean_switches_automatic_minting(operator, value):
    assert operator.post(TOGGLE, {"enabled": True}, "application/json").status_code == 200

    response = operator.generic("POST", TOGGLE, f'{{"enabled": {value}}}', content_type="application/json")

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == "enabled"
    assert MintingControl.objects.get().auto_mint_enabled is True


def test_json_false_still_switches_it_off(operator):
    response = operator.post(TOGGLE, {"enabled": False}, "application/json")

    assert response.status_code == 200 and response.json()["auto_mint_enabled"] is False
    assert MintingControl.objects.get().auto_mint_enabled is False


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/admin/meters/mint-batch", '{"reading_ids": [false]}'),
        ("/api/admin/meters/mint-batch", '{"reading_ids": [0]}'),
        ("/api/admin/meters/retry-failed", '{"reading_ids": [false]}'),
        ("/api/admin/meters/retry-failed", '{"reading_ids": [12345678901234567890]}'),
        ("/api/admin/meters/mint-from-reading", '{"reading_id": 0}'),
        ("/api/admin/meters/mint-from-reading", '{"reading_id": true}'),
    ],
)
def test_a_reading_id_that_is_not_a_uuid_string_is_a_400(operator, path, body):
    response = operator.generic("POST", path, body, content_type="application/json")

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"].startswith("reading_id")


@pytest.mark.parametrize(
    "query",
    [
        "/api/admin/api-keys?scope=",
        "/api/admin/api-keys?limit=",
        "/api/admin/meters/unminted?limit=",
    ],
)
def test_an_empty_query_filter_is_a_400_as_on_the_reading_list(operator, query):
    """A parameter sent empty is a bad value (as my-readings and the meter list already answer), not a missing one
    that silently widens the list."""
    response = operator.get(query)

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == query.rsplit("?", 1)[1].rstrip("=")
