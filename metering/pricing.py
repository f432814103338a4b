"""Exact money: token counts times configured per-million-token prices, in Decimal USD."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from config.schema import ModelPrice
from metering.usage import Usage

_MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


class PriceBook:
    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)

    def price_for(self, provider: str, model: str) -> ModelPrice | None:
        return self._prices.get(f"{provider}/{model}") or self._prices.get(model)

    def context_window(self, provider: str, model: str) -> int | None:
        price = self.price_for(provider, model)
        return price.context_window if price else None

    def cost(self, provider: str, model: str, usage: Usage) -> Decimal:
        price = self.price_for(provider, model)
        if price is None:
            return ZERO
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        reasoning_rate = price.reasoning if price.reasoning is not None else price.output
        total = (
            (usage.prompt_tokens - cached) * price.input
            + cached * cached_rate
            + (usage.completion_tokens - reasoning) * price.output
            + reasoning * reasoning_rate
        )
        return total / _MILLION


def format_usd(amount: Decimal) -> str:
    """Plain decimal notation (never '1E-7'), trailing zeros dropped."""
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"


def to_micros(cost: Decimal) -> int:
    """Integer micro-dollars: how money is summed in migration windows, where floats would drift."""
    return int((cost * 1_000_000).to_integral_value())
