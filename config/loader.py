"""Read a YAML config file into a validated, immutable `GatewayConfig`.

Three passes, each naming the exact path of what it rejects:
1. `${VAR}` / `${VAR:-default}` interpolation over every string in the tree;
2. pydantic validation (shape, types, unknown keys);
3. cross-references that pydantic cannot see (targets naming providers, ...).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.schema import ClientKey, GatewayConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one 'path: message' per defect."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def format_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """('models', 'gpt-4', 'targets', 1, 'provider') -> 'models.gpt-4.targets[1].provider'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def interpolate(node: Any, env: Mapping[str, str], path: tuple[str | int, ...] = ()) -> tuple[Any, list[str]]:
    """Replace ${VAR} references; return the new tree and the problems found."""
    problems: list[str] = []
    if isinstance(node, dict):
        out_dict: dict[Any, Any] = {}
        for key, value in node.items():
            out_dict[key], sub = interpolate(value, env, (*path, str(key)))
            problems += sub
        return out_dict, problems
    if isinstance(node, list):
        out_list: list[Any] = []
        for index, value in enumerate(node):
            new, sub = interpolate(value, env, (*path, index))
            out_list.append(new)
            problems += sub
        return out_list, problems
    if isinstance(node, str) and "${" in node:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            # As in the shell, ':-' also replaces a variable that is set but empty.
            if name in env and (env[name] or default is None):
                return env[name]
            if default is not None:
                return default
            problems.append(f"{format_path(path)}: environment variable '{name}' is not set")
            return ""

        return _ENV_REF.sub(substitute, node), problems
    return node, problems


def cross_check(config: GatewayConfig) -> list[str]:
    problems: list[str] = []
    for name, provider in config.providers.items():
        where = f"providers.{name}"
        if provider.type == "openai" and provider.base_url is None:
            problems.append(f"{where}.base_url: required for type 'openai'")
        if provider.type == "simulated" and provider.base_url is not None:
            problems.append(f"{where}.base_url: a simulated provider runs in-process; leave base_url out")
        if provider.type == "openai" and provider.simulation is not None:
            problems.append(f"{where}.simulation: only allowed for type 'simulated'")
    known = sorted(config.providers)
    for alias, route in config.models.items():
        for index, target in enumerate(route.targets):
            if target.provider not in config.providers:
                problems.append(
                    f"models.{alias}.targets[{index}].provider: unknown provider '{target.provider}'"
                    f" (known: {', '.join(known) or 'none'})"
                )
        if route.on_context_overflow == "truncate_oldest":
            for index, target in enumerate(route.targets):
                price = config.prices.get(f"{target.provider}/{target.model}") or config.prices.get(target.model)
                if price is None or price.context_window is None:
                    problems.append(
                        f"models.{alias}.targets[{index}]: on_context_overflow needs a context_window "
                        f"for '{target.model}' in prices"
                    )
    problems += _check_migrations(config)
    problems += _check_meta_models(config)
    if config.store.backend == "redis" and not config.store.url:
        problems.append("store.url: required for backend 'redis'")
    if config.auth.mode == "keys" and not config.auth.keys:
        problems.append("auth.keys: at least one client key is required (or set auth.mode: none for local use)")
    return problems + _check_keys(config.admin.keys, "admin") + _check_keys(config.auth.keys, "auth")


def _check_keys(keys: list[ClientKey], section: str) -> list[str]:
    problems: list[str] = []
    names = [k.name for k in keys]
    for index, key in enumerate(keys):
        if (key.hash is None) == (key.key_env is None):
            problems.append(f"{section}.keys[{index}]: give exactly one of 'hash' or 'key_env'")
        if names.count(key.name) > 1:
            problems.append(f"{section}.keys[{index}].name: duplicate key name '{key.name}'")
    return problems


def _check_migrations(config: GatewayConfig) -> list[str]:
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_aliases: set[str] = set()
    for index, spec in enumerate(config.migrations):
        where = f"migrations[{index}]"
        if spec.id in seen_ids:
            problems.append(f"{where}.id: duplicate migration id '{spec.id}'")
        seen_ids.add(spec.id)
        if spec.alias not in config.models:
            problems.append(f"{where}.alias: unknown model alias '{spec.alias}'")
        elif spec.alias in seen_aliases:
            problems.append(f"{where}.alias: alias '{spec.alias}' already has a migration")
        seen_aliases.add(spec.alias)
        for arm in ("baseline", "candidate"):
            target = getattr(spec, arm)
            if target.provider not in config.providers:
                problems.append(f"{where}.{arm}.provider: unknown provider '{target.provider}'")
        judge = spec.gates.quality.judge
        if judge is not None and judge not in config.models:
            problems.append(f"{where}.gates.quality.judge: unknown model alias '{judge}'")
        elif judge is not None and judge == spec.alias:
            problems.append(f"{where}.gates.quality.judge: the migrated alias cannot judge itself")
    return problems


def _check_meta_models(config: GatewayConfig) -> list[str]:
    problems: list[str] = []
    for name, meta in config.meta_models.items():
        where = f"meta_models.{name}"
        if name in config.models:
            problems.append(f"{where}: the name is already a model alias")
        for field, alias in [("planner", meta.planner), ("joiner", meta.joiner),
                             *((f"executors.{tier}", a) for tier, a in meta.executors.items())]:
            if alias is None:
                continue
            if alias in config.meta_models:
                problems.append(f"{where}.{field}: '{alias}' is a meta-model; use a plain model alias")
            elif alias not in config.models:
                problems.append(f"{where}.{field}: unknown model alias '{alias}'")
        if "cheap" not in meta.executors:
            problems.append(f"{where}.executors: a 'cheap' executor alias is required")
        problems.extend(f"{where}.mcp_servers: unknown MCP server '{server}'" for server in meta.mcp_servers
                        if server not in config.mcp_servers)
    for name, server in config.mcp_servers.items():
        if (server.url is None) == (server.command is None):
            problems.append(f"mcp_servers.{name}: give exactly one of 'url' (streamable HTTP) or 'command' (stdio)")
    return problems


def parse_config(raw: Any, env: Mapping[str, str] | None = None) -> GatewayConfig:
    if not isinstance(raw, dict):
        raise ConfigError(["(root): the config must be a mapping"])
    tree, problems = interpolate(raw, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems)
    try:
        config = GatewayConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc)) from None
    problems = cross_check(config)
    if problems:
        raise ConfigError(problems)
    environ = os.environ if env is None else env
    client_keys, problems = _hash_env_keys(config.auth.keys, "auth", environ)
    admin_keys, admin_problems = _hash_env_keys(config.admin.keys, "admin", environ)
    if problems or admin_problems:
        raise ConfigError(problems + admin_problems)
    return config.model_copy(update={
        "auth": config.auth.model_copy(update={"keys": client_keys}),
        "admin": config.admin.model_copy(update={"keys": admin_keys}),
    })


def _hash_env_keys(
    configured: list[ClientKey], section: str, env: Mapping[str, str]
) -> tuple[list[ClientKey], list[str]]:
    """Plain keys given through the environment are hashed at once and never kept."""
    keys = []
    problems = []
    for index, key in enumerate(configured):
        if key.key_env is None:
            keys.append(key)
            continue
        plain = env.get(key.key_env)
        if not plain:
            problems.append(f"{section}.keys[{index}].key_env: environment variable '{key.key_env}' is not set")
            continue
        digest = "sha256:" + hashlib.sha256(plain.encode()).hexdigest()
        keys.append(key.model_copy(update={"hash": digest, "key_env": None}))
    return keys, problems


def validation_problems(exc: ValidationError) -> list[str]:
    """Each problem as `path: message` (`plan.weights[2]: ...`), the way every config error reads."""
    return [f"{format_path(tuple(err['loc']))}: {_message(err)}" for err in exc.errors()]


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required"
    return str(err["msg"]).removeprefix("Value error, ")


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not valid UTF-8 (byte {exc.start})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{path}: not valid YAML ({where})"]) from None
    return parse_config(raw, env)
