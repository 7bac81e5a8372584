"""Every documented type rule is true: read /api/schema/, and for each string field of every JSON request body
post a JSON number instead (into an otherwise acceptable body); the answer is a 400 naming the field and nothing
is written. Decimal fields (schema ``format: decimal``) and kWh amounts take a JSON number or a numeric string
(docs/API.md, Conventions), so they are posted as a JSON boolean instead, which neither is.
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.authtoken.models import Token

from meters.models import ApiKey, Meter, MeterReading
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.meters.conftest import rfc3339
from tests.meters.test_schema import served_schema

pytestmark = pytest.mark.django_db
NUMBER_OR_TEXT = {"kwh_amount", "kwh"}  # docs/API.md: kWh is a JSON number or a numeric string


@pytest.fixture
def world(db):
    operator = UserFactory(is_staff=True)
    meter = MeterFactory()
    moment = rfc3339(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    return {
        "operator": Token.objects.create(user=operator).key,
        "producer": Token.objects.create(user=meter.owner).key,
        "device": api_key_for(meter=meter)[1],
        "fleet": api_key_for(owner=meter.owner)[1],
        "operator_name": operator.username,
        "meter": meter,
        "moment": moment,
    }


def acceptable(path: str, world) -> tuple[str, dict]:
    """The credential and a body the operation accepts, or would refuse for reasons other than a field's type."""
    meter, moment = world["meter"], world["moment"]
    bodies = {
        "/api/admin/api-keys": ("operator", {"owner": world["operator_name"], "name": "k"}),
        "/api/auth/token": (None, {"username": "nobody", "password": "x"}),
        "/api/meters": ("producer", {"serial": "TYPES-1"}),
        "/api/meters/submit-reading": ("device", {"kwh_amount": "1", "reading_timestamp": moment}),
        "/api/v1/meters/{serial}/readings": ("device", {"kwh": "1", "timestamp": moment}),
        "/api/v1/simulator/meters/register": ("fleet", {"meter_id": "TYPES-2", "wallet_address": meter.wallet_address}),
        "/v1/private-network/ingest": (
            "fleet",
            {"protocol": "dlms", "device_id": meter.serial, "payload": {"kwh": 1, "timestamp": moment}},
        ),
        "/v1/private-network/ingest/batch": ("fleet", {"protocol": "dlms", "readings": []}),
        "/api/certificates/devices": ("producer", {"meter_id": str(meter.id), "name": "Roof"}),
        "/api/certificates/bundles/{bundle_id}/claim": ("producer", {}),
        "/api/certificates/bundles/{bundle_id}/transfer": ("producer", {}),
        "/api/admin/certificates/bundles/{bundle_id}/withdraw": ("operator", {}),
        "/api/admin/certificates/devices/{device_id}/status": ("operator", {}),
        "/api/admin/meters/mint-from-reading": ("operator", {}),
    }
    return bodies[path]


def string_fields(schema: dict):
    components = schema["components"]["schemas"]

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[1]]
        return node

    for path, operations in schema["paths"].items():
        body = operations.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json")
        if body is None:
            continue
        for name, field in resolve(body["schema"]).get("properties", {}).items():
            field = resolve(field)
            if field.get("type") == "string" and not field.get("readOnly"):
                yield path, name, field.get("format") == "decimal" or name in NUMBER_OR_TEXT


def test_every_string_field_refuses_another_json_type(client, post, world):
    schema = served_schema(client)
    checked, wrong = [], []
    for path, name, numeric in string_fields(schema):
        credential, body = acceptable(path, world)
        url = path.format(serial=world["meter"].serial, bundle_id=uuid.uuid4(), device_id=uuid.uuid4())
        sent = body | {name: True if numeric else 12345}
        headers = {}
        if credential in ("device", "fleet"):
            headers["key"] = world[credential]
        elif credential is not None:
            headers["token"] = world[credential]
        response = post(url, sent, **headers)
        error = response.json().get("error", {}) if response.status_code >= 400 else {}
        named = error.get("field") == name or name in (error.get("details") or {}).get("errors", {})
        if response.status_code != 400 or not named:
            wrong.append((path, name, response.status_code, error))
        checked.append((path, name))

    assert not wrong, wrong
    assert len(checked) >= 40, len(checked)
    assert not MeterReading.objects.exists() and not ApiKey.objects.exclude(name__in=["", "device", "fleet"]).exists()
    assert not Meter.objects.filter(serial__in=["TYPES-1", "TYPES-2", "12345"]).exists()
