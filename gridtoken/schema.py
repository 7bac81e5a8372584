"""The OpenAPI schema's common parts: each operation is tagged by who calls it, not by its first path segment
(which would put everything under "api"), and each documents the 503 any DRF view answers while PostgreSQL is
down (gridtoken.exceptions)."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse

from gridtoken.exceptions import DatabaseUnavailable, ErrorBodySerializer

# First matching path prefix -> tag, in the order /api/docs/ lists them.
TAGS = (
    ("/api/auth/", "auth"),
    ("/api/admin/", "operator"),
    ("/api/v1/simulator/", "GridTokenX simulator"),
    ("/api/v1/", "GridTokenX gateway"),
    ("/v1/private-network/", "GridTokenX aggregator bridge"),
    ("/api/meters", "meters and readings"),
)
_unavailable = DatabaseUnavailable()
DATABASE_UNAVAILABLE = f"{_unavailable.code}: {_unavailable.message} Retry-After says when."


class TaggedAutoSchema(AutoSchema):
    """``extend_schema(tags=...)`` on a view still wins (it replaces get_tags)."""

    def get_tags(self) -> list[str]:
        return [next((tag for prefix, tag in TAGS if self.path.startswith(prefix)), "other")]

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
