"""POST /v1/completions through real sockets with the OpenAI SDK: passed through to an upstream that serves
legacy completions, translated to Chat Completions for one that does not, and what a chat model cannot do
refused by name."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import (
    auth,
    data_payloads,
    metric,
    recorded_outcomes,
    route,
    scrape,
    sdk,
    sse_lines,
    upstream,
)
from tests.support import BackgroundGateway, wait_for


def speaking(sim: Any, *dialects: str) -> dict[str, Any]:
    return {**upstream(sim), "dialects": list(dialects)}


@pytest.fixture(params=["native", "translated"])
def setup(request: pytest.FixtureRequest, make_sim: SimFactory, make_gateway: GatewayFactory) -> tuple[Any, Any]:
    sim = make_sim(output_tokens=8)
    dialects = ("chat", "completions") if request.param == "native" else ("chat",)
    gw = make_gateway({"sim": speaking(sim, *dialects)}, {"legacy": route(("sim", "sim-model"))})
    return sim, gw


def upstream_paths(sim: Any) -> list[str]:
    return [r.path for r in sim.requests]


def test_a_completion(setup: tuple[Any, BackgroundGateway], request: pytest.FixtureRequest) -> None:
    sim, gw = setup
    native = request.node.callspec.params["setup"] == "native"
    with sdk(gw) as client:
        reply = client.completions.create(model="legacy", prompt="Once upon a time", max_tokens=5)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text == "[simulated] lorem ipsum dolor sit"
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].index == 0
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert upstream_paths(sim) == ["/v1/completions" if native else "/v1/chat/completions"]
    sent = sim.requests[0].body
    if native:
        assert sent["prompt"] == "Once upon a time" and sent["model"] == "sim-model"
    else:
        assert sent["messages"] == [{"role": "user", "content": "Once upon a time"}] and sent["max_tokens"] == 5


def test_the_default_of_16_tokens_is_kept_when_translated(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(output_tokens=40)
    gw = make_gateway({"sim": speaking(sim, "chat")}, {"legacy": route(("sim", "sim-model"))})
    with sdk(gw) as client:
        reply = client.completions.create(model="legacy", prompt="Say a lot")
    assert reply.usage is not None and reply.usage.completion_tokens == 16
    assert sim.requests[0].body["max_tokens"] == 16


def test_a_stream(setup: tuple[Any, BackgroundGateway]) -> None:
    _, gw = setup
    with sdk(gw) as client:
        chunks = list(client.completions.create(model="legacy", prompt="Once", max_tokens=4, stream=True,
                                                stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == "[simulated] lorem ipsum dolor"
    assert all(c.object == "text_completion" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_a_stream_without_usage_asked_has_none(setup: tuple[Any, BackgroundGateway]) -> None:
    _, gw = setup
    body = {"model": "legacy", "prompt": "Once", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/completions", json=body, headers=auth(), timeout=30) as response:
        raw = response.read().decode()
    payloads = data_payloads(sse_lines(raw))
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in json.loads(p) or json.loads(p)["usage"] is None for p in payloads[:-1])
    assert raw.count(": x-cutover-cost-usd") == 1


@pytest.mark.parametrize(
    ("field", "extra"),
    [
        ("suffix", {"suffix": "The end."}),
        ("echo", {"echo": True}),
        ("logprobs", {"logprobs": 2}),
        ("best_of", {"best_of": 3}),
        ("prompt", {"prompt": ["one", "two"]}),
        ("prompt", {"prompt": [1212, 318]}),
    ],
)
def test_what_a_chat_model_cannot_do_is_refused_by_name(
    make_sim: SimFactory, make_gateway: GatewayFactory, field: str, extra: dict[str, Any]
) -> None:
    sim = make_sim()
    gw = make_gateway({"sim": speaking(sim, "chat")}, {"legacy": route(("sim", "sim-model"))})
    with sdk(gw) as client, pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**{"model": "legacy", "prompt": "x", **extra})
    assert caught.value.body["param"] == field  # type: ignore[index]
    assert caught.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    assert "'sim-model' of provider 'sim'" in caught.value.body["message"]  # type: ignore[index]
    assert sim.requests == []


def test_a_request_only_a_native_upstream_can_honour_skips_the_others(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    chat_only, native = make_sim(), make_sim()
    gw = make_gateway({"chat_only": speaking(chat_only, "chat"), "native": speaking(native, "chat", "completions")},
                      {"legacy": route(("chat_only", "sim-model"), ("native", "sim-model"))})
    with sdk(gw) as client:
        plain = client.completions.create(model="legacy", prompt="x", max_tokens=2)
        with_suffix = client.completions.create(model="legacy", prompt="x", suffix="!", echo=True, max_tokens=2)
    assert plain.choices[0].text and with_suffix.choices[0].text
    assert upstream_paths(chat_only) == ["/v1/chat/completions"]
    assert upstream_paths(native) == ["/v1/completions"]
    assert native.requests[0].body["suffix"] == "!"


def test_a_translated_stream_that_breaks_ends_with_an_error(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["stream_break"], output_tokens=16)
    gw = make_gateway({"sim": speaking(sim, "chat")}, {"legacy": route(("sim", "sim-model"))})
    body = {"model": "legacy", "prompt": "Once", "max_tokens": 16, "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/completions", json=body, headers=auth(), timeout=30) as response:
        raw = response.read().decode()
    payloads = [json.loads(p) for p in data_payloads(sse_lines(raw))]
    assert "[DONE]" not in raw
    assert payloads[0]["object"] == "text_completion"
    assert payloads[-1]["error"]["code"] == "stream_broken"
    assert recorded_outcomes(sim) == ["stream_break"]
    wait_for(lambda: metric(scrape(gw.root_url), "cutover_stream_errors_total", alias="legacy") == 1,
             timeout=10, what="the broken stream to be counted")


def test_requests_are_counted_under_their_endpoint(setup: tuple[Any, BackgroundGateway]) -> None:
    _, gw = setup
    with sdk(gw) as client:
        client.completions.create(model="legacy", prompt="x", max_tokens=2)
    wait_for(lambda: metric(scrape(gw.root_url), "cutover_requests_total", endpoint="completions") == 1,
             timeout=10, what="the request to be counted")
