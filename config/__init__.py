"""Configuration: the schema (base.py, schema.py, migration.py for migration plans), the loader, and the
shipped YAML files. Read and validated once, into frozen objects; nothing here imports the rest of cutover."""

from config.loader import ConfigError, load_config, parse_config
from config.schema import GatewayConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "parse_config"]
