"""Relay an upstream event stream to the client, byte for byte, as events arrive.

Only events that mention usage are parsed. The usage chunk the gateway asked for
on the client's behalf is stripped unless the client asked for it too. A stream
that breaks after its first byte reached the client ends with an SSE error frame
and no `[DONE]`, so no client mistakes it for a complete answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from gateway.http import Headers, Receive, Send
from metering.pricing import format_usd
from providers.base import ProviderError, UpstreamStream
from providers.sse_parser import has_usage_object

DONE = b"[DONE]"
_DONE_FRAME = b"data: [DONE]\n\n"


@dataclass(slots=True)
class RelayOutcome:
    usage: dict[str, Any] | None = None
    completed: bool = False
    error: ProviderError | None = None
    client_gone: bool = False
    first_event_at: float | None = None
    # Kept only so completion tokens can be estimated when the upstream sends no usage.
    events: list[bytes] = field(default_factory=list)


def error_frame(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def cost_comment(cost: Decimal, estimated: bool) -> bytes:
    """SSE comment lines are ignored by SSE parsers (the OpenAI SDK's included)."""
    suffix = b" estimated" if estimated else b""
    return b": x-cutover-cost-usd " + format_usd(cost).encode() + suffix + b"\n\n"


async def _watch_disconnect(receive: Receive, stream: UpstreamStream, outcome: RelayOutcome) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            outcome.client_gone = True
            stream.abort()
            return


async def relay(
    send: Send, receive: Receive, stream: UpstreamStream, headers: Headers, client_wants_usage: bool
) -> RelayOutcome:
    """Forward events until `[DONE]`; returns before the final frame so the caller can add cost.

    Events that arrived in one upstream read go out in one write.
    """
    outcome = RelayOutcome()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                    *headers],
    })
    watcher = asyncio.ensure_future(_watch_disconnect(receive, stream, outcome))
    kept = outcome.events
    try:
        async for batch in stream.batches():
            frames: list[bytes] = []
            for event in batch:
                if event == DONE:
                    outcome.completed = True
                    break
                if has_usage_object(event):
                    try:
                        chunk = orjson.loads(event)
                    except orjson.JSONDecodeError:
                        chunk = None
                    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                        outcome.usage = chunk["usage"]
                        if not client_wants_usage and not chunk.get("choices"):
                            continue
                kept.append(event)
                frames.append(b"data: " + event + b"\n\n")
            if frames:
                await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})
                if outcome.first_event_at is None:
                    outcome.first_event_at = time.perf_counter()
    except ProviderError as exc:
        if not outcome.client_gone:
            outcome.error = exc
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await stream.aclose()
    return outcome


async def finish(send: Send, outcome: RelayOutcome, trailer: bytes) -> None:
    if outcome.client_gone:
        return
    if outcome.completed:
        await send({"type": "http.response.body", "body": trailer + _DONE_FRAME, "more_body": False})
    else:
        await send({
            "type": "http.response.body",
            "body": error_frame(
                "The upstream stream broke before it finished; the answer above is incomplete.", "stream_broken"
            ),
            "more_body": False,
        })
