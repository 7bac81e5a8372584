"""/api/docs/ reads for the people who call the API: devices first, then producers, certificates, operators;
every operation summarised; no description that is a note about this code (DRF's fields, class and module
names, reStructuredText literals)."""

from __future__ import annotations

import re

from tests.meters.test_schema import generated_schema, operations

CALLER_ORDER = ["devices", "producers: meters and readings", "certificates", "operator"]
# What only a maintainer of this code needs: framework internals, class and module names, docstring markup.
IMPLEMENTATION_NOTE = re.compile(
    r"\bDRF\b|[Ss]erializer|APIView|\b\w+Api\b|``|\b(?:meters|minting|certificates|protocols|gridtoken)\.\w"
    r"|\bmodule\b|\.py\b|\bclass\b|docstring"
)


def texts(node, where: str = ""):
    """(where, text) of every summary and description in the schema, however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("summary", "description") and isinstance(value, str):
                yield f"{where}/{key}", value
            else:
                yield from texts(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from texts(value, f"{where}[{index}]")


def test_every_operation_has_a_summary_of_one_line():
    schema = generated_schema()
    missing = [f"{method.upper()} {path}" for path, method, op in operations(schema) if not op.get("summary")]
    long = [op["summary"] for _, _, op in operations(schema) if len(op.get("summary") or "") > 100]
    assert missing == [] and long == []


def test_no_description_is_an_implementation_note():
    notes = [f"{where}: {text[:120]}" for where, text in texts(generated_schema()) if IMPLEMENTATION_NOTE.search(text)]
    assert notes == []


def test_the_tags_list_devices_first_then_producers_certificates_and_operators():
    schema = generated_schema()
    declared = [tag["name"] for tag in schema["tags"]]
    used = {tag for _, _, op in operations(schema) for tag in op["tags"]}
    assert used <= set(declared), used - set(declared)  # every operation under a tag the page lists in order
    assert [name for name in declared if name in CALLER_ORDER] == CALLER_ORDER
    assert declared.index("devices") == 0
    tagged = {(method, path): op["tags"] for path, method, op in operations(schema)}
    assert tagged[("post", "/api/meters/submit-reading")] == ["devices"]
    assert tagged[("post", "/api/certificates/bundles/{bundle_id}/transfer")] == ["certificates"]
