"""The most a call can cost, so a dollar cap (a plan-and-execute run's, the quality judge's) holds before
the call, not after.

A call's real cost is known only when it ends, and an alias may be served by any of its
targets (fallbacks) or by a migration's arm. `RateCeiling` prices a call at the dearest
of them, per prompt token and per completion token separately, which bounds what any
one of them would charge. A budget reserves that bound while the call runs, so calls
started together cannot add up past the cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import ROUND_FLOOR, Decimal

from metering.pricing import PriceBook

_MILLION = Decimal(1_000_000)
ZERO = Decimal(0)

# An alias's possible (provider, upstream model) pairs: configured targets and migration arms.
Targets = Callable[[str], Iterable[tuple[str, str]]]


class RateCeiling:
    def __init__(self, prices: PriceBook, targets: Targets) -> None:
        self._prices = prices
        self._targets = targets

    def rates(self, alias: str) -> tuple[Decimal, Decimal]:
        """USD per prompt token and per completion token, each the highest among the alias's targets.

        A prompt token is priced at the dearer of the cached and uncached rates, whichever applies.
        An unpriced target costs nothing, as the gateway charges it.
        """
        prompt_rate = completion_rate = ZERO
        for provider, model in self._targets(alias):
            price = self._prices.price_for(provider, model)
            if price is not None:
                dearest_input = max(price.input, price.cached_input or ZERO)
                prompt_rate = max(prompt_rate, dearest_input / _MILLION)
                completion_rate = max(completion_rate, price.output / _MILLION)
        return prompt_rate, completion_rate

    def worst_case(self, alias: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
        prompt_rate, completion_rate = self.rates(alias)
        return prompt_tokens * prompt_rate + completion_tokens * completion_rate

    def affordable_completion(self, alias: str, prompt_tokens: int, dollars: Decimal) -> int | None:
        """The most completion tokens a call may ask for within `dollars`; None when completions are free."""
        prompt_rate, completion_rate = self.rates(alias)
        if completion_rate == 0:
            return None
        left = dollars - prompt_tokens * prompt_rate
        return max(0, int((left / completion_rate).to_integral_value(rounding=ROUND_FLOOR)))


def free_of_charge(_: str) -> Iterable[tuple[str, str]]:
    """Targets for a run priced at nothing (tests that drive the planner without a gateway)."""
    return ()
