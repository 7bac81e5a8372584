"""The OpenAPI schema's common parts: each operation is tagged by who calls it, not by its first path segment
(which would put everything under "api"), and each documents the 503 any DRF view answers while PostgreSQL is
down (gridtoken.exceptions).

/api/docs/ is read by the people who call the API, so only what an operation's ``extend_schema`` says for them
(``summary``, ``description``, ``help_text``) is shown: a view's or serializer's docstring is a note for this
code's maintainers and never becomes a description (tests/ops/test_api_docs.py walks the schema for both)."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_override
from drf_spectacular.utils import OpenApiResponse

from gridtoken.api_tags import TAGS
from gridtoken.exceptions import DatabaseUnavailable, ErrorBodySerializer

_unavailable = DatabaseUnavailable()
DATABASE_UNAVAILABLE = f"{_unavailable.code}: {_unavailable.message} Retry-After says when."


class TaggedAutoSchema(AutoSchema):
    """``extend_schema(tags=...)`` on a view still wins (it replaces get_tags), as do its ``summary`` and
    ``description`` (they replace get_summary and get_description)."""

    def get_tags(self) -> list[str]:
        return [next((tag for prefix, tag in TAGS if self.path.startswith(prefix)), "other")]

    def get_description(self) -> str:
        return ""

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if get_override(serializer, "description") is None:
            schema.pop("description", None)
        return schema

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is not None:
            responses = operation["responses"]
            if "503" in responses:  # the chain's own 503 (chain_unavailable): the same body, either code
                responses["503"]["description"] += f" Or {DATABASE_UNAVAILABLE}"
            else:
                responses["503"] = self._get_response_for_code(
                    OpenApiResponse(ErrorBodySerializer, description=DATABASE_UNAVAILABLE), "503"
                )
        return operation
