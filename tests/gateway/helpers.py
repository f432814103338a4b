"""Helpers shared by the gateway integration tests: config builders, error and leak checks, metrics.

Fixtures live in conftest.py; this module holds plain functions so test files
can import them explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from openai import AsyncOpenAI, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from simulator import BackgroundSimulator
from tests.support import CLIENT_KEY, BackgroundGateway

# Configured on every upstream provider so tests can prove it never reaches a client.
UPSTREAM_KEY = "sk-upstream-secret-9f3c1e7a"
HELLO = [{"role": "user", "content": "Hello there, gateway."}]
ERROR_FIELDS = {"message", "type", "param", "code"}
_MILLION = Decimal(1_000_000)


class HTTPResponseLike(Protocol):
    """What httpx.Response and the SDK's own response class have in common."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def headers(self) -> Any: ...

    def json(self) -> Any: ...


def sdk(gw: BackgroundGateway, *, api_key: str = CLIENT_KEY, **kwargs: Any) -> OpenAI:
    # max_retries=0: a test must see the gateway's own answer, not the SDK's retry of it.
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 30.0)
    return OpenAI(base_url=gw.base_url, api_key=api_key, **kwargs)


def async_sdk(gw: BackgroundGateway, *, api_key: str = CLIENT_KEY, **kwargs: Any) -> AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 30.0)
    return AsyncOpenAI(base_url=gw.base_url, api_key=api_key, **kwargs)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEY}"}


def upstream(
    base: BackgroundSimulator | str, *, total: float | None = None, api_key: str | None = UPSTREAM_KEY
) -> dict[str, Any]:
    """An OpenAI-compatible provider entry pointing at a simulator (or any URL)."""
    spec: dict[str, Any] = {"type": "openai", "base_url": base if isinstance(base, str) else base.base_url}
    if api_key is not None:
        spec["api_key"] = api_key
    if total is not None:
        spec["timeouts"] = {"connect": total, "read": total, "total": total}
    return spec


def route(*targets: tuple[str, str], overflow: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"targets": [{"provider": p, "model": m} for p, m in targets]}
    if overflow is not None:
        spec["on_context_overflow"] = overflow
    return spec


def routing(
    *,
    attempts: int = 2,
    failure_threshold: int = 50,
    cooldown_s: float = 30.0,
    retry_after_cap_s: float = 5.0,
) -> dict[str, Any]:
    # Tiny backoff keeps the suite fast; a high default threshold keeps breakers
    # out of tests that are not about them.
    return {
        "retry": {
            "max_attempts_per_target": attempts,
            "initial_backoff_s": 0.01,
            "max_backoff_s": 0.05,
            "jitter_s": 0.0,
            "retry_after_cap_s": retry_after_cap_s,
        },
        "circuit_breaker": {"failure_threshold": failure_threshold, "cooldown_s": cooldown_s},
    }


def always(kind: str, **extra: Any) -> dict[str, Any]:
    """Simulator settings under which every request meets the fault `kind`."""
    return {"error_rate": 1.0, "error_kinds": {kind: 1.0}, **extra}


def host_port(url: str) -> str:
    return urlsplit(url).netloc


def cost(prompt: int, completion: int, input_per_m: str, output_per_m: str) -> Decimal:
    return (prompt * Decimal(input_per_m) + completion * Decimal(output_per_m)) / _MILLION


def assert_error(
    response: HTTPResponseLike,
    *,
    status: int,
    type_: str,
    code: str | None,
    param: str | None,
    request_id: bool = True,
) -> dict[str, Any]:
    """The OpenAI error envelope, exactly: {"error": {"message", "type", "param", "code"}}.

    `request_id`: the proxy endpoints tag even their errors with x-request-id; the
    FastAPI-served routes (models, health) do not.
    """
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_FIELDS, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert error["type"] == type_, error
    assert error["code"] == code, error
    assert error["param"] == param, error
    if request_id:
        assert response.headers.get("x-request-id", "").startswith("req_"), dict(response.headers)
    return dict(error)


def assert_no_leak(response: HTTPResponseLike, secrets: Iterable[str]) -> None:
    """No upstream address or key in the body or any header (names included)."""
    assert response.status_code != 500, response.text
    text = response.text
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked in body: {text[:500]}"
        assert secret not in headers, f"{secret!r} leaked in headers: {headers}"


def scrape(root_url: str) -> str:
    response = httpx.get(f"{root_url}/metrics", timeout=10.0)
    assert response.status_code == 200
    return response.text


def metric(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples named `sample` whose labels include `labels`; 0 when none match."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def sse_lines(raw: str) -> list[str]:
    """Non-empty lines of an event stream, in order."""
    return [line for line in raw.splitlines() if line]


def data_payloads(lines: Iterable[str]) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def recorded_outcomes(sim: BackgroundSimulator) -> list[str]:
    return [r.outcome for r in sim.requests]
