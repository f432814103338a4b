"""Exact money: token counts times configured per-million-token prices, in Decimal USD."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeGuard

from config.schema import ModelPrice

_MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # True when the upstream reported nothing and the gateway counted with tiktoken.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.estimated or other.estimated,
        )


def usage_from_openai(usage: Mapping[str, Any] | None) -> Usage | None:
    """Read an OpenAI `usage` object; None when it is absent or unusable."""
    if not isinstance(usage, Mapping):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens") or 0
    if not _is_count(prompt) or not _is_count(completion):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, Mapping) else 0
    return Usage(prompt, completion, cached if _is_count(cached) else 0)


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
        total = (
            (usage.prompt_tokens - cached) * price.input
            + cached * cached_rate
            + usage.completion_tokens * price.output
        )
        return total / _MILLION


def format_usd(amount: Decimal) -> str:
    """Plain decimal notation (never '1E-7'), trailing zeros dropped."""
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"
