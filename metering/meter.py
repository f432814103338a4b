"""Usage and price of one answered upstream call, in one step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from metering.pricing import PriceBook
from metering.usage import Usage, UsageEstimator, usage_from_openai


@dataclass(slots=True)
class Metered:
    usage: Final[Usage]
    cost: Final[Decimal]


class Meter:
    """Reported usage when the upstream gives it, the estimator's otherwise, priced at configured rates.

    A provider that accounts for its own spend (the meta-model) passes `known_cost`,
    which then wins over the price book.
    """

    __slots__ = ("_estimator", "prices")

    def __init__(self, prices: PriceBook, estimator: UsageEstimator) -> None:
        self.prices = prices
        self._estimator = estimator

    def reply(
        self, provider: str, model: str, sent: Mapping[str, Any], data: Mapping[str, Any],
        known_cost: Decimal | None = None,
    ) -> Metered:
        usage = usage_from_openai(data.get("usage")) or self._estimator.of_reply(sent, data)
        return Metered(usage, known_cost if known_cost is not None else self.prices.cost(provider, model, usage))

    def stream(
        self, provider: str, model: str, sent: Mapping[str, Any], reported: Mapping[str, Any] | None,
        events: Iterable[bytes], known_cost: Decimal | None = None,
    ) -> Metered:
        usage = usage_from_openai(reported) or self._estimator.of_stream(sent, events)
        return Metered(usage, known_cost if known_cost is not None else self.prices.cost(provider, model, usage))
