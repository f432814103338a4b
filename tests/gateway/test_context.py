"""Context-window handling: reject before calling the upstream, or drop the oldest turns to fit."""

from __future__ import annotations

import threading
from typing import Any

import openai
import pytest

from metering.tokens import TokenCounter
from simulator import BackgroundSimulator
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import HELLO, assert_error, metric, route, scrape, sdk, upstream
from tests.support import BackgroundGateway, wait_for

# About 100 tokens each with cl100k, so the arithmetic below has wide margins.
LONG = " ".join(["apple"] * 100)
SYSTEM = {"role": "system", "content": "You are a terse assistant."}
NEWEST = {"role": "user", "content": "And what about pears?"}
CONVERSATION: list[dict[str, Any]] = [
    SYSTEM,
    {"role": "user", "content": "first question " + LONG},
    {"role": "assistant", "content": "first answer " + LONG},
    {"role": "user", "content": "second question " + LONG},
    {"role": "assistant", "content": "second answer " + LONG},
    NEWEST,
]
MAX_TOKENS = 16
# ~440 prompt tokens in all; a 244-token budget fits only after dropping the first exchange.
WINDOW = 260


def gateway(sim: BackgroundSimulator, make_gateway: GatewayFactory, overflow: str, window: int) -> BackgroundGateway:
    return make_gateway(
        {"sim": upstream(sim)},
        {"chat": route(("sim", "small-model"), overflow=overflow)},
        prices={"small-model": {"input": "1", "output": "1", "context_window": window}},
    )


def test_overflow_with_error_policy_is_400_without_upstream_call(
    sim: BackgroundSimulator, make_gateway: GatewayFactory
) -> None:
    gw = gateway(sim, make_gateway, "error", 64)
    with sdk(gw) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": LONG}], max_tokens=10)
    error = assert_error(caught.value.response, status=400, type_="invalid_request_error",
                         code="context_length_exceeded", param="messages")
    assert caught.value.code == "context_length_exceeded"
    assert "64" in error["message"]
    assert sim.requests == []


def test_request_that_fits_is_untouched(sim: BackgroundSimulator, make_gateway: GatewayFactory) -> None:
    gw = gateway(sim, make_gateway, "truncate_oldest", 4096)
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=CONVERSATION,
                                                               max_tokens=MAX_TOKENS)
    assert "x-cutover-context-truncated" not in raw.headers
    assert sim.requests[0].body["messages"] == CONVERSATION


@pytest.mark.parametrize("stream", [False, True])
def test_truncate_oldest_keeps_system_and_newest(
    sim: BackgroundSimulator, make_gateway: GatewayFactory, stream: bool
) -> None:
    gw = gateway(sim, make_gateway, "truncate_oldest", WINDOW)
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=CONVERSATION, max_tokens=MAX_TOKENS, stream=stream
        )
        if stream:
            assert list(raw.parse())[-1].choices[0].finish_reason is not None
        else:
            assert raw.parse().choices[0].message.content

    sent = sim.requests[0].body["messages"]
    assert len(sent) < len(CONVERSATION)
    assert sent[0] == SYSTEM
    assert sent[-1] == NEWEST
    # The oldest exchange goes first; the system prompt and the recent tail stay, in order.
    assert sent == [SYSTEM, *CONVERSATION[3:]]
    assert raw.headers["x-cutover-context-truncated"] == str(len(CONVERSATION) - len(sent))
    wait_for(lambda: metric(scrape(gw.root_url), "cutover_context_truncations_total", alias="chat") == 1,
             timeout=10, what="the truncation to be counted")


def test_truncation_that_cannot_fit_is_400(sim: BackgroundSimulator, make_gateway: GatewayFactory) -> None:
    gw = gateway(sim, make_gateway, "truncate_oldest", 64)
    # Only the newest message is left to keep, and on its own it is already too long.
    with sdk(gw) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chat", messages=[SYSTEM, {"role": "user", "content": LONG}],
                                       max_tokens=MAX_TOKENS)
    assert_error(caught.value.response, status=400, type_="invalid_request_error",
                 code="context_length_exceeded", param="messages")
    assert sim.requests == []


def test_overflowing_target_is_skipped_for_one_that_fits(
    sim: BackgroundSimulator, make_gateway: GatewayFactory
) -> None:
    gw = make_gateway(
        {"sim": upstream(sim)},
        {"chat": route(("sim", "tiny-model"), ("sim", "huge-model"))},
        prices={"tiny-model": {"context_window": 64}, "huge-model": {"context_window": 100_000}},
    )
    with sdk(gw) as client:
        long_raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": LONG}]
        )
        short_raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    assert long_raw.headers["x-cutover-model"] == "huge-model"
    assert short_raw.headers["x-cutover-model"] == "tiny-model"
    assert [r.body["model"] for r in sim.requests] == ["huge-model", "tiny-model"]


def test_big_prompts_are_counted_off_the_event_loop(
    sim: BackgroundSimulator, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted_on: list[str] = []
    count_prompt = TokenCounter.count_prompt

    def recording(self: TokenCounter, payload: Any) -> int:
        counted_on.append(threading.current_thread().name)
        return count_prompt(self, payload)

    monkeypatch.setattr(TokenCounter, "count_prompt", recording)
    gw = gateway(sim, make_gateway, "error", 200_000)
    big = " ".join(["apple"] * 40_000)  # 240 KB: over the cheap bound of a 200k window, so counted exactly
    small = " ".join(["apple"] * 300)  # 1.8 KB: over the bound of a 1,000 window, so counted, but on the loop
    with sdk(gw) as client:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": big}],
                                       max_tokens=MAX_TOKENS)
    small_gw = gateway(sim, make_gateway, "error", 1_000)
    with sdk(small_gw) as client:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": small}],
                                       max_tokens=MAX_TOKENS)
    [big_thread, small_thread] = counted_on
    # asyncio's default executor names its threads "asyncio_N"; the loop's own thread is not one of them.
    assert big_thread.startswith("asyncio_")
    assert not small_thread.startswith("asyncio_")
