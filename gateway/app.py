"""The route table: which path is served by what, and the ASGI entry point.

The proxy endpoints are raw ASGI pipelines, one per inbound dialect (gateway.pipeline);
every other path goes to a FastAPI app, which also owns the lifespan (starting and
stopping provider pools and the migration machinery).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.schema import GatewayConfig
from gateway.admin import build_admin_router
from gateway.api import build_api_router
from gateway.dialects.chat import ChatCompletions
from gateway.dialects.completions import Completions
from gateway.dialects.embeddings import Embeddings
from gateway.dialects.responses import Responses
from gateway.errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound
from gateway.http import JSONBytes, Message, Receive, Scope, Send, new_request_id, send_response
from gateway.pipeline import Pipeline
from gateway.responses_api import build_responses_router
from gateway.wiring import Gateway
from migration.judge import JudgeCall
from planner.internal import InternalCaller
from store.base import Store
from telemetry.metrics import Metrics

_log = logging.getLogger("cutover.gateway")


def _error_response(error: GatewayError) -> JSONBytes:
    return JSONBytes(error.body(), status_code=error.status, headers=error.headers)


def _build_fastapi(gateway: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    # No trailing-slash redirects: they answered before authentication, to whatever the Host header said
    # (CutoverApp serves "/admin/migrations/" as "/admin/migrations" instead).
    app = FastAPI(title="cutover", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    app.include_router(build_api_router(
        gateway.routes, gateway.keys, gateway.readiness, gateway.metrics.exposition, gateway.started_at
    ))
    app.include_router(build_responses_router(gateway.conversations, gateway.keys))
    app.include_router(build_admin_router(gateway.admin_keys, gateway.keys, gateway.migrations, gateway.routes))

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONBytes:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONBytes:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error_response(InvalidRequest(str(first.get("msg", "Invalid request.")), param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONBytes:
        if exc.status_code == 404:
            return _error_response(NotFound("No such endpoint on this gateway.", code="unknown_url"))
        if exc.status_code == 405:
            # Starlette names the allowed methods; RFC 9110 requires them on a 405.
            return _error_response(MethodNotAllowed("This endpoint does not accept that method.",
                                                    headers=dict(exc.headers or {})))
        return _error_response(GatewayError(str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONBytes:
        _log.error("unexpected failure", exc_info=exc)
        return _error_response(GatewayError("The gateway failed unexpectedly; the error is logged."))

    return app


class CutoverApp:
    """The ASGI entry point."""

    def __init__(self, gateway: Gateway) -> None:
        self.parts = gateway
        self.fastapi = _build_fastapi(gateway)
        self._hot: dict[str, Pipeline] = {
            "/v1/chat/completions": gateway.pipeline(ChatCompletions()),
            "/v1/embeddings": gateway.pipeline(Embeddings()),
            "/v1/completions": gateway.pipeline(Completions()),
            "/v1/responses": gateway.pipeline(Responses(gateway.conversations.remember)),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            handler = self._hot.get(path.rstrip("/") or "/")
            if handler is not None:
                if scope["method"] == "POST":
                    await handler(scope, receive, send)
                else:
                    error = MethodNotAllowed("Use POST for this endpoint.")
                    await send_response(send, error.status, handler.dialect.error_body(error),
                                        [(b"allow", b"POST"), (b"x-request-id", new_request_id().encode())])
                return
            if len(path) > 1 and path.endswith("/"):
                scope = {**scope, "path": path.rstrip("/") or "/"}
            await self.fastapi(scope, receive, _with_request_id(send))
            return
        await self.fastapi(scope, receive, send)


def _with_request_id(send: Send) -> Send:
    """Every answer carries an x-request-id, errors from the FastAPI routes included."""
    request_id = new_request_id().encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
        await send(message)

    return wrapped


def create_app(config: GatewayConfig, metrics: Metrics | None = None, store: Store | None = None) -> CutoverApp:
    gateway = Gateway.build(config, metrics, store)
    app = CutoverApp(gateway)
    # Meta-models call models through this very app, in-process, like any client; so does the quality judge.
    gateway.metas.bind(app, gateway.migrations.live.arms_of)
    if gateway.migrations.judge is not None:
        gateway.migrations.judge.bind(judge_call(InternalCaller(app, gateway.metas.internal_key, "judge")))
    return app


def judge_call(caller: InternalCaller) -> JudgeCall:
    async def call(alias: str, messages: list[dict[str, Any]], max_tokens: int) -> tuple[str, Decimal]:
        result = await caller.complete(alias, messages, max_tokens)
        return result.text, result.cost

    return call
