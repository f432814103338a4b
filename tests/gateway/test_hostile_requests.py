"""Requests built to hurt the gateway or other clients are the sender's own 400, and cost no upstream its health.

Through real sockets with the OpenAI SDK, against a gateway whose only target would cool down after a single
counted failure: if any of these requests counted against it, the ordinary request that follows would get 503.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from gateway.dialects.openai import MAX_NESTING
from simulator import BackgroundSimulator
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import HELLO, recorded_outcomes, route, routing, sdk, upstream


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_tool(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return {"type": "function", "function": {"name": "f", "parameters": schema}}


@pytest.fixture
def client(sim: BackgroundSimulator, make_gateway: GatewayFactory) -> Any:
    gw = make_gateway(
        {"sim": upstream(sim)}, {"chat": route(("sim", "sim-chat")), "embed": route(("sim", "sim-embed"))},
        routing=routing(failure_threshold=1, cooldown_s=60),
    )
    with sdk(gw, max_retries=0) as c:
        yield c


def test_nesting_too_deep_for_the_upstream_is_400_naming_the_field(sim: BackgroundSimulator, client: Any) -> None:
    # 300 levels: orjson would refuse to serialise the upstream request (it stops at 255).
    for _ in range(3):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="chat", messages=HELLO, extra_body={"metadata": nested(300)})
        assert caught.value.body["param"] == "metadata"  # type: ignore[index]
        assert caught.value.body["code"] == "invalid_value"  # type: ignore[index]
        assert str(MAX_NESTING) in caught.value.body["message"]  # type: ignore[index]
    assert sim.requests == []
    assert client.chat.completions.create(model="chat", messages=HELLO).choices


def test_deep_tools_in_a_large_body_are_400_not_500(sim: BackgroundSimulator, client: Any) -> None:
    # Over 16 KB, the gateway counts the prompt's tokens exactly; a 300-deep tool schema once raised there.
    messages = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chat", messages=messages, tools=[deep_tool(300)])
    assert caught.value.body["param"] == "tools"  # type: ignore[index]
    deep_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "extra": nested(300)}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="chat", messages=[*messages, {"role": "assistant", "tool_calls": [deep_call]}],
        )
    assert caught.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="embed", input=nested(300, 1))
    assert sim.requests == []
    assert client.chat.completions.create(model="chat", messages=messages).choices
    assert recorded_outcomes(sim) == ["ok"]


def test_nesting_at_the_limit_is_forwarded(sim: BackgroundSimulator, client: Any) -> None:
    # The body is level 1 and "metadata" holds the rest: exactly MAX_NESTING levels in all.
    at_limit = {"metadata": {"k": nested(MAX_NESTING - 2)}}
    client.chat.completions.create(model="chat", messages=HELLO, extra_body=at_limit)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="chat", messages=HELLO, extra_body={"metadata": {"k": nested(MAX_NESTING - 1)}},
        )
    assert len(sim.requests) == 1


def test_the_in_process_simulator_refuses_a_huge_embedding(make_gateway: GatewayFactory) -> None:
    # It shares the gateway's event loop: 816,980,841 dimensions once stopped every answer for minutes.
    gw = make_gateway({"sim": {"type": "simulated"}}, {"embed": route(("sim", "sim-embed"))})
    with sdk(gw, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="embed", input="x", dimensions=816980841)
        assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
        assert len(client.embeddings.create(model="embed", input="x", dimensions=3072).data[0].embedding) == 3072
    assert httpx.get(f"{gw.root_url}/healthz", timeout=10).status_code == 200
