"""The OpenAPI schema documents every ingestion path and both credential schemes."""

import copy
import functools
from datetime import timedelta

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
    schema = served_schema(client)

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
    batch_item = schema["components"]["schemas"]["ReadingBatchItem"]["properties"]
    assert {"meter_serial", "meter_id", "kwh", "timestamp", "registers", "voltage"} <= set(batch_item)


# POST operations that truly take no body (the schema says so by having no requestBody).
NO_REQUEST_BODY = {
    ("/api/admin/tokenization/trigger-batch", "post"),
    ("/api/admin/tokenization/reconcile", "post"),
    ("/api/admin/api-keys/{key}/revoke", "post"),
    ("/api/admin/dead-letters/{dead_letter_id}/replay", "post"),
    ("/api/admin/dead-letters/{dead_letter_id}/discard", "post"),
}
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def served_schema(client) -> dict:
    """/api/schema/ as served (YAML), read by libyaml's parser: the pure-Python one takes ten times as long over
    its 160 kB (0.46 s against 0.04 s), more under coverage."""
    return yaml.load(client.get("/api/schema/").content, Loader=yaml.CSafeLoader)


def generated_schema() -> dict:
    """The schema as drf-spectacular generates it, a copy of this process's one generation (the code it reads
    does not change during a run; a generation costs 0.3 s under coverage, and some fifteen tests read it)."""
    return copy.deepcopy(_generated_once())


@functools.cache
def _generated_once() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation


def json_schema(response_or_body: dict) -> dict | None:
    return response_or_body.get("content", {}).get("application/json", {}).get("schema")


def test_every_operation_documents_its_success_body_and_its_request_body():
    missing = []
    for path, method, operation in operations(generated_schema()):
        successes = {code: response for code, response in operation["responses"].items() if code.startswith("2")}
        if not successes:
            missing.append(f"{method} {path}: no success response")
        missing += [
            f"{method} {path}: {code} has no body schema"
            for code, r in successes.items()
            if not json_schema(r) and not r.get("content", {}).get("text/csv", {}).get("schema")  # a CSV download
        ]
        if method in ("post", "put", "patch") and (path, method) not in NO_REQUEST_BODY:
            if not json_schema(operation.get("requestBody", {})):
                missing.append(f"{method} {path}: no request body")
        elif (path, method) in NO_REQUEST_BODY:
            assert "requestBody" not in operation, f"{method} {path} is listed as taking no body"

    assert missing == []


def test_every_error_response_has_the_one_error_body():
    schema = generated_schema()
    wrong = [
        f"{method} {path} {code}"
        for path, method, operation in operations(schema)
        for code, response in operation["responses"].items()
        if code[0] in "45" and json_schema(response) != ERROR_BODY
    ]

    assert wrong == []
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "request_id"}
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"} and {"field", "details"} <= set(detail["properties"])


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/api/auth/token", "post", {"200", "400", "401", "413", "415", "429"}),
        ("/api/meters", "post", {"201", "400", "401", "403", "409", "413", "415", "429"}),
        ("/api/meters/submit-reading", "post", {"200", "201", "400", "401", "403", "404", "409", "413", "429"}),
        ("/api/v1/simulator/meters/register", "post", {"200", "201", "400", "401", "403", "409", "429"}),
        ("/api/meters/my-readings", "get", {"200", "400", "401"}),
        ("/api/admin/meters/mint-from-reading", "post", {"200", "202", "400", "401", "403", "404", "409", "503"}),
        ("/api/admin/tokenization/status", "get", {"200", "401", "403"}),
        ("/v1/private-network/ingest", "post", {"202", "400", "401", "403", "409", "422", "429"}),
    ],
)
def test_the_statuses_an_operation_can_answer_are_documented(path, method, statuses):
    documented = set(generated_schema()["paths"][path][method]["responses"])

    assert statuses <= documented


def test_every_operation_documents_503_database_unavailable_as_the_api_answers_it():
    # gridtoken.exceptions answers 503 database_unavailable from any DRF view while PostgreSQL is down.
    schema = generated_schema()
    missing = [
        f"{method} {path}"
        for path, method, operation in operations(schema)
        if "database_unavailable" not in operation["responses"].get("503", {}).get("description", "")
        or json_schema(operation["responses"]["503"]) != ERROR_BODY
    ]
    mint = schema["paths"]["/api/admin/meters/mint-from-reading"]["post"]["responses"]["503"]

    assert missing == []
    assert "chain_unavailable" in mint["description"]


def test_listed_readings_have_no_duplicate_field_and_submissions_always_do():
    components = generated_schema()["components"]["schemas"]

    assert "duplicate" not in components["Reading"]["properties"]
    assert "duplicate" in components["ReadingSubmitted"]["required"]
    assert "duplicate" in components["MeterReadingV1Submitted"]["required"]
    assert components["ReadingPage"]["properties"]["data"]["items"] == {"$ref": "#/components/schemas/Reading"}
    pagination = {"current_page", "total_pages", "total_items", "items_per_page", "has_next", "has_previous"}
    assert set(components["Pagination"]["required"]) == pagination


def test_a_meters_zone_id_is_nullable_as_the_api_returns_it(api, user_token):
    created = api.post(
        "/api/meters", {"serial": "ZONELESS-1"}, format="json", HTTP_AUTHORIZATION=f"Bearer {user_token}"
    ).json()
    zone_id = generated_schema()["components"]["schemas"]["MeterOutput"]["properties"]["zone_id"]

    assert created["meter"]["zone_id"] is None
    assert zone_id.get("nullable") is True


def test_the_reading_list_filters_are_documented_parameters():
    parameters = {p["name"]: p for p in generated_schema()["paths"]["/api/meters/my-readings"]["get"]["parameters"]}

    assert {"meter_serial", "meter_id", "status", "since", "until", "source", "minted"} <= set(parameters)
    assert parameters["meter_id"]["schema"]["format"] == "uuid"
    assert parameters["since"]["schema"]["format"] == "date-time"


def test_the_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert "/api/meters/my-readings" in (tmp_path / "schema.yaml").read_text()


def test_the_reading_schemas_list_exactly_the_fields_the_endpoints_return(
    api, post, meter, device_key, user_token, recent
):
    components = generated_schema()["components"]["schemas"]
    later = (recent + timedelta(hours=1)).isoformat()

    submitted = post(
        "/api/meters/submit-reading", {"kwh_amount": "1.5", "reading_timestamp": recent.isoformat()}, key=device_key
    )
    v1 = post(f"/api/v1/meters/{meter.serial}/readings", {"kwh": "2", "timestamp": later}, key=device_key)
    unknown = post("/api/v1/meters/NOPE/readings", {"kwh": "2"}, key=device_key)
    listed = api.get("/api/meters/my-readings", HTTP_AUTHORIZATION=f"Bearer {user_token}").json()

    assert submitted.status_code == 201 and v1.status_code == 201
    assert set(submitted.json()) == set(components["ReadingSubmitted"]["properties"])
    assert set(v1.json()) == set(components["MeterReadingV1Submitted"]["properties"])
    assert set(listed["data"][0]) == set(components["Reading"]["properties"])
    assert set(listed["pagination"]) == set(components["ReadingPagination"]["properties"])
    assert unknown.status_code == 404 and set(unknown.json()) == set(components["ErrorBody"]["properties"])
    assert set(unknown.json()["error"]) <= set(components["ErrorDetail"]["properties"])
