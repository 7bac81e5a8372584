"""GridToken configuration: typed, validated settings objects read once from the environment."""

from config.environment import ConfigError, Env
from config.objects import AppConfig, ChainConfig, IngestConfig, ServiceConfig, TokenizationConfig, load

__all__ = [
    "AppConfig",
    "ChainConfig",
    "ConfigError",
    "Env",
    "IngestConfig",
    "ServiceConfig",
    "TokenizationConfig",
    "load",
]
