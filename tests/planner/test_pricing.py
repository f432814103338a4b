"""RateCeiling: a call priced at the dearest target its alias may be served by."""

from __future__ import annotations

from decimal import Decimal

from config.schema import ModelPrice
from metering.ceiling import RateCeiling
from metering.pricing import PriceBook
from planner.prompts import NON_TEXT_PART_TOKENS as _NON_TEXT_PART_TOKENS
from planner.prompts import prompt_token_bound as _prompt_token_bound

PRICES = PriceBook({
    "cheap/small": ModelPrice(input=Decimal("0.10"), output=Decimal("0.40")),
    "dear/large": ModelPrice(input=Decimal("3"), cached_input=Decimal("0.30"), output=Decimal("15")),
    # Dear to read and cheap to write: the ceiling takes each rate's maximum on its own.
    "odd/reader": ModelPrice(input=Decimal("5"), output=Decimal("1")),
    # A cache read priced above a fresh one (the config allows it): the dearer rate bounds a prompt token.
    "odd/cache": ModelPrice(input=Decimal("1"), cached_input=Decimal("2"), output=Decimal("1")),
})
TARGETS = {
    "mixed": [("cheap", "small"), ("dear", "large"), ("odd", "reader")],
    "cheap": [("cheap", "small")],
    "unpriced": [("nowhere", "free")],
    "cache": [("odd", "cache")],
}


def ceiling() -> RateCeiling:
    return RateCeiling(PRICES, lambda alias: TARGETS.get(alias, []))


def test_each_rate_is_the_dearest_among_the_targets() -> None:
    assert ceiling().rates("mixed") == (Decimal("0.000005"), Decimal("0.000015"))
    assert ceiling().rates("cheap") == (Decimal("0.0000001"), Decimal("0.0000004"))


def test_worst_case_bounds_what_any_target_charges() -> None:
    worst = ceiling().worst_case("mixed", 1000, 500)
    assert worst == Decimal("0.0125")  # 1000 x $5/M + 500 x $15/M
    for provider, model in TARGETS["mixed"]:
        price = PRICES.price_for(provider, model)
        assert price is not None
        assert (1000 * price.input + 500 * price.output) / 1_000_000 <= worst


def test_unpriced_and_unknown_aliases_cost_nothing() -> None:
    assert ceiling().worst_case("unpriced", 10_000, 10_000) == 0
    assert ceiling().worst_case("no-such-alias", 10_000, 10_000) == 0
    assert ceiling().affordable_completion("unpriced", 10, Decimal("0")) is None


def test_affordable_completion_is_the_most_the_dollars_pay_for() -> None:
    # $0.01 - 1000 x $5/M = $0.005 left, at $15/M: 333 tokens (333.3 rounded down).
    assert ceiling().affordable_completion("mixed", 1000, Decimal("0.01")) == 333
    assert ceiling().worst_case("mixed", 1000, 333) <= Decimal("0.01") < ceiling().worst_case("mixed", 1000, 334)
    assert ceiling().affordable_completion("mixed", 10_000, Decimal("0.01")) == 0  # the prompt alone is too dear


def test_a_cached_rate_above_the_fresh_one_bounds_a_prompt_token() -> None:
    assert ceiling().rates("cache")[0] == Decimal("0.000002")


def test_the_prompt_bound_covers_tool_calls_and_pictures() -> None:
    text = [{"role": "user", "content": "héllo"}]
    assert _prompt_token_bound(text) >= len("héllo".encode())
    call = [{"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "x" * 500}}]}]
    assert _prompt_token_bound(call) > 500
    picture = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                            {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}}]}]
    assert _prompt_token_bound(picture) > _NON_TEXT_PART_TOKENS
