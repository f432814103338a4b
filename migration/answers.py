"""One answer from one target, reduced to its `AnswerSummary`: what shadow copies, canary pair copies,
the judge's second baseline answers and pre-flight replays all need.

One attempt through the dispatcher under the `SHADOW` policy (no retry, no fallback, the targets' health
left alone: nothing here may cool a target down for clients) and a timeout. A stream is read to its end,
so its time to first token is real, and metered from its events. Every failure becomes a summary with
its status (504 for the timeout); nothing raises but cancellation.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Mapping
from typing import Any

from metering.meter import Meter
from metering.pricing import to_micros
from metering.usage import usage_chunk
from migration.compare import AnswerSummary, summarise_completion, summarise_stream
from providers.dispatch import SHADOW, Call, Delivered, Dispatcher
from providers.errors import ProviderError, status_of
from providers.target import TargetRef


def copy_for(request: Mapping[str, Any], target: TargetRef, stream: bool) -> dict[str, Any]:
    """The request as a copy sends it to `target`: its own body (nothing shared with the client's), the
    target's model, and a stream's usage asked for, so the copy is priced from what the upstream reports."""
    body = copy.deepcopy(dict(request))
    body["model"] = target.model
    if stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return body


class AnswerFetcher:
    def __init__(self, dispatcher: Dispatcher, meter: Meter) -> None:
        self._dispatcher = dispatcher
        self._meter = meter

    async def fetch(self, call: Call, timeout_s: float) -> AnswerSummary:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                result = await self._dispatcher.dispatch(call, SHADOW)
                if not isinstance(result, Delivered):
                    status = result.attempts[-1].status if result.attempts else 503
                    return AnswerSummary(status, time.perf_counter() - start)
                if result.stream is not None:
                    return await self._read_stream(result, start)
        except ProviderError as exc:  # the stream broke while it was read
            return AnswerSummary(status_of(exc), time.perf_counter() - start)
        except TimeoutError:
            return AnswerSummary(504, time.perf_counter() - start)
        assert result.reply is not None
        [attempt] = result.attempts
        usage = attempt.usage
        assert usage is not None and attempt.cost is not None
        return summarise_completion(result.reply.data, 200, time.perf_counter() - start, to_micros(attempt.cost),
                                    usage.prompt_tokens, usage.completion_tokens)

    async def _read_stream(self, delivered: Delivered, start: float) -> AnswerSummary:
        stream = delivered.stream
        assert stream is not None
        ttft: float | None = None
        events: list[bytes] = []
        reported = None
        try:
            async for batch in stream.batches():
                if ttft is None:
                    ttft = time.perf_counter() - start
                for event in batch:
                    if event == b"[DONE]":
                        continue
                    events.append(event)
                    chunk = usage_chunk(event)
                    if chunk is not None:
                        reported = chunk["usage"]
        finally:
            await stream.aclose()
        latency = time.perf_counter() - start
        target = delivered.target
        metered = self._meter.stream(target.provider, target.model, delivered.outbound.payload, reported, events)
        usage = metered.usage
        return summarise_stream(events, 200, latency, ttft, to_micros(metered.cost), usage.prompt_tokens,
                                usage.completion_tokens)
