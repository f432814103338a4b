"""The one usage estimator, stream usage chunks, and the meter that prices an answer."""

from __future__ import annotations

from decimal import Decimal

import orjson

from config.schema import ModelPrice
from metering.meter import Meter, Metered
from metering.pricing import PriceBook
from metering.tokens import TokenCounter
from metering.usage import Usage, UsageEstimator, has_usage_object, reported_stream_usage, usage_chunk

TOKENS = TokenCounter()
ESTIMATOR = UsageEstimator(TOKENS)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "How many tokens is this?"}]}
PRICES = PriceBook({"m": ModelPrice(input=Decimal(1), output=Decimal(2))})


def chunk(content: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return orjson.dumps({"choices": choices, "usage": usage})


def test_a_chat_reply_counts_the_prompt_and_every_choice() -> None:
    data = {"choices": [{"message": {"content": "Four words right here"}}, {"message": {"content": "two more"}}]}
    usage = ESTIMATOR.of_reply(CHAT, data)
    assert usage == Usage(TOKENS.count_prompt(CHAT), TOKENS.count_text("Four words right here")
                          + TOKENS.count_text("two more"), estimated=True)


def test_an_embeddings_reply_counts_its_input() -> None:
    sent = {"model": "e", "input": ["alpha beta", "gamma"]}
    assert ESTIMATOR.of_reply(sent, {"data": []}) == Usage(TOKENS.count_input(sent["input"]), 0, estimated=True)


def test_a_stream_counts_the_prompt_and_the_deltas() -> None:
    events = [chunk("Hel"), chunk("lo there"), b"not json", chunk(None)]
    usage = ESTIMATOR.of_stream(CHAT, events)
    assert usage == Usage(TOKENS.count_prompt(CHAT), TOKENS.count_text("Hello there"), estimated=True)


def test_only_a_chunk_with_a_usage_object_is_a_usage_chunk() -> None:
    with_usage = chunk(None, {"prompt_tokens": 3, "completion_tokens": 4})
    assert has_usage_object(with_usage) and usage_chunk(with_usage) == orjson.loads(with_usage)
    assert not has_usage_object(chunk("x")) and usage_chunk(chunk("x")) is None
    assert reported_stream_usage([chunk("x"), with_usage]) == {"prompt_tokens": 3, "completion_tokens": 4}


def test_the_meter_prefers_reported_usage_then_estimates() -> None:
    meter = Meter(PRICES, ESTIMATOR)
    reported = meter.reply("p", "m", CHAT, {"usage": {"prompt_tokens": 1_000, "completion_tokens": 500}})
    assert reported == Metered(Usage(1_000, 500), Decimal("0.002"))
    estimated = meter.reply("p", "m", CHAT, {"choices": [{"message": {"content": "hi"}}]})
    assert estimated.usage.estimated and estimated.usage.prompt_tokens == TOKENS.count_prompt(CHAT)
    streamed = meter.stream("p", "m", CHAT, {"prompt_tokens": 10, "completion_tokens": 10}, [])
    assert streamed == Metered(Usage(10, 10), Decimal("0.00003"))


def test_a_providers_own_cost_wins_over_the_price_book() -> None:
    meter = Meter(PRICES, ESTIMATOR)
    metered = meter.reply("meta:pe", "m", CHAT, {"usage": {"prompt_tokens": 10, "completion_tokens": 0}},
                          known_cost=Decimal("0.5"))
    assert metered.cost == Decimal("0.5")
