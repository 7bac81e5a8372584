"""Typed readers over the process environment.

Each reader returns a parsed value or raises ConfigError naming the variable, the value it saw and what
is allowed, so a bad deployment stops at start-up with a message instead of failing on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

import environ

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is invalid: expected {allowed}")


class Env:
    """Reads variables from a mapping (the process environment unless given)."""

    def __init__(self, source: Mapping[str, str] | None = None) -> None:
        self.source = os.environ if source is None else source

    def raw(self, name: str) -> str | None:
        value = self.source.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def str(self, name: str, default: str = "", *, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(name)
        value = default if value is None else value
        if choices is not None and value not in choices:
            raise ConfigError(name, value, "one of " + ", ".join(choices))
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(name, value, "true or false")

    def int(self, name: str, default: int, *, min: int, max: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = int(value)
        except ValueError:
            raise ConfigError(name, value, f"an integer from {min} to {max}") from None
        if not min <= parsed <= max:
            raise ConfigError(name, value, f"an integer from {min} to {max}")
        return parsed

    def decimal(
        self,
        name: str,
        default: str,
        *,
        gt: Decimal | None = None,
        ge: Decimal | None = None,
        le: Decimal | None = None,
    ) -> Decimal:
        value = self.raw(name)
        text = default if value is None else value
        allowed = " and ".join(
            part
            for part in (
                f"> {gt}" if gt is not None else "",
                f">= {ge}" if ge is not None else "",
                f"<= {le}" if le is not None else "",
            )
            if part
        )
        allowed = f"a decimal number {allowed}".strip()
        try:
            parsed = Decimal(text)
        except InvalidOperation:
            raise ConfigError(name, text, allowed) from None
        if not parsed.is_finite():
            raise ConfigError(name, text, allowed)
        if (gt is not None and parsed <= gt) or (ge is not None and parsed < ge) or (le is not None and parsed > le):
            raise ConfigError(name, text, allowed)
        return parsed

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self.raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def db_url(self, name: str, default: str) -> dict:
        value = self.raw(name) or default
        try:
            parsed = environ.Env.db_url_config(value)
        except Exception:
            raise ConfigError(name, value, "a database URL like postgres://user@host:5432/dbname") from None
        if parsed.get("ENGINE") != "django.db.backends.postgresql":
            raise ConfigError(name, value, "a postgres:// URL (PostgreSQL is the only supported database)")
        return parsed

    def url(self, name: str, default: str, *, schemes: tuple[str, ...]) -> str:
        value = self.raw(name) or default
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in schemes:
            raise ConfigError(name, value, "a URL starting with " + " or ".join(f"{s}://" for s in schemes))
        return value
