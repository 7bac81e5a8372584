"""The OpenAPI schema's grouping: each operation is tagged by who calls it, not by its first path segment
(which would put everything under "api")."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema

# First matching path prefix -> tag, in the order /api/docs/ lists them.
TAGS = (
    ("/api/auth/", "auth"),
    ("/api/admin/", "operator"),
    ("/api/v1/simulator/", "GridTokenX simulator"),
    ("/api/v1/", "GridTokenX gateway"),
    ("/v1/private-network/", "GridTokenX aggregator bridge"),
    ("/api/meters", "meters and readings"),
)


class TaggedAutoSchema(AutoSchema):
    """``extend_schema(tags=...)`` on a view still wins (it replaces this method)."""

    def get_tags(self) -> list[str]:
        return [next((tag for prefix, tag in TAGS if self.path.startswith(prefix)), "other")]
