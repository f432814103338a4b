"""Resolve alias: the model name a client asked for, to the route the config gives it."""

from __future__ import annotations

from gateway.errors import NotFound
from routing.table import Route, RouteTable


def resolve(routes: RouteTable, model: str) -> Route:
    route = routes.get(model)
    if route is None:
        nearest = routes.nearest(model)
        hint = f" Did you mean {', '.join(repr(n) for n in nearest)}?" if nearest else ""
        raise NotFound(
            f"The model '{model[:200]}' does not exist on this gateway.{hint} GET /v1/models lists the models.",
            param="model", code="model_not_found",
        )
    return route
