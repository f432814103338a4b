"""Configuration: the schema, the loader, and the shipped YAML files."""

from config.loader import ConfigError, load_config, parse_config
from config.schema import GatewayConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "parse_config"]
