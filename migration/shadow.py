"""Shadow copies: fire-and-forget, never on the primary's path.

A copy gets a deep-copied request with the shadow target's model and the stream
flag kept (so its time to first token is real), one attempt with its own timeout,
and a slot in a bounded per-migration pool: when the pool is full the copy is
dropped and counted, never queued. Its answer never reaches the client. When both
sides are done the pair is compared (migration.compare), the shadow arm's outcome
and the paired cost delta go into the step's window, and its spend goes on the
shadow ledger (arm="shadow" in the metrics), apart from client spend.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from metering.pricing import PriceBook, Usage, usage_from_openai
from metering.tokens import TokenCounter
from migration.compare import AnswerSummary, compare, summarise_completion, summarise_stream, wants_json
from migration.runtime import Decision, MigrationRuntime
from migration.window import Sample
from providers.base import Provider, ProviderError, UpstreamRequest, UpstreamStatusError, UpstreamTimeout
from providers.sse_parser import has_usage_object
from routing.table import TargetRef
from telemetry.metrics import Metrics, status_class

_log = logging.getLogger("cutover.migration")


def to_micros(cost: Decimal) -> int:
    return int((cost * 1_000_000).to_integral_value())


def arm_sample(status: int, latency_s: float, ttft_s: float | None, cost_micros: int) -> Sample | None:
    """How a finished request counts for its arm; None when the client, not the provider, was at fault."""
    if status == 429:
        return Sample("rate_limited")
    if 200 <= status < 300:
        return Sample("ok", latency_s * 1000, None if ttft_s is None else ttft_s * 1000, cost_micros)
    if 400 <= status < 500 and status != 408:
        return None
    return Sample("error")


class ShadowPair:
    """The meeting point of a primary and its shadow copy."""

    def __init__(self) -> None:
        self._primary: asyncio.Future[AnswerSummary] = asyncio.get_running_loop().create_future()

    def set_primary(self, summary: AnswerSummary) -> None:
        if not self._primary.done():
            self._primary.set_result(summary)

    async def primary(self, timeout_s: float) -> AnswerSummary | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self._primary), timeout_s)
        except TimeoutError:
            return None


class ShadowRunner:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        runtime: MigrationRuntime,
        prices: PriceBook,
        tokens: TokenCounter,
        metrics: Metrics,
    ) -> None:
        self._providers = providers
        self._runtime = runtime
        self._prices = prices
        self._tokens = tokens
        self._metrics = metrics
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}

    def in_flight(self, migration_id: str) -> int:
        return len(self._tasks.get(migration_id, ()))

    def launch(
        self, decision: Decision, payload: Mapping[str, Any], stream: bool, path: str, request_id: str
    ) -> ShadowPair | None:
        target = decision.shadow_target
        if target is None or not self._runtime.shadow_allowed(decision):
            return None
        settings = self._runtime.shadow_settings(decision.migration_id)
        tasks = self._tasks.setdefault(decision.migration_id, set())
        if len(tasks) >= settings.max_concurrency:
            self._metrics.shadow_requests.labels(decision.migration_id, "dropped").inc()
            return None
        body = copy.deepcopy(dict(payload))
        body["model"] = target.model
        if stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        request = UpstreamRequest(path=path, payload=body, stream=stream, request_id=request_id + "-shadow")
        pair = ShadowPair()
        task = asyncio.ensure_future(self._run(decision, request, pair, settings.timeout_s))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        self._metrics.shadow_requests.labels(decision.migration_id, "sent").inc()
        return pair

    def cancel(self, migration_id: str) -> None:
        """A rollback stops shadowing at once: copies in flight are abandoned."""
        for task in list(self._tasks.get(migration_id, ())):
            task.cancel()

    async def cancel_all(self) -> None:
        """At shutdown: no copy outlives the gateway (nothing would compare or record it)."""
        tasks = [t for pool in self._tasks.values() for t in pool]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, decision: Decision, request: UpstreamRequest, pair: ShadowPair, timeout_s: float) -> None:
        migration_id = decision.migration_id
        try:
            shadow = await self._call(decision, request, timeout_s)
            self._account(decision, shadow)
            primary = await pair.primary(timeout_s)
            if primary is None:
                return
            self._compare(decision, primary, shadow, wants_json(request.payload))
        except asyncio.CancelledError:
            self._metrics.shadow_requests.labels(migration_id, "cancelled").inc()
            raise
        except Exception:
            _log.exception("shadow copy failed unexpectedly", extra={"fields": {"migration": migration_id}})

    async def _call(self, decision: Decision, request: UpstreamRequest, timeout_s: float) -> AnswerSummary:
        target = decision.shadow_target
        assert target is not None
        provider = self._providers[target.provider]
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                if request.stream:
                    return await self._consume_stream(provider, request, start, target)
                reply = await provider.send(request)
        except ProviderError as exc:
            self._metrics.shadow_requests.labels(decision.migration_id, "failed").inc()
            status = exc.status if isinstance(exc, UpstreamStatusError) else 504 if isinstance(
                exc, UpstreamTimeout) else 502
            return AnswerSummary(status, time.perf_counter() - start)
        except TimeoutError:
            self._metrics.shadow_requests.labels(decision.migration_id, "failed").inc()
            return AnswerSummary(504, time.perf_counter() - start)
        latency = time.perf_counter() - start
        usage = usage_from_openai(reply.data.get("usage")) or Usage(
            self._tokens.count_prompt(request.payload), 0, estimated=True
        )
        cost = to_micros(self._prices.cost(target.provider, target.model, usage))
        return summarise_completion(reply.data, 200, latency, cost, usage.prompt_tokens, usage.completion_tokens)

    async def _consume_stream(
        self, provider: Provider, request: UpstreamRequest, start: float, target: TargetRef
    ) -> AnswerSummary:
        stream = await provider.open_stream(request)
        ttft: float | None = None
        events: list[bytes] = []
        try:
            async for batch in stream.batches():
                if ttft is None:
                    ttft = time.perf_counter() - start
                events.extend(e for e in batch if e != b"[DONE]")
        finally:
            await stream.aclose()
        latency = time.perf_counter() - start
        usage = None
        for event in reversed(events):
            if has_usage_object(event):
                chunk = orjson.loads(event)
                usage = usage_from_openai(chunk.get("usage")) if isinstance(chunk, dict) else None
                if usage:
                    break
        usage = usage or Usage(self._tokens.count_prompt(request.payload), 0, estimated=True)
        cost = to_micros(self._prices.cost(target.provider, target.model, usage))
        return summarise_stream(events, 200, latency, ttft, cost, usage.prompt_tokens, usage.completion_tokens)

    def _account(self, decision: Decision, shadow: AnswerSummary) -> None:
        m = self._metrics
        mid = decision.migration_id
        m.arm_requests.labels(mid, "shadow", status_class(shadow.status)).inc()
        if shadow.ok:
            m.arm_duration.labels(mid, "shadow").observe(shadow.latency_s)
            if shadow.ttft_s is not None:
                m.arm_ttft.labels(mid, "shadow").observe(shadow.ttft_s)
            m.arm_cost.labels(mid, "shadow").inc(shadow.cost_micros / 1_000_000)
        outcome = arm_sample(shadow.status, shadow.latency_s, shadow.ttft_s, shadow.cost_micros)
        if outcome is not None and decision.shadow_arm is not None:
            self._runtime.record(decision, decision.shadow_arm, outcome)

    def _compare(self, decision: Decision, primary: AnswerSummary, shadow: AnswerSummary, as_json: bool) -> None:
        m = self._metrics
        mid = decision.migration_id
        result = compare(primary, shadow, as_json)
        m.shadow_requests.labels(mid, "compared").inc()
        checks = {
            "status": result.status_match, "finish_reason": result.finish_match, "exact": result.exact_match,
            "normalised": result.normalised_match, "tools": result.tools_match, "overall": result.agrees,
        }
        if result.json_parity is not None:
            checks["json"] = result.json_parity
        for check, agreed in checks.items():
            if agreed:
                m.shadow_agreement.labels(mid, check).inc()
        m.shadow_latency_delta.labels(mid).observe(result.latency_delta_s)
        m.shadow_cost_delta.labels(mid).observe(result.cost_delta_micros / 1_000_000)
        if primary.ok and shadow.ok:
            m.shadow_similarity.labels(mid).observe(result.similarity)
            if decision.shadow_arm == "candidate":
                self._runtime.record_pair(decision, shadow.cost_micros, primary.cost_micros)
            else:
                self._runtime.record_pair(decision, primary.cost_micros, shadow.cost_micros)
