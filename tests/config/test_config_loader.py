"""Config validation: every rejection names the exact path of the bad value."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from config.loader import ConfigError, format_path, interpolate, load_config, parse_config
from config.schema import GatewayConfig

GOOD_HASH = "sha256:" + "ab" * 32


def base() -> dict[str, Any]:
    """Smallest valid config; each test breaks exactly one thing in a fresh copy."""
    return copy.deepcopy(
        {
            "auth": {"keys": [{"name": "apps", "hash": GOOD_HASH}]},
            "providers": {
                "holysheep": {"type": "openai", "base_url": "https://up.example/v1", "api_key": "sk-upstream"},
                "sim": {"type": "simulated"},
            },
            "models": {
                "gpt-4": {
                    "targets": [
                        {"provider": "holysheep", "model": "deepseek-v3.2"},
                        {"provider": "sim", "model": "sim-large"},
                    ]
                }
            },
        }
    )


def problems_of(raw: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={} if env is None else env)
    # The message lists every problem too, so a CLI user sees the same paths.
    for problem in caught.value.problems:
        assert problem in str(caught.value)
    return caught.value.problems


def test_base_config_is_valid() -> None:
    config = parse_config(base(), env={})
    assert isinstance(config, GatewayConfig)
    assert config.models["gpt-4"].targets[1].provider == "sim"


# --- unknown keys -----------------------------------------------------------


def test_unknown_key_in_target_names_full_path() -> None:
    raw = base()
    raw["models"]["gpt-4"]["targets"][1] = {"providr": "sim", "model": "sim-large"}
    problems = problems_of(raw)
    assert "models.gpt-4.targets[1].providr: unknown key" in problems
    # The misspelt key also leaves the real one missing; both are reported.
    assert "models.gpt-4.targets[1].provider: required" in problems


def test_unknown_top_level_key() -> None:
    raw = base()
    raw["rooting"] = {}
    assert problems_of(raw) == ["rooting: unknown key"]


@pytest.mark.parametrize(
    ("section", "path"),
    [
        (("server",), "server.hots: unknown key"),
        (("auth",), "auth.hots: unknown key"),
        (("providers", "holysheep"), "providers.holysheep.hots: unknown key"),
        (("models", "gpt-4"), "models.gpt-4.hots: unknown key"),
    ],
)
def test_unknown_nested_key(section: tuple[str, ...], path: str) -> None:
    raw = base()
    node = raw
    for part in section:
        node = node.setdefault(part, {})
    node["hots"] = 1
    assert problems_of(raw) == [path]


def test_unknown_key_in_routing_retry() -> None:
    raw = base()
    raw["routing"] = {"retry": {"max_attempts": 3}}
    assert problems_of(raw) == ["routing.retry.max_attempts: unknown key"]


def test_unknown_key_in_simulation_settings() -> None:
    raw = base()
    raw["providers"]["sim"]["simulation"] = {"first_token": 5}
    assert problems_of(raw) == ["providers.sim.simulation.first_token: unknown key"]


# --- cross-references ------------------------------------------------------


def test_unknown_provider_referenced() -> None:
    raw = base()
    raw["models"]["gpt-4"]["targets"][1]["provider"] = "holysheep2"
    problems = problems_of(raw)
    assert len(problems) == 1
    assert problems[0].startswith("models.gpt-4.targets[1].provider: unknown provider 'holysheep2'")
    # Listing the known names makes the typo obvious.
    assert "(known: holysheep, sim)" in problems[0]


# --- missing required fields -------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("providers",), "providers: required"),
        (("models",), "models: required"),
        (("providers", "holysheep", "type"), "providers.holysheep.type: required"),
        (("models", "gpt-4", "targets"), "models.gpt-4.targets: required"),
        (("auth", "keys", 0, "name"), "auth.keys[0].name: required"),
    ],
)
def test_missing_required_field(path: tuple[str | int, ...], expected: str) -> None:
    raw = base()
    node: Any = raw
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    assert expected in problems_of(raw)


def test_target_model_required() -> None:
    raw = base()
    del raw["models"]["gpt-4"]["targets"][0]["model"]
    assert problems_of(raw) == ["models.gpt-4.targets[0].model: required"]


# --- bad types and values ------------------------------------------------------


def _set(raw: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = raw
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    node[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("providers", "holysheep", "timeouts", "connect"), -1, "providers.holysheep.timeouts.connect: "),
        (("providers", "holysheep", "timeouts", "read"), 0, "providers.holysheep.timeouts.read: "),
        (("providers", "holysheep", "timeouts", "total"), "soon", "providers.holysheep.timeouts.total: "),
        (("providers", "holysheep", "pool_size"), 0, "providers.holysheep.pool_size: "),
        (("providers", "holysheep", "pool_size"), 10_001, "providers.holysheep.pool_size: "),
        (("providers", "holysheep", "type"), "azure", "providers.holysheep.type: "),
        (("providers", "holysheep", "base_url"), "ftp://up.example", "providers.holysheep.base_url: "),
        (("providers", "holysheep", "base_url"), "up.example/v1", "providers.holysheep.base_url: "),
        (("providers", "holysheep", "headers"), ["X-A: b"], "providers.holysheep.headers: "),
        (("models", "gpt-4", "on_context_overflow"), "drop_newest", "models.gpt-4.on_context_overflow: "),
        (("models", "gpt-4", "targets"), [], "models.gpt-4.targets: "),
        (("models", "gpt-4", "targets"), "holysheep/deepseek", "models.gpt-4.targets: "),
        (("auth", "mode"), "basic", "auth.mode: "),
        (("auth", "keys", 0, "hash"), "sha256:" + "AB" * 32, "auth.keys[0].hash: "),
        (("auth", "keys", 0, "hash"), "sha256:abc", "auth.keys[0].hash: "),
        (("auth", "keys", 0, "hash"), "md5:" + "ab" * 32, "auth.keys[0].hash: "),
        (("auth", "keys", 0, "hash"), "sha256:" + "zz" * 32, "auth.keys[0].hash: "),
        (("server", "port"), 70000, "server.port: "),
        (("server", "workers"), 0, "server.workers: "),
        (("server", "max_body_bytes"), 100, "server.max_body_bytes: "),
        (("routing", "retry", "max_attempts_per_target"), 0, "routing.retry.max_attempts_per_target: "),
        (("routing", "retry", "initial_backoff_s"), -0.5, "routing.retry.initial_backoff_s: "),
        (("routing", "circuit_breaker", "cooldown_s"), 0, "routing.circuit_breaker.cooldown_s: "),
        (("routing", "circuit_breaker", "failure_threshold"), 0, "routing.circuit_breaker.failure_threshold: "),
        (("prices", "deepseek-v3.2", "input"), -1, "prices.deepseek-v3.2.input: "),
        (("prices", "deepseek-v3.2", "input"), "cheap", "prices.deepseek-v3.2.input: "),
        (("prices", "deepseek-v3.2", "cached_input"), -1, "prices.deepseek-v3.2.cached_input: "),
        (("prices", "deepseek-v3.2", "context_window"), 0, "prices.deepseek-v3.2.context_window: "),
    ],
)
def test_bad_value_is_rejected_at_its_path(path: tuple[str | int, ...], value: Any, expected: str) -> None:
    raw = base()
    _set(raw, path, value)
    problems = problems_of(raw)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_hash_message_says_what_is_expected() -> None:
    raw = base()
    raw["auth"]["keys"][0]["hash"] = "sha256:nothex"
    assert problems_of(raw) == ["auth.keys[0].hash: must be 'sha256:' followed by 64 lowercase hex digits"]


def test_base_url_message_and_trailing_slash() -> None:
    raw = base()
    raw["providers"]["holysheep"]["base_url"] = "ws://up.example"
    assert problems_of(raw) == ["providers.holysheep.base_url: must start with http:// or https://"]
    raw["providers"]["holysheep"]["base_url"] = "https://up.example/v1/"
    assert parse_config(raw, env={}).providers["holysheep"].base_url == "https://up.example/v1"


def test_several_problems_reported_together() -> None:
    raw = base()
    raw["providers"]["holysheep"]["pool_size"] = 0
    raw["models"]["gpt-4"]["on_context_overflow"] = "nope"
    problems = problems_of(raw)
    assert {p.split(":")[0] for p in problems} == {
        "providers.holysheep.pool_size",
        "models.gpt-4.on_context_overflow",
    }


def test_root_must_be_mapping() -> None:
    assert problems_of(["not", "a", "mapping"]) == ["(root): the config must be a mapping"]
    assert problems_of(None) == ["(root): the config must be a mapping"]


# --- provider / route consistency ------------------------------------------


def test_openai_provider_needs_base_url() -> None:
    raw = base()
    del raw["providers"]["holysheep"]["base_url"]
    assert problems_of(raw) == ["providers.holysheep.base_url: required for type 'openai'"]


def test_simulated_provider_rejects_base_url() -> None:
    raw = base()
    raw["providers"]["sim"]["base_url"] = "http://127.0.0.1:9000"
    problems = problems_of(raw)
    assert len(problems) == 1
    assert problems[0].startswith("providers.sim.base_url: ")


def test_openai_provider_rejects_simulation() -> None:
    raw = base()
    raw["providers"]["holysheep"]["simulation"] = {"first_token_ms": 1}
    assert problems_of(raw) == ["providers.holysheep.simulation: only allowed for type 'simulated'"]


def test_truncate_oldest_needs_context_window_for_every_target() -> None:
    raw = base()
    raw["models"]["gpt-4"]["on_context_overflow"] = "truncate_oldest"
    # Target 0 is priced with a window; target 1 is priced without one.
    raw["prices"] = {"deepseek-v3.2": {"context_window": 128000}, "sim-large": {"input": 1}}
    problems = problems_of(raw)
    assert len(problems) == 1
    assert problems[0].startswith("models.gpt-4.targets[1]: on_context_overflow needs a context_window")
    assert "'sim-large'" in problems[0]


def test_truncate_oldest_accepts_provider_qualified_window() -> None:
    raw = base()
    raw["models"]["gpt-4"]["on_context_overflow"] = "truncate_oldest"
    raw["prices"] = {"holysheep/deepseek-v3.2": {"context_window": 64000}, "sim-large": {"context_window": 8000}}
    config = parse_config(raw, env={})
    assert config.models["gpt-4"].on_context_overflow == "truncate_oldest"


def test_truncate_oldest_without_any_price() -> None:
    raw = base()
    raw["models"]["gpt-4"]["on_context_overflow"] = "truncate_oldest"
    problems = problems_of(raw)
    assert [p.split(":")[0] for p in problems] == ["models.gpt-4.targets[0]", "models.gpt-4.targets[1]"]


# --- auth ------------------------------------------------------------------------


def test_keys_mode_without_keys_is_rejected() -> None:
    raw = base()
    raw["auth"] = {"mode": "keys", "keys": []}
    problems = problems_of(raw)
    assert len(problems) == 1
    assert problems[0].startswith("auth.keys: at least one client key is required")
    assert "auth.mode: none" in problems[0]


def test_default_auth_is_keys_and_needs_keys() -> None:
    raw = base()
    del raw["auth"]
    assert problems_of(raw)[0].startswith("auth.keys: ")


def test_mode_none_needs_no_keys() -> None:
    raw = base()
    raw["auth"] = {"mode": "none"}
    assert parse_config(raw, env={}).auth.mode == "none"


def test_key_with_both_hash_and_key_env() -> None:
    raw = base()
    raw["auth"]["keys"][0]["key_env"] = "CLIENT_KEY"
    assert problems_of(raw, {"CLIENT_KEY": "k"}) == ["auth.keys[0]: give exactly one of 'hash' or 'key_env'"]


def test_key_with_neither_hash_nor_key_env() -> None:
    raw = base()
    raw["auth"]["keys"].append({"name": "other"})
    assert problems_of(raw) == ["auth.keys[1]: give exactly one of 'hash' or 'key_env'"]


def test_duplicate_key_names() -> None:
    raw = base()
    raw["auth"]["keys"].append({"name": "apps", "hash": "sha256:" + "cd" * 32})
    assert problems_of(raw) == [
        "auth.keys[0].name: duplicate key name 'apps'",
        "auth.keys[1].name: duplicate key name 'apps'",
    ]


def test_key_env_is_hashed_at_load_time() -> None:
    plain = "sk-client-very-secret-0123"
    raw = base()
    raw["auth"]["keys"] = [{"name": "apps", "key_env": "CLIENT_KEY"}]
    config = parse_config(raw, env={"CLIENT_KEY": plain})
    key = config.auth.keys[0]
    assert key.hash == "sha256:" + hashlib.sha256(plain.encode()).hexdigest()
    assert key.key_env is None
    # Neither the plain key nor anything that could look it up again survives.
    for rendering in (repr(config), str(config), str(config.model_dump()), config.model_dump_json()):
        assert plain not in rendering
        assert "CLIENT_KEY" not in rendering


def test_key_env_unset_names_path_and_variable() -> None:
    raw = base()
    raw["auth"]["keys"] = [{"name": "apps", "key_env": "CLIENT_KEY"}]
    assert problems_of(raw, {}) == ["auth.keys[0].key_env: environment variable 'CLIENT_KEY' is not set"]
    # An empty key would let anyone who sends "Bearer " in; it counts as unset.
    assert problems_of(raw, {"CLIENT_KEY": ""}) == [
        "auth.keys[0].key_env: environment variable 'CLIENT_KEY' is not set"
    ]


# --- ${ENV} interpolation --------------------------------------------------------


def test_env_interpolation_when_set() -> None:
    raw = base()
    raw["providers"]["holysheep"]["api_key"] = "${UP_KEY}"
    raw["providers"]["holysheep"]["base_url"] = "https://${UP_HOST}/v1"
    config = parse_config(raw, env={"UP_KEY": "sk-from-env", "UP_HOST": "gw.example"})
    provider = config.providers["holysheep"]
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-from-env"
    assert provider.base_url == "https://gw.example/v1"


def test_env_interpolation_unset_names_path_and_variable() -> None:
    raw = base()
    raw["providers"]["holysheep"]["api_key"] = "${UP_KEY}"
    raw["models"]["gpt-4"]["targets"][0]["model"] = "${UP_MODEL}"
    assert problems_of(raw, {}) == [
        "providers.holysheep.api_key: environment variable 'UP_KEY' is not set",
        "models.gpt-4.targets[0].model: environment variable 'UP_MODEL' is not set",
    ]


def test_env_interpolation_default() -> None:
    raw = base()
    raw["providers"]["holysheep"]["base_url"] = "${UP_URL:-https://fallback.example/v1}"
    raw["server"] = {"port": "${PORT:-9090}"}
    config = parse_config(raw, env={})
    assert config.providers["holysheep"].base_url == "https://fallback.example/v1"
    # Interpolated text still goes through validation, so numbers are coerced.
    assert config.server.port == 9090
    config = parse_config(raw, env={"UP_URL": "http://127.0.0.1:1", "PORT": "7000"})
    assert config.providers["holysheep"].base_url == "http://127.0.0.1:1"
    assert config.server.port == 7000
    # Shell semantics: ':-' also covers a variable exported empty (`export UP_URL=`).
    config = parse_config(raw, env={"UP_URL": "", "PORT": ""})
    assert config.providers["holysheep"].base_url == "https://fallback.example/v1"
    assert config.server.port == 9090


def test_env_set_but_empty_without_default_is_empty() -> None:
    out, problems = interpolate({"a": "x${EMPTY}y"}, {"EMPTY": ""})
    assert problems == []
    assert out == {"a": "xy"}


def test_interpolated_value_is_validated_at_its_path() -> None:
    raw = base()
    raw["providers"]["holysheep"]["pool_size"] = "${POOL}"
    assert problems_of(raw, {"POOL": "0"})[0].startswith("providers.holysheep.pool_size: ")


def test_interpolate_leaves_non_strings_and_plain_text() -> None:
    tree = {"a": [1, 2.5, True, None, "no refs $HOME"], "b": "${X:-}"}
    out, problems = interpolate(tree, {})
    assert problems == []
    assert out == {"a": [1, 2.5, True, None, "no refs $HOME"], "b": ""}


def test_interpolate_uses_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_TEST_UP_KEY", "sk-process-env")
    raw = base()
    raw["providers"]["holysheep"]["api_key"] = "${CUTOVER_TEST_UP_KEY}"
    config = parse_config(raw)
    assert config.providers["holysheep"].api_key == SecretStr("sk-process-env")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((), "(root)"),
        (("models", "gpt-4", "targets", 1, "provider"), "models.gpt-4.targets[1].provider"),
        (("auth", "keys", 0), "auth.keys[0]"),
    ],
)
def test_format_path(parts: tuple[str | int, ...], expected: str) -> None:
    assert format_path(parts) == expected


# --- secrets ---------------------------------------------------------------------


def test_upstream_api_key_is_secret() -> None:
    config = parse_config(base(), env={})
    api_key = config.providers["holysheep"].api_key
    assert isinstance(api_key, SecretStr)
    assert api_key.get_secret_value() == "sk-upstream"
    assert "sk-upstream" not in repr(config)
    assert "sk-upstream" not in str(config)
    assert "sk-upstream" not in config.model_dump_json()


def test_config_is_frozen() -> None:
    config = parse_config(base(), env={})
    with pytest.raises(ValueError):
        config.server.port = 1  # type: ignore[misc]


# --- files -----------------------------------------------------------------------


def test_load_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "auth: {mode: none}\n"
        "providers:\n  p: {type: openai, base_url: '${BASE:-http://127.0.0.1:1}'}\n"
        "models:\n  m:\n    targets: [{provider: p, model: x}]\n",
        encoding="utf-8",
    )
    assert load_config(path, env={}).providers["p"].base_url == "http://127.0.0.1:1"


def test_invalid_yaml_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("providers:\n  p: {type: openai\nmodels: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: not valid YAML (line ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [f"{path}: cannot read (No such file or directory)"]


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, env={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{tmp_path}: cannot read (")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"server: {host: '\xff\xfe'}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: not valid UTF-8")


def test_empty_file_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == ["(root): the config must be a mapping"]


def test_explicit_nulls_mean_absent() -> None:
    raw = base()
    raw["providers"]["sim"]["base_url"] = None
    raw["auth"]["keys"].append({"name": "env", "hash": None, "key_env": "K"})
    config = parse_config(raw, env={"K": "sk-k"})
    assert config.providers["sim"].base_url is None
    assert config.auth.keys[1].hash == "sha256:" + hashlib.sha256(b"sk-k").hexdigest()
