"""The OpenAPI schema documents every ingestion path and both credential schemes."""

import pytest
import yaml

pytestmark = pytest.mark.django_db

PATHS = {
    "/api/auth/token": {"post"},
    "/api/meters": {"get", "post"},
    "/api/meters/submit-reading": {"post"},
    "/api/meters/my-readings": {"get"},
    "/api/meters/stats": {"get"},
    "/api/v1/meters/{serial}/readings": {"post"},
    "/api/v1/meters/batch/readings": {"post"},
    "/api/v1/public/meters/batch/readings": {"post"},
    "/api/v1/simulator/meters/register": {"post"},
}


def test_the_schema_lists_the_ingestion_endpoints_with_their_bodies(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)

    for path, methods in PATHS.items():
        assert methods <= set(schema["paths"][path]), path
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["userToken"]["scheme"] == "bearer"
    submit = schema["paths"]["/api/meters/submit-reading"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReadingSubmit"
    }
    assert {"kwh_amount", "reading_timestamp"} <= set(schema["components"]["schemas"]["ReadingSubmit"]["properties"])
    assert "voltage" in schema["components"]["schemas"]["MeterReadingV1"]["properties"]
