"""create_app: wiring only.

The two hot endpoints are raw ASGI handlers; every other path goes to a FastAPI
app, which also owns the lifespan (starting and stopping provider pools).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.schema import GatewayConfig
from gateway.admin import router as admin_router
from gateway.api import router
from gateway.errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound
from gateway.http import JSONBytes, Message, Receive, Scope, Send, new_request_id, send_error
from gateway.proxy import ProxyEndpoint
from gateway.state import GatewayState
from store.base import Store
from telemetry.metrics import Metrics

_log = logging.getLogger("cutover.gateway")


def _error_response(error: GatewayError) -> JSONBytes:
    return JSONBytes(error.body(), status_code=error.status, headers=error.headers)


def _build_fastapi(state: GatewayState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.registry.start()
        await state.migration.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await state.migration.stop()
            await state.registry.close()
            await state.metas.close()

    app = FastAPI(title="cutover", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = state
    app.include_router(router)
    app.include_router(admin_router)

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
            return _error_response(MethodNotAllowed("This endpoint does not accept that method."))
        return _error_response(GatewayError(str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONBytes:
        _log.error("unexpected failure", exc_info=exc)
        return _error_response(GatewayError("The gateway failed unexpectedly; the error is logged."))

    return app


class CutoverApp:
    """The ASGI entry point."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.fastapi = _build_fastapi(state)
        self._hot = {
            "/v1/chat/completions": ProxyEndpoint(state, "chat"),
            "/v1/embeddings": ProxyEndpoint(state, "embeddings"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._hot.get(scope["path"].rstrip("/") or "/")
            if handler is not None:
                if scope["method"] == "POST":
                    await handler(scope, receive, send)
                else:
                    await send_error(
                        send, MethodNotAllowed("Use POST for this endpoint."),
                        [(b"allow", b"POST"), (b"x-request-id", new_request_id().encode())],
                    )
                return
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
    app = CutoverApp(GatewayState.build(config, metrics, store))
    # Meta-models call models through this very app, in-process.
    app.state.metas.bind(app, app.state.migration.runtime.arms_of)
    return app
