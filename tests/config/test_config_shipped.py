"""The configs shipped in config/ load, and `cutover check-config` reports on them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config
from gateway.cli import main

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEMO = CONFIG_DIR / "demo.yaml"
AGGREGATOR = CONFIG_DIR / "aggregator.example.yaml"
OPENAI = CONFIG_DIR / "openai.example.yaml"

AGGREGATOR_ENV = {"AGGREGATOR_API_KEY": "sk-agg-upstream", "CUTOVER_CLIENT_KEY": "sk-client-apps"}
OPENAI_ENV = {"OPENAI_API_KEY": "sk-oa", "FALLBACK_API_KEY": "sk-fb", "CUTOVER_CLIENT_KEY": "sk-client-apps"}


def test_demo_loads_without_any_environment() -> None:
    config = load_config(DEMO, env={})
    assert {p.type for p in config.providers.values()} == {"simulated"}
    assert [t.provider for t in config.models["gpt-4"].targets] == ["sim-primary", "sim-backup"]
    # The banner's documented demo key must match the stored digest.
    assert config.auth.keys[0].hash == "sha256:" + hashlib.sha256(b"sk-cutover-demo").hexdigest()


def test_aggregator_example_expresses_seed_alias_table() -> None:
    config = load_config(AGGREGATOR, env=AGGREGATOR_ENV)
    table = {alias: [(t.provider, t.model) for t in route.targets] for alias, route in config.models.items()}
    assert table == {
        "gpt-4": [("aggregator", "deepseek-v3.2")],
        "gpt-4-turbo": [("aggregator", "deepseek-v3.2")],
        "claude-3-sonnet": [("aggregator", "claude-sonnet-4.5")],
        "gemini-pro": [("aggregator", "gemini-2.5-flash")],
    }
    assert list(config.providers) == ["aggregator"]
    provider = config.providers["aggregator"]
    assert provider.base_url == "https://api.aggregator.example/v1"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-agg-upstream"
    # Every upstream model has a price, so spend is never silently zero.
    assert {t.model for route in config.models.values() for t in route.targets} <= set(config.prices)
    assert config.auth.keys[0].hash == "sha256:" + hashlib.sha256(b"sk-client-apps").hexdigest()


def test_aggregator_base_url_override() -> None:
    env = {**AGGREGATOR_ENV, "AGGREGATOR_BASE_URL": "http://127.0.0.1:9000/v1"}
    assert load_config(AGGREGATOR, env=env).providers["aggregator"].base_url == "http://127.0.0.1:9000/v1"


def test_openai_example_loads() -> None:
    config = load_config(OPENAI, env=OPENAI_ENV)
    assert [t.provider for t in config.models["gpt-4o"].targets] == ["openai", "fallback"]
    assert config.providers["fallback"].base_url == "https://api.fallback.example/v1"


@pytest.mark.parametrize(("path", "env"), [(AGGREGATOR, AGGREGATOR_ENV), (OPENAI, OPENAI_ENV)])
def test_examples_name_every_missing_variable(path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    text = "\n".join(caught.value.problems)
    # Interpolation fails first, so the client key is reported once the others are set.
    for name in env:
        if name != "CUTOVER_CLIENT_KEY":
            assert f"environment variable '{name}' is not set" in text


def test_examples_need_the_client_key() -> None:
    env = {k: v for k, v in AGGREGATOR_ENV.items() if k != "CUTOVER_CLIENT_KEY"}
    with pytest.raises(ConfigError) as caught:
        load_config(AGGREGATOR, env=env)
    assert caught.value.problems == ["auth.keys[0].key_env: environment variable 'CUTOVER_CLIENT_KEY' is not set"]


def _clear(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    for name in [*names, "AGGREGATOR_BASE_URL", "FALLBACK_BASE_URL"]:
        monkeypatch.delenv(name, raising=False)


def test_cli_check_config_demo_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "ok (2 providers, 5 models, 1 meta-models, 0 migrations)" in out


@pytest.mark.parametrize(("path", "env"), [(AGGREGATOR, AGGREGATOR_ENV), (OPENAI, OPENAI_ENV)])
def test_cli_check_config_examples_with_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: Path, env: dict[str, str]
) -> None:
    _clear(monkeypatch, env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config", str(path)]) == 0
    assert ": ok (" in capsys.readouterr().out


@pytest.mark.parametrize(("path", "env"), [(AGGREGATOR, AGGREGATOR_ENV), (OPENAI, OPENAI_ENV)])
def test_cli_check_config_examples_without_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: Path, env: dict[str, str]
) -> None:
    _clear(monkeypatch, env)
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "is not set" in captured.err


def test_cli_check_config_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "auth: {mode: none}\n"
        "providers:\n  holysheep: {type: openai, base_url: 'http://127.0.0.1:1'}\n"
        "models:\n  gpt-4:\n    targets:\n"
        "      - {provider: holysheep, model: a}\n"
        "      - {provider: holysheep2, model: b}\n",
        encoding="utf-8",
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models.gpt-4.targets[1].provider: unknown provider 'holysheep2'" in err


def test_cli_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_hash_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-key", "sk-cutover-demo"]) == 0
    assert capsys.readouterr().out.strip() == "sha256:" + hashlib.sha256(b"sk-cutover-demo").hexdigest()
