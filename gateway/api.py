"""The route table for everything off the hot path: models, health, metrics.

Auth applies to every route here except the explicit allowlist of open ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from gateway.aliases import resolve
from gateway.auth import KeyRing
from gateway.errors import ServiceUnavailable
from gateway.http import JSONBytes
from routing.table import RouteTable

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# (ready to serve, what /readyz reports): see gateway.wiring.Gateway.readiness.
Readiness = Callable[[], tuple[bool, dict[str, Any]]]


def build_api_router(
    routes: RouteTable, keys: KeyRing, readiness: Readiness, exposition: Callable[[], bytes], started_at: int
) -> APIRouter:
    def client_key(request: Request) -> str:
        return keys.identify(request.headers.get("authorization", "").encode() or None)

    def model_entry(alias: str) -> dict[str, Any]:
        return {"id": alias, "object": "model", "created": started_at, "owned_by": "cutover"}

    router = APIRouter()
    authed = APIRouter(dependencies=[Depends(client_key)])

    @authed.get("/v1/models")
    async def list_models() -> JSONBytes:
        return JSONBytes({"object": "list", "data": [model_entry(a) for a in routes.aliases()]})

    @authed.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> JSONBytes:
        return JSONBytes(model_entry(resolve(routes, model_id).alias))

    @router.get("/healthz")
    async def healthz() -> JSONBytes:
        return JSONBytes({"status": "ok"})

    @router.get("/readyz")
    async def readyz() -> JSONBytes:
        ready, report = readiness()
        if not ready:
            problems = [f"{k}={'up' if v else 'down'}" for k, v in report["providers"].items()]
            if "store" in report:
                problems.append(f"store={report['store']}")
            raise ServiceUnavailable("The gateway is not ready: " + ", ".join(problems), code="not_ready")
        return JSONBytes(report)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    router.include_router(authed)
    return router
