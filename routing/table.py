"""Alias -> ordered targets. The first healthy target serves; the rest are fallbacks."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from config.schema import ModelRoute
from providers.target import TargetRef


@dataclass(frozen=True, slots=True)
class Route:
    alias: str
    targets: tuple[TargetRef, ...]
    on_context_overflow: Literal["error", "truncate_oldest"]


class RouteTable:
    def __init__(self, models: Mapping[str, ModelRoute], meta_models: Mapping[str, str] | None = None) -> None:
        """`meta_models` maps a meta-model name to the provider that serves it (one target, no fallback)."""
        self._routes = {
            alias: Route(
                alias=alias,
                targets=tuple(TargetRef(t.provider, t.model) for t in route.targets),
                on_context_overflow=route.on_context_overflow,
            )
            for alias, route in models.items()
        }
        for name, provider in (meta_models or {}).items():
            self._routes[name] = Route(alias=name, targets=(TargetRef(provider, name),), on_context_overflow="error")

    def get(self, alias: str) -> Route | None:
        return self._routes.get(alias)

    def aliases(self) -> list[str]:
        return list(self._routes)

    def nearest(self, name: str, limit: int = 3) -> list[str]:
        lowered = {alias.lower(): alias for alias in self._routes}
        matches = difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.5)
        return [lowered[m] for m in matches]
