"""The Solana RPC providers: ``SOLANA_RPC_URLS`` (several, ordered, with weights and roles) or ``SOLANA_RPC_URL``.

``SOLANA_RPC_URLS`` is a comma-separated list; each URL may end in a fragment of options (a fragment never
leaves the process: it is cut off before any request), ``&``-separated:

- ``weight=N`` (0..100, default 1): reads are spread over the healthy providers in proportion to their weights;
  a provider of weight 0 is a standby, read only while every weighted provider is out.
- ``role=all|read|send`` (default ``all``): ``read`` providers are never sent transactions, ``send`` providers
  (a staked sender) are never read from.

Errors name the variable and the offending provider by its place and host, never its path or query (providers
put API keys there).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from config.environment import ConfigError, Env

RPC_ROLES = ("all", "read", "send")
MAX_PROVIDERS = 8
MAX_WEIGHT = 100
DEFAULT_RPC_URL = "http://127.0.0.1:8899"


@dataclass(frozen=True)
class RpcEndpoint:
    url: str = DEFAULT_RPC_URL
    weight: int = 1
    role: str = "all"

    @property
    def reads(self) -> bool:
        return self.role != "send"

    @property
    def sends(self) -> bool:
        return self.role != "read"


@dataclass(frozen=True)
class RpcProvidersConfig:
    """``endpoints`` is empty when ``SOLANA_RPC_URLS`` is unset: then ``ChainConfig.rpc_url`` is the one provider."""

    endpoints: tuple[RpcEndpoint, ...] = ()
    max_lag_slots: int = 150  # a provider answering further behind the best one seen is taken out
    probe_secs: float = 2.0  # first back-off before a provider taken out is tried again (doubling)
    probe_max_secs: float = 60.0

    @classmethod
    def from_env(cls, env: Env) -> RpcProvidersConfig:
        text = env.raw("SOLANA_RPC_URLS")
        if text is not None and env.raw("SOLANA_RPC_URL") is not None:
            raise ConfigError(
                "SOLANA_RPC_URL", "(set)", "unset: SOLANA_RPC_URLS is set, name every provider there (one source)"
            )
        probe = env.int("SOLANA_RPC_PROBE_SECS", 2, min=1, max=3600)
        probe_max = env.int("SOLANA_RPC_PROBE_MAX_SECS", 60, min=1, max=86400)
        if probe_max < probe:
            raise ConfigError("SOLANA_RPC_PROBE_MAX_SECS", probe_max, f">= SOLANA_RPC_PROBE_SECS ({probe})")
        return cls(
            endpoints=parse_endpoints(text) if text is not None else (),
            max_lag_slots=env.int("SOLANA_RPC_MAX_LAG_SLOTS", 150, min=1, max=100_000),
            probe_secs=float(probe),
            probe_max_secs=float(probe_max),
        )


def host_only(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what messages may show of it."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":?"
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"


def _bad(place: int, url: str, expected: str) -> ConfigError:
    shown = f"provider {place} ({host_only(url)})" if url else f"provider {place} (empty)"
    return ConfigError("SOLANA_RPC_URLS", shown, expected)


def parse_endpoints(text: str) -> tuple[RpcEndpoint, ...]:
    """``SOLANA_RPC_URLS``'s providers, in order; ConfigError naming the first wrong one."""
    endpoints = []
    items = [item.strip() for item in text.split(",")]
    for place, item in enumerate(items, start=1):
        url, _, options = item.partition("#")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 (parsing it validates it)
        except ValueError:
            raise _bad(place, url, "a port from 0 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _bad(place, url, "an http:// or https:// URL with a host, then optional #weight=N&role=all|read|send")
        weight, role = 1, "all"
        for option in filter(None, options.split("&")):
            name, _, value = option.partition("=")
            if name == "weight" and value.isascii() and value.isdigit() and int(value) <= MAX_WEIGHT:
                weight = int(value)
            elif name == "role" and value in RPC_ROLES:
                role = value
            else:
                allowed = f"options weight=0..{MAX_WEIGHT} and role={'|'.join(RPC_ROLES)}, got {name or option[:1]!r}"
                raise _bad(place, url, allowed)
        endpoints.append(RpcEndpoint(url=url, weight=weight, role=role))
    if len(endpoints) > MAX_PROVIDERS:
        raise ConfigError("SOLANA_RPC_URLS", f"{len(endpoints)} providers", f"at most {MAX_PROVIDERS}")
    if len({endpoint.url for endpoint in endpoints}) != len(endpoints):
        raise ConfigError("SOLANA_RPC_URLS", "a provider twice", "each URL once")
    if not any(endpoint.reads and endpoint.weight for endpoint in endpoints):
        raise ConfigError("SOLANA_RPC_URLS", "no provider to read from", "at least one provider with role all or "
                          "read and a weight above 0")  # fmt: skip
    if not any(endpoint.sends for endpoint in endpoints):
        raise ConfigError("SOLANA_RPC_URLS", "no provider to send to", "at least one provider with role all or send")
    return tuple(endpoints)
