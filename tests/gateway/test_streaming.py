"""What a streaming client sees when the upstream fails before, or after, the first byte."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import (
    ERROR_FIELDS,
    HELLO,
    UPSTREAM_KEY,
    always,
    assert_error,
    assert_no_leak,
    async_sdk,
    auth,
    data_payloads,
    host_port,
    metric,
    recorded_outcomes,
    route,
    routing,
    scrape,
    sdk,
    sse_lines,
    upstream,
)
from tests.support import BackgroundGateway, wait_for


def full_reply(gw: BackgroundGateway) -> str:
    with sdk(gw) as client:
        content = client.chat.completions.create(model="chat", messages=HELLO).choices[0].message.content
    assert content
    return content


def test_connection_dropped_before_first_byte_is_retried(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    # hang_s=0: the upstream closes the connection without sending a single byte.
    sim = make_sim(script=["timeout", "ok"], hang_s=0)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))
    with sdk(gw) as client:
        chunks = list(client.chat.completions.create(model="chat", messages=HELLO, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert recorded_outcomes(sim) == ["timeout", "ok"]
    assert streamed == full_reply(gw)


def test_connection_dropped_before_first_byte_falls_back(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    broken = make_sim(**always("timeout", hang_s=0))
    healthy = make_sim()
    gw = make_gateway(
        {"broken": upstream(broken), "healthy": upstream(healthy)},
        {"chat": route(("broken", "m"), ("healthy", "m"))},
        routing=routing(attempts=2),
    )
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO, stream=True)
        chunks = list(raw.parse())
    assert raw.headers["x-cutover-provider"] == "healthy"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert recorded_outcomes(broken) == ["timeout", "timeout"]
    assert recorded_outcomes(healthy) == ["ok"]


def test_garbage_first_event_is_not_relayed(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(**always("garbage"))
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))
    with sdk(gw) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO, stream=True)
    assert_error(caught.value.response, status=502, type_="upstream_error", code="bad_gateway", param=None)
    # Nothing had reached the client yet, so the failure was still retryable.
    assert recorded_outcomes(sim) == ["garbage", "garbage"]


def test_mid_stream_break_raises_in_the_sdk(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["stream_break"], output_tokens=16)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=3))
    received: list[str] = []
    with sdk(gw) as client:
        stream = client.chat.completions.create(model="chat", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    error = caught.value
    # A mid-stream failure has no HTTP status to carry: the response was already a 200.
    assert not isinstance(error, openai.APIStatusError)
    assert isinstance(error.body, dict) and error.body["code"] == "stream_broken"
    assert len(received) > 1, "the client should have had chunks before the break"

    partial = "".join(received)
    complete = full_reply(gw)
    assert partial and complete.startswith(partial) and partial != complete
    # Bytes had reached the client, so the gateway must not retry behind its back.
    assert recorded_outcomes(sim) == ["stream_break", "ok"]

    wait_for(lambda: metric(scrape(gw.root_url), "cutover_stream_errors_total", alias="chat", provider="sim") == 1,
             timeout=10, what="the broken stream to be counted")


def test_mid_stream_break_ends_with_error_frame_and_no_done(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    sim = make_sim(script=["stream_break"])
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))})
    body = {"model": "chat", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, headers=auth(), timeout=30) as response:
        assert response.status_code == 200
        raw = response.read().decode()
        assert_no_leak(response, [UPSTREAM_KEY, host_port(sim.base_url)])
    lines = sse_lines(raw)
    payloads = [json.loads(p) for p in data_payloads(lines)]
    assert "[DONE]" not in raw
    assert len(payloads) >= 2
    assert all("choices" in p for p in payloads[:-1])
    last = payloads[-1]
    assert set(last) == {"error"}
    assert set(last["error"]) == ERROR_FIELDS
    assert last["error"]["code"] == "stream_broken"
    assert lines[-1].startswith("data: {")


async def test_mid_stream_break_with_the_async_sdk(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["stream_break"], output_tokens=20)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))})
    received = 0
    async with async_sdk(gw) as client:
        stream = await client.chat.completions.create(model="chat", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError) as caught:
            async for _ in stream:
                received += 1
    assert not isinstance(caught.value, openai.APIStatusError)
    assert received > 1
    assert recorded_outcomes(sim) == ["stream_break"]


def test_client_disconnect_mid_stream_releases_the_upstream(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    # About 10 s of stream if nobody hung up.
    sim = make_sim(output_tokens=200, per_token_ms=50)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))})
    body = {"model": "chat", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, headers=auth(), timeout=30) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                break
    wait_for(lambda: bool(sim.requests) and sim.requests[0].ended_at is not None, timeout=8,
             what="the upstream stream to be abandoned")
    upstream_call = sim.requests[0]
    assert upstream_call.ended_at is not None
    assert upstream_call.ended_at - upstream_call.started_at < 8, "the gateway kept reading after the client left"
    wait_for(lambda: metric(scrape(gw.root_url), "cutover_in_flight_requests", endpoint="chat") == 0,
             timeout=10, what="the in-flight gauge to drop")
