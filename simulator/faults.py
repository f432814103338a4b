"""How each fault kind is acted out on the wire.

The point is to reproduce what a gateway meets in production: OpenAI-shaped
error statuses, connections that go silent, connections that die mid-body
and 200 answers that cannot be parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import orjson
from aiohttp import web

from simulator.behaviour import SimulationSettings
from simulator.state import SimulatorState
from simulator.wire import error_body

_RATE_LIMIT_BODY: Final = error_body(
    "Rate limit reached for requests (simulated by the cutover simulator).",
    "requests",
    code="rate_limit_exceeded",
)
_SERVER_ERROR_BODY: Final = error_body(
    "The server had an error while processing your request (simulated by the cutover simulator).",
    "server_error",
)
_UNAVAILABLE_BODY: Final = error_body(
    "The engine is currently overloaded, please try again later (simulated by the cutover simulator).",
    "server_error",
)
# Starts like a real completion so a sloppy prefix check would not notice.
_GARBAGE_JSON: Final = b'{"id":"chatcmpl-sim-garbage","object":"chat.completion","choices":[<<cutover simulator garbage'
_GARBAGE_SSE: Final = b"data: " + _GARBAGE_JSON + b"\n\ndata: [DONE]\n\n"

# A stream event cut short, as a proxy that rewrites chunks might leave it.
MALFORMED_EVENT: Final = b'data: {"id":"chatcmpl-sim-malformed","object":"chat.completion.chunk","choices":[{"delta\n\n'

_SSE_HEADERS: Final[Mapping[str, str]] = MappingProxyType(
    {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def status_fault(outcome: str, settings: SimulationSettings) -> web.Response | None:
    """Immediate error answers; ``None`` when ``outcome`` is not one of them."""
    if outcome == "rate_limit":
        retry_after = settings.retry_after_s
        headers = {
            "Retry-After": _format_seconds(retry_after),
            "retry-after-ms": str(int(retry_after * 1000)),
        }
        return json_response(_RATE_LIMIT_BODY, status=429, headers=headers)
    if outcome == "server_error":
        return json_response(_SERVER_ERROR_BODY, status=500)
    if outcome == "unavailable":
        return json_response(_UNAVAILABLE_BODY, status=503)
    return None


def garbage_response(stream: bool) -> web.Response:
    """A 200 whose payload cannot be decoded.

    Stream requests get a well-formed SSE envelope around an undecodable data
    line, so the failure surfaces in the client's chunk parser rather than as
    a content-type mismatch.
    """
    if stream:
        return web.Response(body=_GARBAGE_SSE, status=200, headers=_SSE_HEADERS)
    return json_response(_GARBAGE_JSON)


def shapeless_response(model: str, endpoint: str) -> web.Response:
    """A 200 of valid JSON that lacks what the endpoint's answer must carry."""
    if endpoint == "embeddings":
        return json_response(orjson.dumps({"object": "list", "model": model}))
    return json_response(orjson.dumps({"id": "chatcmpl-sim-malformed", "object": "chat.completion", "model": model}))


async def _flush_then_abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is None:
        return
    # abort() discards anything still buffered; let the partial answer reach
    # the peer first so the client really observes a truncated response.
    for _ in range(200):
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.001)
    transport.abort()


async def hang_then_close(request: web.BaseRequest, state: SimulatorState, hang_s: float) -> web.StreamResponse:
    """Say nothing for ``hang_s`` seconds, then drop the connection unanswered."""
    with contextlib.suppress(TimeoutError):
        # Server shutdown wakes the hang early so stop() is never held up.
        await asyncio.wait_for(state.stopping.wait(), timeout=hang_s)
    transport = request.transport
    if transport is not None:
        transport.close()
    # Never sent: aiohttp sees the closed transport and gives up quietly.
    return web.Response(status=204)


async def truncated_json(request: web.BaseRequest, body: bytes) -> web.StreamResponse:
    """Announce the full JSON body, send half of it, then kill the connection."""
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    await _flush_then_abort(request)
    return resp


async def break_stream(request: web.BaseRequest) -> None:
    await _flush_then_abort(request)


def sse_response() -> web.StreamResponse:
    return web.StreamResponse(status=200, headers=_SSE_HEADERS)


def sse_whole(payload: bytes) -> web.Response:
    """A complete event stream sent in one go, still chunked like OpenAI's."""
    resp = web.Response(body=payload, status=200, headers=_SSE_HEADERS)
    resp.enable_chunked_encoding()
    return resp
