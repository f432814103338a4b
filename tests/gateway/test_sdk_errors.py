"""Every error class the gateway answers with, as the OpenAI SDK sees it.

Each case checks the SDK exception class, the exact OpenAI error envelope, that
nothing answered 500, and that no upstream address or key leaked into the
response body or headers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from simulator import BackgroundSimulator, SimulationSettings
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import (
    HELLO,
    UPSTREAM_KEY,
    always,
    assert_error,
    assert_no_leak,
    auth,
    host_port,
    recorded_outcomes,
    route,
    routing,
    sdk,
    upstream,
)
from tests.support import BackgroundGateway, free_port, gateway_config, unaccepting_port

MAX_BODY = 4096


@dataclass
class Env:
    sim: BackgroundSimulator
    gw: BackgroundGateway
    secrets: list[str]

    def settle(self, **settings: Any) -> None:
        self.sim.set_settings(SimulationSettings(**settings))
        self.sim.clear_requests()


@pytest.fixture(scope="module")
def shared() -> Iterator[Env]:
    # One gateway for the whole module: most cases here never reach the upstream, and
    # the rest reset the simulator first (see `env`); the breaker threshold is far
    # above the number of failures the module causes.
    with BackgroundSimulator() as sim:
        config = gateway_config(
            {"sim": upstream(sim, total=1.0)},
            {"chat": route(("sim", "sim-chat")), "chat-mini": route(("sim", "sim-chat-mini")),
             "embed": route(("sim", "sim-embed"))},
            server={"max_body_bytes": MAX_BODY},
            routing=routing(attempts=2, failure_threshold=1000),
        )
        with BackgroundGateway(config) as gw:
            yield Env(sim, gw, [UPSTREAM_KEY, host_port(sim.base_url), sim.base_url])


@pytest.fixture
def env(shared: Env) -> Env:
    shared.settle()
    return shared


@pytest.fixture
def client(env: Env) -> Iterator[openai.OpenAI]:
    with sdk(env.gw) as c:
        yield c


# --- 400: the client's own malformed request, rejected before any upstream call ----------------


def test_invalid_json_is_400(env: Env, client: openai.OpenAI) -> None:
    raw = httpx.post(
        f"{env.gw.base_url}/chat/completions", content=b'{"model": "chat", "messages": [', timeout=10,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert_error(raw, status=400, type_="invalid_request_error", code=None, param=None)
    assert "JSON" in raw.json()["error"]["message"]
    assert_no_leak(raw, env.secrets)

    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", content=b"[not json", cast_to=object,
                    options={"headers": {"Content-Type": "application/json"}})
    assert_error(caught.value.response, status=400, type_="invalid_request_error", code=None, param=None)
    assert env.sim.requests == []


FIELD_ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    ("/chat/completions", {"messages": HELLO}, "model", "missing_required_parameter"),
    ("/chat/completions", {"model": 42, "messages": HELLO}, "model", "invalid_type"),
    ("/chat/completions", {"model": "chat"}, "messages", "missing_required_parameter"),
    ("/chat/completions", {"model": "chat", "messages": "hello"}, "messages", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": []}, "messages", "empty_array"),
    ("/chat/completions", {"model": "chat", "messages": ["hello"]}, "messages[0]", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": [{"content": "hi"}]}, "messages[0].role", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role",
     "invalid_value"),
    ("/chat/completions", {"model": "chat", "messages": [*HELLO, {"role": "user", "content": 7}]},
     "messages[1].content", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "stream": "yes"}, "stream", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "stream": True, "stream_options": "on"},
     "stream_options", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "stream": True,
                           "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage",
     "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "max_tokens": "10"}, "max_tokens", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "max_tokens": 0}, "max_tokens", "invalid_value"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "max_completion_tokens": 1.5},
     "max_completion_tokens", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "n": True}, "n", "invalid_type"),
    ("/chat/completions", {"model": "chat", "messages": HELLO, "temperature": "hot"}, "temperature",
     "invalid_type"),
    ("/embeddings", {"model": "embed"}, "input", "missing_required_parameter"),
    ("/embeddings", {"model": "embed", "input": [1, "mixed"]}, "input", "invalid_type"),
    ("/embeddings", {"input": "hi"}, "model", "missing_required_parameter"),
]


@pytest.mark.parametrize(
    ("path", "body", "param", "code"), FIELD_ERRORS, ids=[f"{p[1:]}:{param}:{c}" for p, _, param, c in FIELD_ERRORS]
)
def test_bad_fields_name_the_param(
    env: Env, client: openai.OpenAI, path: str, body: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(path, body=body, cast_to=object)
    assert caught.value.param == param
    assert_error(caught.value.response, status=400, type_="invalid_request_error", code=code, param=param)
    assert_no_leak(caught.value.response, env.secrets)
    assert env.sim.requests == []


# --- 401, 404, 405, 413 -----------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer sk-not-the-key"])
def test_missing_or_wrong_key_is_401(env: Env, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path, body in (("POST", "/chat/completions", {"model": "chat", "messages": HELLO}),
                               ("GET", "/models", None)):
        response = httpx.request(method, f"{env.gw.base_url}{path}", json=body, headers=headers, timeout=10)
        assert_error(response, status=401, type_="authentication_error", code="invalid_api_key", param=None,
                     request_id=path != "/models")
        assert_no_leak(response, env.secrets)
    assert env.sim.requests == []


def test_wrong_key_through_the_sdk(env: Env) -> None:
    with sdk(env.gw, api_key="sk-wrong-key") as client:
        with pytest.raises(openai.AuthenticationError) as chat:
            client.chat.completions.create(model="chat", messages=HELLO)
        with pytest.raises(openai.AuthenticationError):
            client.embeddings.create(model="embed", input="hi")
        with pytest.raises(openai.AuthenticationError):
            client.models.retrieve("chat")
    assert_error(chat.value.response, status=401, type_="authentication_error", code="invalid_api_key", param=None)
    assert env.sim.requests == []


def test_unknown_model_is_404_with_nearest_aliases(env: Env, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="chat-mni", messages=HELLO)
    error = assert_error(caught.value.response, status=404, type_="invalid_request_error", code="model_not_found",
                         param="model")
    assert "'chat-mni'" in error["message"]
    assert "'chat-mini'" in error["message"] and "'chat'" in error["message"]
    assert_no_leak(caught.value.response, env.secrets)

    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="embedd", input="hi")
    assert env.sim.requests == []


def test_unknown_path_and_wrong_method(env: Env) -> None:
    missing = httpx.get(f"{env.gw.base_url}/nothing-here", headers=auth(), timeout=10)
    assert_error(missing, status=404, type_="invalid_request_error", code="unknown_url", param=None, request_id=False)
    wrong = httpx.get(f"{env.gw.base_url}/chat/completions", headers=auth(), timeout=10)
    assert_error(wrong, status=405, type_="invalid_request_error", code="method_not_allowed", param=None,
                 request_id=False)
    assert wrong.headers["allow"] == "POST"
    for path in ("/v1/models", "/healthz"):
        refused = httpx.post(f"{env.gw.root_url}{path}", headers=auth(), timeout=10)
        assert_error(refused, status=405, type_="invalid_request_error", code="method_not_allowed", param=None,
                     request_id=False)
        assert refused.headers["allow"] == "GET"


def test_body_over_limit_is_413(env: Env, client: openai.OpenAI) -> None:
    big = [{"role": "user", "content": "x" * (MAX_BODY + 100)}]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="chat", messages=big)
    # The SDK has no dedicated class for 413: it must be the base status error, not a 5xx one.
    assert type(caught.value) is openai.APIStatusError
    assert_error(caught.value.response, status=413, type_="invalid_request_error", code="request_too_large",
                 param=None)

    # Without a Content-Length the limit must still hold while the body streams in.
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"y" * 1024
        yield b'"}]}'

    chunked = httpx.post(f"{env.gw.base_url}/chat/completions", content=chunks(), timeout=10,
                         headers={**auth(), "Content-Type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert_error(chunked, status=413, type_="invalid_request_error", code="request_too_large", param=None)
    assert env.sim.requests == []


# --- upstream failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit_after_retries_is_429(
    env: Env, client: openai.OpenAI, stream: bool
) -> None:
    env.settle(**always("rate_limit", retry_after_s=0.05))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO, stream=stream)
    response = caught.value.response
    assert_error(response, status=429, type_="rate_limit_error", code="rate_limit_exceeded", param=None)
    assert int(response.headers["retry-after"]) >= 1
    assert_no_leak(response, env.secrets)
    # Retried once on the only target (max_attempts_per_target=2), then given up.
    assert recorded_outcomes(env.sim) == ["rate_limit", "rate_limit"]


def test_upstream_garbage_is_502(env: Env, client: openai.OpenAI) -> None:
    env.settle(**always("garbage"))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO)
    assert_error(caught.value.response, status=502, type_="upstream_error", code="bad_gateway", param=None)
    assert_no_leak(caught.value.response, env.secrets)
    assert recorded_outcomes(env.sim) == ["garbage", "garbage"]


def test_upstream_truncated_body_is_502(env: Env, client: openai.OpenAI) -> None:
    # stream_break on a non-stream request: the JSON body is cut off half-way.
    env.settle(**always("stream_break"))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO)
    assert_error(caught.value.response, status=502, type_="upstream_error", code="bad_gateway", param=None)
    assert_no_leak(caught.value.response, env.secrets)


@pytest.mark.parametrize("kind", ["server_error", "unavailable"])
def test_upstream_5xx_after_retries(env: Env, client: openai.OpenAI, kind: str) -> None:
    env.settle(**always(kind))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO)
    if kind == "server_error":
        assert_error(caught.value.response, status=502, type_="upstream_error", code="bad_gateway", param=None)
    else:
        assert_error(caught.value.response, status=503, type_="service_unavailable", code="no_healthy_upstream",
                     param=None)
    assert_no_leak(caught.value.response, env.secrets)
    assert recorded_outcomes(env.sim) == [kind, kind]


@pytest.mark.parametrize("stream", [False, True])
def test_all_targets_unreachable_is_503(make_gateway: GatewayFactory, stream: bool) -> None:
    closed = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    gw = make_gateway(
        {"a": upstream(closed[0]), "b": upstream(closed[1])},
        {"chat": route(("a", "m"), ("b", "m"))},
        routing=routing(attempts=2),
    )
    with sdk(gw) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO, stream=stream)
    assert_error(caught.value.response, status=503, type_="service_unavailable", code="no_healthy_upstream",
                 param=None)
    assert_no_leak(caught.value.response, [UPSTREAM_KEY, *(host_port(u) for u in closed)])


def test_every_target_cooling_down_is_503(sim: BackgroundSimulator, make_gateway: GatewayFactory) -> None:
    sim.set_settings(SimulationSettings(**always("server_error")))
    gw = make_gateway(
        {"sim": upstream(sim)}, {"chat": route(("sim", "sim-chat"))},
        routing=routing(attempts=3, failure_threshold=1, cooldown_s=60),
    )
    secrets = [UPSTREAM_KEY, host_port(sim.base_url)]
    with sdk(gw) as client:
        with pytest.raises(openai.InternalServerError) as first:
            client.chat.completions.create(model="chat", messages=HELLO)
        # The first failure opened the circuit, which also ends the retries on that target.
        assert_error(first.value.response, status=502, type_="upstream_error", code="bad_gateway", param=None)
        assert len(sim.requests) == 1

        with pytest.raises(openai.InternalServerError) as second:
            client.chat.completions.create(model="chat", messages=HELLO)
    error = assert_error(second.value.response, status=503, type_="service_unavailable", code="no_healthy_upstream",
                         param=None)
    assert "cooling down" in error["message"]
    assert int(second.value.response.headers["retry-after"]) >= 1
    assert_no_leak(second.value.response, secrets)
    assert len(sim.requests) == 1, "a cooling target must not be called"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(sim: BackgroundSimulator, make_gateway: GatewayFactory, stream: bool) -> None:
    sim.set_settings(SimulationSettings(**always("timeout", hang_s=20)))
    gw = make_gateway(
        {"sim": upstream(sim, total=0.3)}, {"chat": route(("sim", "sim-chat"))}, routing=routing(attempts=1)
    )
    started = time.perf_counter()
    with sdk(gw) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO, stream=stream)
    elapsed = time.perf_counter() - started
    assert_error(caught.value.response, status=504, type_="timeout_error", code="upstream_timeout", param=None)
    assert_no_leak(caught.value.response, [UPSTREAM_KEY, host_port(sim.base_url)])
    # Bounded by the provider's 0.3 s timeout, nowhere near the 20 s hang.
    assert elapsed < 10
    assert recorded_outcomes(sim) == ["timeout"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_target_that_never_accepts_is_504(make_gateway: GatewayFactory, stream: bool) -> None:
    with unaccepting_port() as port:
        url = f"http://127.0.0.1:{port}/v1"
        gw = make_gateway({"a": upstream(url, total=0.3)}, {"chat": route(("a", "m"))}, routing=routing(attempts=1))
        with sdk(gw, max_retries=0) as client, pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="chat", messages=HELLO, stream=stream)
    assert_error(caught.value.response, status=504, type_="timeout_error", code="upstream_timeout", param=None)
    assert_no_leak(caught.value.response, [UPSTREAM_KEY, host_port(url)])


def test_upstream_400_is_returned_as_is_and_not_retried(env: Env, client: openai.OpenAI) -> None:
    # The gateway does not check encoding_format; the simulator rejects it like OpenAI does.
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="embed", input="hello", encoding_format="hex")  # type: ignore[arg-type]
    response = caught.value.response
    assert response.json() == {
        "error": {
            "message": "'encoding_format' must be 'float' or 'base64'.",
            "type": "invalid_request_error",
            "param": "encoding_format",
            "code": None,
        }
    }
    assert response.headers["x-request-id"].startswith("req_")
    assert_no_leak(response, env.secrets)
    assert recorded_outcomes(env.sim) == ["invalid_request"]


def test_client_errors_do_not_open_the_circuit(sim: BackgroundSimulator, make_gateway: GatewayFactory) -> None:
    gw = make_gateway(
        {"sim": upstream(sim)}, {"embed": route(("sim", "sim-embed"))},
        routing=routing(failure_threshold=1, cooldown_s=60),
    )
    with sdk(gw) as client:
        for _ in range(3):
            with pytest.raises(openai.BadRequestError):
                client.embeddings.create(model="embed", input="hi", encoding_format="hex")  # type: ignore[arg-type]
        # With a threshold of 1, any counted failure would have put the only target on cool-down.
        assert client.embeddings.create(model="embed", input="hello").data
    assert recorded_outcomes(sim) == ["invalid_request"] * 3 + ["ok"]
