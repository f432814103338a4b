"""Relay: the upstream's answer goes back to the client in the client's dialect, with the gateway's headers.

A non-streamed answer goes out in one response that carries its cost. A stream is
relayed as events arrive (events that arrived in one upstream read go out in one
write); only events that mention usage are parsed. It ends with an SSE comment
carrying the cost and the dialect's end, or with the dialect's error frame when
the upstream broke off after the first byte reached the client. Either way the
answer is returned as an `Answer` for the request's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from gateway.dialects.base import ClientRequest, InboundDialect
from gateway.http import Headers, Receive, Send, send_response
from metering.meter import Meter
from metering.pricing import format_usd
from metering.usage import has_usage_object, usage_chunk
from providers.dispatch import AttemptRecord, Delivered
from providers.errors import ProviderError

DONE = b"[DONE]"


@dataclass(slots=True)
class Answer:
    """What the client got."""

    # 200, or 502 for a stream that broke after its 200 headers, or 499 when the client left.
    status: Final[int]
    # The answering attempt, with its usage and cost.
    attempt: Final[AttemptRecord]
    # From the request's arrival to the first event sent (streams).
    ttft_s: Final[float | None] = None
    error: Final[str | None] = None
    stream_broke: Final[bool] = False
    # The answer itself, kept only when a shadow copy is compared with it.
    data: Final[Mapping[str, Any] | None] = None
    events: Final[Sequence[bytes]] = ()


def cost_comment(cost: Decimal, estimated: bool) -> bytes:
    """SSE comment lines are ignored by SSE parsers (the OpenAI SDK's included)."""
    suffix = b" estimated" if estimated else b""
    return b": x-cutover-cost-usd " + format_usd(cost).encode() + suffix + b"\n\n"


def answer_headers(delivered: Delivered, started: float, base: Headers) -> Headers:
    target = delivered.target
    overhead_s = max(0.0, time.perf_counter() - started - delivered.waited_s)
    out = [
        *base,
        (b"x-cutover-provider", target.provider.encode()),
        (b"x-cutover-model", target.model.encode()),
        (b"x-cutover-overhead-ms", f"{overhead_s * 1000:.3f}".encode()),
    ]
    if delivered.outbound.dropped_messages:
        out.append((b"x-cutover-context-truncated", str(delivered.outbound.dropped_messages).encode()))
    return out


async def respond(
    send: Send, dialect: InboundDialect, request: ClientRequest, delivered: Delivered, started: float,
    base: Headers, keep: bool,
) -> Answer:
    reply, attempt = delivered.reply, delivered.attempts[-1]
    assert reply is not None and attempt.usage is not None and attempt.cost is not None
    native = delivered.outbound.native_path is not None
    # Only a Responses turn has anything to keep: the others stay off the coroutine.
    body = dialect.answer_body(reply, native) if request.turn is None else await dialect.answer(request, reply, native)
    headers = answer_headers(delivered, started, base)
    headers.append((b"x-cutover-cost-usd", format_usd(attempt.cost).encode()))
    if attempt.usage.estimated:
        headers.append((b"x-cutover-usage-estimated", b"true"))
    await send_response(send, 200, body, headers)
    return Answer(200, attempt, data=reply.data if keep else None)


async def relay_stream(
    send: Send, receive: Receive, dialect: InboundDialect, request: ClientRequest, delivered: Delivered,
    meter: Meter, started: float, base: Headers, keep: bool,
) -> Answer:
    stream = delivered.stream
    assert stream is not None
    frames = dialect.stream_frames(request, delivered.outbound.native_path is not None)
    opened = time.perf_counter()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", frames.content_type), (b"cache-control", b"no-cache"),
                    *answer_headers(delivered, started, base)],
    })
    gone = _Gone()
    watcher = asyncio.ensure_future(_watch_disconnect(receive, stream.abort, gone))
    events: list[bytes] = []
    reported: dict[str, Any] | None = None
    completed = False
    broke: ProviderError | None = None
    first_event_at: float | None = None
    # The fast path: a dialect whose frames are the upstream's own events is asked only about usage chunks.
    passthrough = frames.passthrough
    try:
        async for batch in stream.batches():
            out: list[bytes] = []
            for event in batch:
                if event == DONE:
                    break
                events.append(event)
                chunk = usage_chunk(event) if has_usage_object(event) else None
                if chunk is not None:
                    reported = chunk["usage"]
                elif passthrough:
                    out.append(b"data: " + event + b"\n\n")
                    continue
                frame = frames.event(event, chunk)
                if frame is not None:
                    out.append(frame)
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                if first_event_at is None:
                    first_event_at = time.perf_counter()
        # A stream's batches end at its end marker ([DONE], or a Responses stream's final event); one that
        # stops short raises instead.
        completed = True
    except ProviderError as exc:
        if not gone.yes:
            broke = exc
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await stream.aclose()
    ended = time.perf_counter()
    target = delivered.target
    known_cost = getattr(stream, "known_cost", None)
    metered = meter.stream(target.provider, target.model, delivered.outbound.payload, reported, events, known_cost)
    first = delivered.attempts[-1]
    attempt = first.finished(
        metered,
        None if first_event_at is None else first.latency_s + (first_event_at - opened),
        first.latency_s + (ended - opened),
        None if broke is None else broke.kind,
    )
    ttft_s = None if first_event_at is None else first_event_at - started
    if completed and not gone.yes:
        await frames.settle()
    if not gone.yes:
        trailer = cost_comment(metered.cost, metered.usage.estimated)
        await send({"type": "http.response.body", "body": frames.end(trailer) if completed else frames.broken(),
                    "more_body": False})
    kept = events if keep else ()
    if broke is not None:
        # The client got 200 headers, then a broken stream: the record counts it as the failure it was.
        return Answer(502, attempt, ttft_s, broke.kind, stream_broke=True, events=kept)
    if gone.yes:
        return Answer(499, attempt, ttft_s, "client_disconnected", events=kept)
    return Answer(200, attempt, ttft_s, events=kept)


class _Gone:
    """Set by the disconnect watcher; read once the relay loop ends (nothing waits on it)."""

    __slots__ = ("yes",)

    def __init__(self) -> None:
        self.yes = False


async def _watch_disconnect(receive: Receive, abort: Callable[[], None], gone: _Gone) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.yes = True
            abort()
            return
