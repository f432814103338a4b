"""The route table for everything off the hot path: models, health, metrics.

Auth applies to every route here except the explicit allowlist of open ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from gateway.errors import NotFound, ServiceUnavailable
from gateway.http import JSONBytes
from gateway.state import GatewayState

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def state_of(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def client_key(request: Request) -> str:
    state = state_of(request)
    return state.keys.identify(request.headers.get("authorization", "").encode() or None)


def _model_entry(state: GatewayState, alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": state.started_at, "owned_by": "cutover"}


router = APIRouter()
authed = APIRouter(dependencies=[Depends(client_key)])


@authed.get("/v1/models")
async def list_models(request: Request) -> JSONBytes:
    state = state_of(request)
    return JSONBytes({"object": "list", "data": [_model_entry(state, a) for a in state.routes.aliases()]})


@authed.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> JSONBytes:
    state = state_of(request)
    if state.routes.get(model_id) is None:
        nearest = state.routes.nearest(model_id)
        hint = f" Did you mean {', '.join(repr(n) for n in nearest)}?" if nearest else ""
        raise NotFound(f"The model '{model_id[:200]}' does not exist on this gateway.{hint}", param="model",
                       code="model_not_found")
    return JSONBytes(_model_entry(state, model_id))


@router.get("/healthz")
async def healthz() -> JSONBytes:
    return JSONBytes({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONBytes:
    state = state_of(request)
    pools = state.registry.ready()
    if not state.ready or not all(pools.values()):
        raise ServiceUnavailable(
            "The gateway is not ready: " + ", ".join(f"{k}={'up' if v else 'down'}" for k, v in pools.items()),
            code="not_ready",
        )
    store_ok = state.migration.runtime.store_ok
    # A store outage is reported, not fatal: replicas keep serving with the last state they saw.
    return JSONBytes({
        "status": "ready" if store_ok else "degraded",
        "providers": pools,
        "cooling": state.breakers.cooling(),
        "store": "ok" if store_ok else "unreachable",
        "controller_leader": state.migration.controller.leader,
    })


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body = state_of(request).metrics.exposition()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


router.include_router(authed)
