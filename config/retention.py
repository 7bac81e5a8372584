"""Readings' retention and the archive destination (docs/RETENTION.md): how long monthly partitions stay in
PostgreSQL, and where an expired one is exported, verified and kept before it is dropped."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from config.environment import ConfigError, Env

# Below a month nothing is gained (a partition is a calendar month) and a meter's neighbours (register reads,
# VEE's history) would leave the database with it.
RETENTION_MIN_DAYS = 31
RETENTION_MAX_DAYS = 36500
ARCHIVE_URL_FORMS = "file:///absolute/directory or s3://bucket[/prefix]"


@dataclass(frozen=True)
class RetentionConfig:
    """``days`` None keeps every reading in PostgreSQL (the default); nothing is archived then."""

    days: int | None
    archive_url: str | None
    scheme: str  # "file" or "s3" ("" without a destination)
    location: str  # a directory (file) or bucket/prefix (s3), without a trailing /
    s3_endpoint: str | None  # http(s)://host:port of an S3-compatible store; None: AWS
    s3_region: str
    s3_access_key: str | None
    s3_secret_key: str | None

    @classmethod
    def from_env(cls, env: Env, *, reading_max_age_days: int) -> RetentionConfig:
        days = env.raw("READINGS_RETENTION_DAYS")
        days = None if days is None else env.int("READINGS_RETENTION_DAYS", 0, min=1, max=RETENTION_MAX_DAYS)
        url = env.raw("READINGS_ARCHIVE_URL")
        scheme, location = _archive_location(url) if url else ("", "")
        access_key, secret_key = env.raw("READINGS_ARCHIVE_S3_ACCESS_KEY"), env.raw("READINGS_ARCHIVE_S3_SECRET_KEY")
        if (access_key is None) != (secret_key is None):
            missing = "READINGS_ARCHIVE_S3_SECRET_KEY" if secret_key is None else "READINGS_ARCHIVE_S3_ACCESS_KEY"
            raise ConfigError(missing, None, "set together with its pair (or neither: the AWS default chain)")
        endpoint = env.raw("READINGS_ARCHIVE_S3_ENDPOINT")
        cfg = cls(
            days=days,
            archive_url=url,
            scheme=scheme,
            location=location,
            s3_endpoint=env.url("READINGS_ARCHIVE_S3_ENDPOINT", "", schemes=("http", "https")) if endpoint else None,
            s3_region=env.str("READINGS_ARCHIVE_S3_REGION", "us-east-1"),
            s3_access_key=access_key,
            s3_secret_key=secret_key,
        )
        if days is None:
            return cfg
        if url is None:
            raise ConfigError(
                "READINGS_ARCHIVE_URL", None,
                f"a destination when READINGS_RETENTION_DAYS is set ({ARCHIVE_URL_FORMS}): expired partitions are "
                "exported there before they are dropped; unset READINGS_RETENTION_DAYS to keep everything",
            )  # fmt: skip
        floor = max(RETENTION_MIN_DAYS, reading_max_age_days + 1)
        if days < floor:
            raise ConfigError(
                "READINGS_RETENTION_DAYS", str(days),
                f"at least {floor} days: a month (a partition) and more than TOKENIZATION_READING_MAX_AGE_DAYS "
                f"({reading_max_age_days}), so no reading the service still accepts falls in an archived month",
            )  # fmt: skip
        return cfg


def _archive_location(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return "file", unquote(parts.path).rstrip("/") or "/"
    if parts.scheme == "s3" and parts.netloc and not parts.query and "@" not in parts.netloc:
        return "s3", f"{parts.netloc}{unquote(parts.path)}".rstrip("/")
    raise ConfigError("READINGS_ARCHIVE_URL", url, ARCHIVE_URL_FORMS)
