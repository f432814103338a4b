"""The plan-and-execute meta-model as one more provider.

The gateway routes a request for a meta-model name to this provider like to any
upstream, so the client gets an ordinary `chat.completion` (or a stream of
`chat.completion.chunk`s) whose `usage` sums every internal call and whose
`x-cutover-cost-usd` is the run's total. Per-call extensions, sent in the request's
`cutover` field (e.g. `extra_body={"cutover": {"trace": True, "progress": True}}`):
`trace` adds the run's trace to the answer (`cutover.trace`), `progress` streams
progress lines in the delta field `cutover_progress` before the answer.

A client that offers `tools` gets what any model sends: an assistant message with the ready
`tool_calls` and `finish_reason: "tool_calls"`. Its next request, with the results as `role: "tool"`
messages, resumes the run from the store (planner.rounds), on whichever replica it reaches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Protocol

import orjson

from config.schema import MetaModelConfig
from metering.ceiling import RateCeiling
from planner.cache import PlanCache
from planner.internal import InternalCaller
from planner.meta_stream import MetaStream
from planner.outcome import RunOutcome
from planner.reuse import normalised_shape
from planner.rounds import Resume, RunState, call_id, find_resume, new_run_id, tool_call
from planner.run import PlanRun
from planner.runs import Journal, Runs
from planner.tool_tasks import ToolServer
from planner.tools import SpecCache, ToolRequestError, ToolSpec, check_tool_choice, client_tools, offers_tools
from providers.base import UpstreamReply, UpstreamRequest
from providers.errors import RunFailed, UpstreamStatusError
from store.base import Store, StoreUnavailable
from telemetry.planner_metrics import PlannerMetrics

_CHUNK_WORDS = 8


def _options(payload: dict[str, Any]) -> dict[str, Any]:
    options = payload.get("cutover")
    return options if isinstance(options, dict) else {}


def _client_error(param: str, message: str, code: str) -> UpstreamStatusError:
    """The client's 400 (an upstream's own 4xx: passed through, not retried, no harm to health)."""
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}})
    return UpstreamStatusError(400, body)


class ServerTools(ToolServer, Protocol):
    async def tools(self, names: Sequence[str]) -> tuple[list[ToolSpec], list[str]]: ...


class MetaModel:
    def __init__(
        self, name: str, config: MetaModelConfig, metrics: PlannerMetrics, runs: Runs,
        planner_equivalent_cost: Callable[[dict[str, int]], Decimal], store: Store | None = None,
        servers: ServerTools | None = None,
    ) -> None:
        self.name = name
        self._store = store
        self._servers = servers
        self._specs = SpecCache()
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
        """The finished round as a stored-able dict: the completion body plus cost."""
        if self._caller is None:
            raise RunFailed(f"meta-model '{self.name}' is not ready")
        messages = request.payload.get("messages") or []
        resume = find_resume(messages)
        if resume is not None:
            state = await self._load(resume.run_id, request.client)
            answered = state.replies.get(str(resume.round))
            if answered is not None:
                # A retried round (its answer was lost on the way): the same answer, nothing runs twice,
                # and nothing is spent again.
                return {**answered, "cost": "0"}
            if resume.round != state.round:
                raise _client_error("messages", "These tool results answer an earlier round of the run, which "
                                    "was answered already; send the results of its latest tool calls.", "stale_run")
            key = f"{self.name}:{request.client}:{resume.run_id}:{resume.round}"

            async def resumed(journal: Journal, stored_plan: dict[str, Any] | None) -> dict[str, Any]:
                return await self._resume(request, state, resume, journal, progress)

            return await self._runs.run(key, resumed)
        specs = self._client_specs(request.payload)
        run_id = new_run_id(self.name, request.client, request.idempotency_key)
        started = await self._started(run_id, request) if request.idempotency_key and specs else None
        if started is not None:
            # A client retry of a request that handed back tool calls: the same calls, even on another
            # replica or after a restart, so the client never runs a tool twice.
            return {**started, "cost": "0"}
        retry_key = f"{self.name}:{request.client}:{request.idempotency_key}" if request.idempotency_key else None

        async def execute(journal: Journal, stored_plan: dict[str, Any] | None) -> dict[str, Any]:
            return await self._execute(request, messages, journal, stored_plan, progress, run_id, specs)

        return await self._runs.run(retry_key, execute)

    async def _load(self, run_id: str, client: str | None) -> RunState:
        raw = None
        if self._store is not None:
            try:
                raw = await self._store.get_record("run", run_id)
            except StoreUnavailable:
                raise RunFailed("the run's state cannot be read right now; retry shortly") from None
        state = RunState.from_json(raw) if raw is not None else None
        if state is None or state.meta != self.name or state.client != client:
            raise _client_error("messages", "The tool calls these results answer belong to no run this gateway "
                                "knows (it expired, or was started by another key); start the request again.",
                                "run_not_found")
        return state

    async def _started(self, run_id: str, request: UpstreamRequest) -> dict[str, Any] | None:
        try:
            raw = await self._store.get_record("run", run_id) if self._store is not None else None
        except StoreUnavailable:
            return None  # the in-process record of the run (planner.runs) still catches a retry here
        state = RunState.from_json(raw) if raw is not None else None
        if state is None or state.meta != self.name or state.client != request.client:
            return None
        return state.replies.get("start")

    async def _save(self, state: RunState) -> None:
        if self._store is None:
            raise RunFailed("client tool calls need a store to keep the run between requests")
        try:
            await self._store.put_record("run", state.run_id, state.to_json(), self.config.run_retention_s)
        except StoreUnavailable:
            raise RunFailed("the run's state cannot be saved right now; retry shortly") from None

    async def _tools(self, client: list[ToolSpec]) -> tuple[dict[str, ToolSpec], list[str]]:
        """Every tool on offer to this run: the client's and the configured MCP servers'."""
        notes: list[str] = []
        server: list[ToolSpec] = []
        if self._servers is not None and self.config.mcp_servers:
            server, notes = await self._servers.tools(self.config.mcp_servers)
        specs = {s.name: s for s in server}
        for spec in client:
            if spec.name in specs:
                raise _client_error("tools", f"The tool name '{spec.name}' is taken by a tool of the gateway's "
                                    "MCP servers; rename it.", "tool_name_taken")
            specs[spec.name] = spec
        return specs, notes

    async def _execute(
        self, request: UpstreamRequest, messages: list[dict[str, Any]], journal: Journal,
        stored_plan: dict[str, Any] | None, progress: Any, run_id: str, client: list[ToolSpec],
    ) -> dict[str, Any]:
        assert self._caller is not None and self._ceiling is not None
        specs, notes = await self._tools(client)
        # A plan written for other tools is no plan for these: the cache serves tool-less requests only.
        use_cache = self._cache is not None and not specs
        shape = normalised_shape(messages) if use_cache else None
        cached = stored_plan or (self._cache.get(shape) if self._cache is not None and shape else None)
        run = PlanRun(
            self.name, self.config, self._caller, self._ceiling, request.request_id, cached, progress, journal,
            specs, self._servers, run_id, parallel_tool_calls=request.payload.get("parallel_tool_calls") is not False,
        )
        run.notes.extend(notes)
        outcome = await self._run(run, messages)
        if use_cache and self._cache is not None and shape:
            if outcome.cache_hit is None and not outcome.trace["fast_path"]:
                outcome.cache_hit = False
                outcome.trace["plan_cache_hit"] = False
            failed = any(t["status"] != "ok" for t in outcome.trace["tasks"])
            if outcome.stop_reason is None and not failed and outcome.trace["plans"] and not outcome.trace[
                    "replans"]:
                self._cache.put(shape, outcome.trace["plans"][-1])
            elif failed:
                self._cache.invalidate(shape)
        self._account(outcome)
        if not outcome.tool_calls:
            return self._finished(outcome, run_id, None)
        state = RunState(run_id, self.name, request.client, {}, tools=[_spec_dict(s) for s in client])
        return await self._hand_back(outcome, state, 0)

    async def _resume(
        self, request: UpstreamRequest, state: RunState, resume: Resume, journal: Journal, progress: Any,
    ) -> dict[str, Any]:
        assert self._caller is not None and self._ceiling is not None
        client = [self._specs.spec(t["name"], t["description"], t["parameters"]) for t in state.tools]
        specs, notes = await self._tools(client)
        answers = {}
        for call, task_id in state.issued.items():
            # A call the client sent no result for is answered with that fact, so the run can go on.
            answers[task_id] = resume.results.get(call, "(the client sent no result for this tool call)")
        run = PlanRun(
            self.name, self.config, self._caller, self._ceiling, request.request_id, None, progress, journal,
            specs, self._servers, state.run_id, prior=state,
            parallel_tool_calls=request.payload.get("parallel_tool_calls") is not False,
        )
        run.notes.extend(notes)
        outcome = await self._run(run, resume.goal_messages, answers)
        self._account(outcome)
        if outcome.tool_calls:
            return await self._hand_back(outcome, state, state.round + 1, answering=resume.round)
        result = self._finished(outcome, state.run_id, state.round + 1)
        self._remember(state, str(resume.round), result)
        state.issued = {}
        self._keep(state, outcome)
        await self._save(state)
        return result

    async def _run(self, run: PlanRun, messages: list[dict[str, Any]], answers: dict[str, str] | None = None) -> (
        RunOutcome
    ):
        try:
            return await run.execute(messages, answers)
        except Exception as exc:
            self._metrics.runs.labels(self.name, "error", "exception").inc()
            raise RunFailed(f"the {self.name} run failed ({type(exc).__name__})") from None

    @staticmethod
    def _remember(state: RunState, answering: str, result: dict[str, Any]) -> None:
        """Keep the answer a retry of this request gets: the first request's, and the latest round's (a client
        cannot be retrying an older round: it has not seen the answers after it)."""
        state.replies = {k: v for k, v in state.replies.items() if k == "start"}
        state.replies[answering] = result

    @staticmethod
    def _keep(state: RunState, outcome: RunOutcome) -> None:
        if outcome.plan is not None:
            state.plan = outcome.plan.to_dict()
        state.results = {k: r for k, r in outcome.results.items() if r.status != "deferred"}
        state.spent = outcome.spent
        state.trace = outcome.trace

    async def _hand_back(self, outcome: RunOutcome, state: RunState, round_: int, answering: int | None = None) -> (
        dict[str, Any]
    ):
        """Save the run, then answer with its ready client tool calls."""
        assert outcome.plan is not None
        index = {t.id: i for i, t in enumerate(outcome.plan.tasks)}
        calls = [(call_id(state.run_id, round_, index[task.id]), task, arguments)
                 for task, arguments in outcome.tool_calls]
        self._keep(state, outcome)
        state.round = round_
        state.issued = {cid: task.id for cid, task, _ in calls}
        body = self._completion(outcome, state.run_id, round_)
        message = body["choices"][0]["message"]
        message["content"] = None
        message["tool_calls"] = [tool_call(cid, task.tool or "", arguments) for cid, task, arguments in calls]
        result = {"body": body, "cost": str(outcome.cost), "trace": outcome.trace}
        self._remember(state, "start" if answering is None else str(answering), result)
        await self._save(state)
        return result

    def _finished(self, outcome: RunOutcome, run_id: str, round_: int | None) -> dict[str, Any]:
        return {"body": self._completion(outcome, run_id, round_), "cost": str(outcome.cost), "trace": outcome.trace}

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
        for result, count in outcome.server_tool_calls.items():
            m.tool_calls.labels(name, "mcp", result).inc(count)
        if outcome.tool_calls:
            m.tool_calls.labels(name, "client", "handed_back").inc(len(outcome.tool_calls))
        if outcome.cache_hit is not None or self._cache is not None:
            m.cache.labels(name, "hit" if outcome.cache_hit else "miss").inc()

    def _completion(self, outcome: RunOutcome, run_id: str, round_: int | None) -> dict[str, Any]:
        extension: dict[str, Any] = {"stop_reason": outcome.stop_reason, "cost_usd": str(outcome.cost)}
        if round_ is not None:
            # A run over several requests: each answer bills its own round; these are the run's totals.
            extension.update(run_id=run_id, round=round_, run_usage=outcome.run_usage,
                             run_cost_usd=str(outcome.run_cost))
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
            "cutover": extension,
        }

    @staticmethod
    def _with_trace(result: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        body = result["body"]
        if _options(payload).get("trace"):
            body = {**body, "cutover": {**body["cutover"], "trace": result["trace"]}}
        return body

    def _client_specs(self, payload: dict[str, Any]) -> list[ToolSpec]:
        """The client's tools the planner may call. Nothing is silently dropped: tools offered to a
        meta-model that takes none, or a `tool_choice` a plan cannot honour, is the client's 400."""
        try:
            check_tool_choice(payload)
            if not offers_tools(payload):
                return []
            if not self.config.client_tools:
                raise ToolRequestError("tools", f"The meta-model '{self.name}' does not call the client's tools: "
                                       "send the request without 'tools', or to a model that calls them.")
            return client_tools(payload, self._specs)
        except ToolRequestError as exc:
            raise _client_error(exc.param, str(exc), "unsupported_parameter") from None

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        self._client_specs(request.payload)
        result = await self._result(request)
        body = self._with_trace(result, request.payload)
        raw = orjson.dumps(body)
        return UpstreamReply(200, raw, "application/json", data=body, known_cost=Decimal(result["cost"]))

    async def open_stream(self, request: UpstreamRequest) -> MetaStream:
        self._client_specs(request.payload)
        return MetaStream(self.name, request, self._result, self._with_trace)


def _spec_dict(spec: ToolSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
