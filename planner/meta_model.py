"""The plan-and-execute meta-model as one more provider.

The gateway routes a request for a meta-model name to this provider like to any
upstream, so the client gets an ordinary `chat.completion` (or a stream of
`chat.completion.chunk`s) whose `usage` sums every internal call and whose
`x-cutover-cost-usd` is the run's total. Per-call extensions, sent in the request's
`cutover` field (e.g. `extra_body={"cutover": {"trace": True, "progress": True}}`):
`trace` adds the run's trace to the answer (`cutover.trace`), `progress` streams
progress lines in the delta field `cutover_progress` before the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import orjson

from config.schema import MetaModelConfig
from planner.cache import PlanCache
from planner.internal import InternalCaller
from planner.pricing import RateCeiling
from planner.reuse import normalised_shape
from planner.run import PlanRun, RunOutcome
from planner.runs import Journal, Runs
from providers.base import UpstreamReply, UpstreamRequest
from providers.errors import RunFailed, UpstreamStatusError, UpstreamStreamBroken
from telemetry.planner_metrics import PlannerMetrics

_CHUNK_WORDS = 8


def _options(payload: dict[str, Any]) -> dict[str, Any]:
    options = payload.get("cutover")
    return options if isinstance(options, dict) else {}


class MetaModel:
    def __init__(
        self, name: str, config: MetaModelConfig, metrics: PlannerMetrics, runs: Runs,
        planner_equivalent_cost: Callable[[dict[str, int]], Decimal],
    ) -> None:
        self.name = name
        self.config = config
        self._metrics = metrics
        self._runs = runs
        self._equivalent = planner_equivalent_cost
        self._cache = PlanCache(config.cache.max_entries, config.cache.ttl_s) if config.cache.enabled else None
        self._caller: InternalCaller | None = None
        self._ceiling: RateCeiling | None = None

    def bind(self, caller: InternalCaller, ceiling: RateCeiling) -> None:
        self._caller = caller
        self._ceiling = ceiling

    @property
    def ready(self) -> bool:
        return self._caller is not None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _result(self, request: UpstreamRequest, progress: Any = None) -> dict[str, Any]:
        """The finished run as a stored-able dict: the completion body plus cost."""
        if self._caller is None:
            raise RunFailed(f"meta-model '{self.name}' is not ready")
        messages = request.payload.get("messages") or []
        key = None
        if request.idempotency_key:
            key = f"{self.name}:{request.client}:{request.idempotency_key}"

        async def execute(journal: Journal, stored_plan: dict[str, Any] | None) -> dict[str, Any]:
            return await self._execute(request, messages, journal, stored_plan, progress)

        return await self._runs.run(key, execute)

    async def _execute(
        self, request: UpstreamRequest, messages: list[dict[str, Any]], journal: Journal,
        stored_plan: dict[str, Any] | None, progress: Any,
    ) -> dict[str, Any]:
        assert self._caller is not None and self._ceiling is not None
        shape = normalised_shape(messages) if self._cache is not None else None
        cached = stored_plan or (self._cache.get(shape) if self._cache is not None and shape else None)
        run = PlanRun(
            self.name, self.config, self._caller, self._ceiling, request.request_id, cached, progress, journal
        )
        try:
            outcome = await run.execute(messages)
        except Exception as exc:
            self._metrics.runs.labels(self.name, "error", "exception").inc()
            raise RunFailed(f"the {self.name} run failed ({type(exc).__name__})") from None
        if self._cache is not None and outcome.cache_hit is None and not outcome.trace["fast_path"]:
            outcome.cache_hit = False
            outcome.trace["plan_cache_hit"] = False
        self._account(outcome)
        if self._cache is not None and shape:
            failed = any(t["status"] != "ok" for t in outcome.trace["tasks"])
            if outcome.stop_reason is None and not failed and outcome.trace["plans"] and not outcome.trace[
                    "replans"]:
                self._cache.put(shape, outcome.trace["plans"][-1])
            elif failed:
                self._cache.invalidate(shape)
        return {"body": self._completion(outcome), "cost": str(outcome.cost), "trace": outcome.trace}

    def _account(self, outcome: RunOutcome) -> None:
        m = self._metrics
        name = self.name
        m.runs.labels(name, outcome.finish_reason, outcome.stop_reason or "none").inc()
        m.tasks.labels(name).observe(outcome.tasks_run)
        m.llm_calls.labels(name).observe(outcome.llm_calls)
        if outcome.replans:
            m.replans.labels(name).inc(outcome.replans)
        m.cost.labels(name).observe(float(outcome.cost))
        m.equivalent_cost.labels(name).observe(float(self._equivalent(outcome.usage)))
        m.duration.labels(name).observe(outcome.duration_s)
        for tier, seconds in outcome.task_durations:
            m.task_duration.labels(name, tier).observe(seconds)
        for seconds in outcome.scheduler_overhead_s:
            m.overhead.labels(name).observe(seconds)
        for seconds in outcome.task_queue_wait_s:
            m.queue_wait.labels(name).observe(seconds)
        if outcome.cache_hit is not None or self._cache is not None:
            m.cache.labels(name, "hit" if outcome.cache_hit else "miss").inc()

    def _completion(self, outcome: RunOutcome) -> dict[str, Any]:
        return {
            "id": "chatcmpl-pe-" + os.urandom(12).hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "system_fingerprint": "cutover-plan-and-execute",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": outcome.answer, "refusal": None},
                "logprobs": None,
                "finish_reason": outcome.finish_reason,
            }],
            "usage": {**outcome.usage, "prompt_tokens_details": {"cached_tokens": 0}},
            "cutover": {"stop_reason": outcome.stop_reason, "cost_usd": str(outcome.cost)},
        }

    @staticmethod
    def _with_trace(result: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        body = result["body"]
        if _options(payload).get("trace"):
            body = {**body, "cutover": {**body["cutover"], "trace": result["trace"]}}
        return body

    def _refuse_what_it_cannot_do(self, payload: dict[str, Any]) -> None:
        """Tools a client offers are not silently dropped: until plans can call them, a request offering
        any is the client's 400 (an upstream's own 4xx: passed through, not retried, no harm to health)."""
        choice = payload.get("tool_choice")
        param = "tools" if payload.get("tools") else "tool_choice" if choice not in (None, "none") else None
        if param is None:
            return
        message = (f"The meta-model '{self.name}' does not call tools: send the request without '{param}', "
                   "or to a model that calls them.")
        body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                       "code": "unsupported_parameter"}})
        raise UpstreamStatusError(400, body)

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        self._refuse_what_it_cannot_do(request.payload)
        result = await self._result(request)
        body = self._with_trace(result, request.payload)
        raw = orjson.dumps(body)
        return UpstreamReply(200, raw, "application/json", data=body, known_cost=Decimal(result["cost"]))

    async def open_stream(self, request: UpstreamRequest) -> MetaStream:
        self._refuse_what_it_cannot_do(request.payload)
        return MetaStream(self, request)


class MetaStream:
    """Frames the run as a chat.completion.chunk stream: role, optional progress, the answer, usage."""

    def __init__(self, model: MetaModel, request: UpstreamRequest) -> None:
        self._model = model
        self._request = request
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._id = "chatcmpl-pe-" + os.urandom(12).hex()
        self._created = int(time.time())
        self.known_cost: Decimal | None = None
        wants_progress = bool(_options(request.payload).get("progress"))
        self._task = asyncio.ensure_future(self._run(wants_progress))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return orjson.dumps({
            "id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model.name,
            "system_fingerprint": "cutover-plan-and-execute",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra,
        })

    async def _run(self, wants_progress: bool) -> None:
        put = self._queue.put_nowait
        put(self._chunk({"role": "assistant", "content": ""}))

        async def progress(line: str) -> None:
            put(self._chunk({"cutover_progress": line}))

        try:
            result = await self._model._result(self._request, progress if wants_progress else None)
        except Exception:
            put(None)
            raise
        body = MetaModel._with_trace(result, self._request.payload)
        choice = body["choices"][0]
        words = choice["message"]["content"].split(" ")
        for start in range(0, len(words), _CHUNK_WORDS):
            piece = " ".join(words[start:start + _CHUNK_WORDS])
            put(self._chunk({"content": piece if start == 0 else " " + piece}))
        put(self._chunk({}, choice["finish_reason"], cutover=body["cutover"]))
        put(orjson.dumps({
            "id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model.name,
            "choices": [], "usage": body["usage"],
        }))
        self.known_cost = Decimal(result["cost"])
        put(b"[DONE]")

    async def batches(self) -> AsyncIterator[list[bytes]]:
        while True:
            item = await self._queue.get()
            if item is None:
                raise UpstreamStreamBroken(f"the {self._model.name} run failed")
            batch = [item]
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    self._queue.put_nowait(None)
                    break
                batch.append(nxt)
            yield batch
            if batch[-1] == b"[DONE]":
                return

    async def events(self) -> AsyncIterator[bytes]:
        async for batch in self.batches():
            for event in batch:
                yield event

    def abort(self) -> None:
        # Without an idempotency key nobody can collect the answer: stop paying for it.
        if not self._request.idempotency_key:
            self._task.cancel()
        self._queue.put_nowait(None)

    async def aclose(self) -> None:
        if self._task.done():
            with contextlib.suppress(BaseException):
                self._task.result()
