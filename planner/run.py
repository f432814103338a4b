"""One plan-and-execute run: plan (or reuse a cached plan), execute, join, maybe re-plan, answer.

    fast path?  -- short single-step request --> one executor call --> answer
    plan        -- planner call, JSON task graph; one repair attempt with the validator's
                   errors; still invalid --> a single completion on the planner model
    execute     -- planner.scheduler.run_plan: event-driven DAG on executor aliases
    tools       -- a server tool task (MCP) runs like any task; a client tool task that becomes
                   ready ends the round: the ready calls go back to the client (planner.rounds)
                   and a later request with their results resumes the run from its saved state
    join        -- joiner call: finish (with the answer) or replan (with feedback)
    caps        -- planner.budget: calls, tokens, dollars, tasks, re-plans, deadline; when one
                   stops the run, the answer is written from the partial results and the
                   completion ends with finish_reason "length"

Every model call goes through `InternalCaller`, i.e. the gateway's own routing. Nothing
here raises for a bad plan or a failed call: the run always ends in an answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from config.schema import MetaModelConfig
from metering.ceiling import RateCeiling
from planner.budget import DEADLINE, REPEATED_WORK, Budget, BudgetExhausted, Caps
from planner.extract import extract_json
from planner.internal import CallFailed, CallResult, InternalCaller
from planner.outcome import RunOutcome, call_record, round_account, task_record
from planner.plan import Plan, PlanLimits, Task, response_format, validate_plan
from planner.prompts import (
    conversation_text,
    joiner_messages,
    planner_messages,
    prompt_token_bound,
    prompt_tokens,
    repair_messages,
    task_messages,
    tool_repair_messages,
)
from planner.reuse import instructions_of, repeats_work
from planner.rounds import RunState
from planner.scheduler import AttemptFailed, Estimate, TaskResult, render_inputs, run_plan
from planner.tool_tasks import ToolServer, ToolTasks
from planner.tools import ToolSpec, catalogue

Progress = Callable[[str], Awaitable[None]]
# Time kept back from the deadline for writing the answer from partial results.
_ANSWER_RESERVE_S = 0.05


class PlanRun:
    def __init__(
        self, name: str, config: MetaModelConfig, caller: InternalCaller, ceiling: RateCeiling, request_id: str,
        cached_plan: dict[str, Any] | None = None, progress: Progress | None = None,
        journal: Any = None, tools: Mapping[str, ToolSpec] | None = None, tool_server: ToolServer | None = None,
        run_id: str = "", prior: RunState | None = None, parallel_tool_calls: bool = True,
    ) -> None:
        self.name = name
        self.config = config
        self.caller = caller
        self.ceiling = ceiling
        self.request_id = request_id
        caps = config.caps
        self.budget = Budget(Caps(
            max_replans=caps.max_replans, max_tasks=caps.max_tasks, max_llm_calls=caps.max_llm_calls,
            max_total_tokens=caps.max_total_tokens, max_cost_usd=caps.max_cost_usd, deadline_s=caps.deadline_s,
            max_tool_calls=caps.max_tool_calls,
        ))
        self.tools = ToolTasks(tools, tool_server, run_id, self._repair_arguments) if tools else None
        self.prior = prior
        self.parallel_tool_calls = parallel_tool_calls
        if prior is not None:
            self.budget.add_spent(prior.spent)
        shape = config.shape
        self.limits = PlanLimits(
            max_tasks_per_round=shape.max_tasks_per_round, max_tasks_total=caps.max_tasks,
            max_depth=shape.max_depth, max_fan_in=shape.max_fan_in, max_task_tokens=shape.max_task_tokens,
        )
        self.cached_plan = cached_plan
        self.progress = progress
        self.journal = journal
        earlier = prior.trace if prior is not None else {}
        self.calls: list[dict[str, Any]] = list(earlier.get("calls", []))
        # Every successful task's result, also of earlier rounds: what later tasks' inputs are rendered from.
        self._outputs: dict[str, TaskResult] = {}
        self.plans: list[dict[str, Any]] = list(earlier.get("plans", []))
        self.notes: list[str] = list(earlier.get("notes", []))
        self.repeated_work = False  # a re-plan redid finished work: the run stops with repeated_work
        self._queue_waits: list[float] = []
        self.started = time.monotonic()

    # -- model calls ------------------------------------------------------------------------
    async def _call(
        self, role: str, alias: str, messages: list[dict[str, Any]], max_tokens: int | None = None,
        json_format: dict[str, Any] | None = None,
    ) -> CallResult | None:
        """A planner/joiner/fast-path call under the budget; None when the budget or the upstream says no."""
        prompt, prompt_bound = prompt_tokens(messages), prompt_token_bound(messages)
        left = self.budget.remaining()
        room = int(left["tokens"]) - prompt
        affordable = self.ceiling.affordable_completion(alias, prompt_bound, Decimal(str(left["dollars"])))
        if affordable is not None:
            room = min(room, affordable)
        if max_tokens is None and 0 < room < self.limits.max_task_tokens:
            # Near the token or dollar cap a call may only write what is left of it.
            max_tokens = room
        elif max_tokens is None and affordable is not None:
            # A priced call without a limit could write past the dollar cap: it gets the limit it is held at.
            max_tokens = self.limits.max_task_tokens
        # An unpriced call without a limit is held at max_task_tokens (of tokens only: it costs nothing).
        completion = max_tokens or self.limits.max_task_tokens
        try:
            reservation = self.budget.reserve(
                prompt + (max_tokens or 0), self.ceiling.worst_case(alias, prompt_bound, completion)
            )
        except BudgetExhausted as exc:
            self.notes.append(f"{role} call not made: {exc.reason}")
            return None
        try:
            async with asyncio.timeout(max(0.0, self.budget.seconds_left() - _ANSWER_RESERVE_S)):
                result = await self.caller.complete(alias, messages, max_tokens, json_format, self.request_id)
        except (CallFailed, TimeoutError) as exc:
            self.budget.charge(0, 0, Decimal(0), reservation)
            self.calls.append({"role": role, "alias": alias, "status": "failed", "error": str(exc)[:200]})
            return None
        self.budget.charge(result.prompt_tokens, result.completion_tokens, result.cost, reservation)
        self.calls.append(call_record(role, result))
        return result

    async def _task(self, task: Task, inputs: dict[str, TaskResult]) -> TaskResult:
        if task.tool is not None:
            return await self._tool_task(task, inputs)
        alias = self._executor(task)
        messages = task_messages(self._goal, task.instruction, render_inputs(task, inputs, self.config.input_chars))
        started = time.time()
        try:
            result = await self.caller.complete(alias, messages, task.max_tokens, None, self.request_id)
        except CallFailed as exc:
            # 4xx will not get better by asking again; 429 and 5xx may.
            raise AttemptFailed(str(exc)[:200], retryable=exc.status == 429 or exc.status >= 500) from None
        done = TaskResult(
            task_id=task.id, status="ok", output=result.text, started_at=started, ended_at=time.time(),
            attempts=1, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
            cost=result.cost, model=f"{result.provider}/{result.model}", finish_reason=result.finish_reason,
        )
        self._outputs[task.id] = done
        if self.journal is not None:
            # Written before the task counts as done, so a resumed run never pays for it twice.
            await self.journal.task_done(done)
        if self.progress is not None:
            await self.progress(f"task {task.id} done ({result.model})\n")
        return done

    async def _tool_task(self, task: Task, inputs: dict[str, TaskResult]) -> TaskResult:
        if self.tools is None:
            raise AttemptFailed(f"tool '{task.tool}' is not on offer", retryable=False)
        done = await self.tools.run(task, inputs)
        self._outputs[task.id] = done
        if self.journal is not None:
            await self.journal.task_done(done)
        if self.progress is not None:
            await self.progress(f"task {task.id} done ({task.tool})\n")
        return done

    async def _repair_arguments(self, task: Task, spec: Any, arguments: Any, errors: list[str]) -> str | None:
        """One cheap executor call that rewrites a tool task's arguments to fit the tool's schema."""
        messages = tool_repair_messages(self._goal, spec.name, spec.parameters, arguments, errors)
        result = await self._call("repair_arguments", self.config.executors["cheap"], messages, None,
                                  {"type": "json_object"})
        return result.text if result is not None else None

    def _executor(self, task: Task) -> str:
        return self.config.executors.get(task.tier) or self.config.executors["cheap"]

    def _task_estimate(self, task: Task) -> Estimate:
        """A task call's worst case before it starts: its prompt (its inputs are known by then) and
        completion cap, in tokens and in dollars at the dearest target of its executor alias."""
        inputs = render_inputs(task, self._outputs, self.config.input_chars)
        messages = task_messages(self._goal, task.instruction, inputs)
        cost = self.ceiling.worst_case(self._executor(task), prompt_token_bound(messages), task.max_tokens)
        return Estimate(prompt_tokens(messages) + task.max_tokens, cost)

    # -- phases -------------------------------------------------------------------------------
    async def _plan(self, messages: list[dict[str, Any]], feedback: str | None, done: dict[str, TaskResult]) -> (
        Plan | None
    ):
        specs = list(self.tools.specs.values()) if self.tools is not None else []
        prompt = planner_messages(
            messages, self.budget.remaining(), self.limits.max_tasks_per_round, feedback,
            render_inputs(Task(id="done", instruction="-", deps=tuple(done)), done, self.config.input_chars)
            if done else None, catalogue(specs) if specs else None,
        )
        json_format = response_format(self.limits, bool(specs)) if self.config.planner_json == "json_schema" else {
            "type": "json_object"}
        known = frozenset(done)
        earlier = [t.instruction for p in self.plans for t in _tasks_of(p)]
        for attempt in ("plan", "repair"):
            result = await self._call(attempt, self.config.planner, prompt, None, json_format)
            if result is None:
                return None
            obj, error = extract_json(result.text)
            if known and repeats_work(instructions_of(obj), earlier):
                # Checked before validation: the very same plan again (its ids taken by finished
                # tasks) is a repeat to stop at, not an invalid plan to spend a repair call on.
                self.notes.append(f"{attempt} repeats work that already ran")
                self.repeated_work = True
                return None
            plan, errors = (None, [error or "no JSON object found"]) if obj is None else validate_plan(
                obj, self.limits, tasks_done_before=len(done), known_result_ids=known,
                tool_names=[s.name for s in specs])
            if plan is not None:
                self.plans.append(plan.to_dict())
                return plan
            self.notes.append(f"{attempt} rejected: {'; '.join(errors[:5])}")
            prompt = repair_messages(prompt, result.text, errors)
        return None

    async def _join(self, plan: Plan, results: dict[str, TaskResult]) -> tuple[str, str]:
        """('finish', answer) or ('replan', feedback); ('', '') when the joiner gave nothing usable."""
        joiner = self.config.joiner or self.config.planner
        # The joiner reads the plan's final results (tasks no other task consumed) and every
        # failure; intermediate results already live inside the final ones, and resending
        # them made the joiner the dearest call of a run.
        consumed = {dep for task in plan.tasks for dep in task.deps}
        shown = {k: r for k, r in results.items() if k not in consumed or r.status != "ok"}
        text = render_inputs(Task(id="join", instruction="-", deps=tuple(shown)), shown, self.config.input_chars)
        result = await self._call("join", joiner, joiner_messages(self._goal, plan.final_instruction, text, None),
                                  None, {"type": "json_object"})
        if result is None:
            return "", ""
        obj, _ = extract_json(result.text)
        if isinstance(obj, dict) and obj.get("action") == "replan" and isinstance(obj.get("feedback"), str):
            return "replan", obj["feedback"]
        if isinstance(obj, dict) and isinstance(obj.get("answer"), str):
            return "finish", obj["answer"]
        # A joiner that wrote prose instead of JSON still wrote an answer.
        return "finish", result.text

    async def _answer_from_partial(self, plan: Plan | None, results: dict[str, TaskResult], reason: str) -> str:
        text = render_inputs(Task(id="partial", instruction="-", deps=tuple(results)), results,
                             self.config.input_chars) if results else "(no task finished)"
        if reason != DEADLINE and self.budget.seconds_left() > _ANSWER_RESERVE_S:
            joiner = self.config.joiner or self.config.planner
            final = plan.final_instruction if plan else "answer the user's request"
            result = await self._call("final", joiner, joiner_messages(self._goal, final, text, reason))
            if result is not None and result.text:
                return result.text
        return f"The run stopped early ({reason}) before an answer could be written. Partial results:\n{text}"

    # -- the run ------------------------------------------------------------------------------
    async def execute(self, messages: list[dict[str, Any]], client_results: dict[str, str] | None = None) -> (
        RunOutcome
    ):
        """Run (or, with `prior`, resume with the client's tool results by task id) until an answer
        or a batch of client tool calls."""
        self._goal = conversation_text(messages)
        cache_hit = None
        if self.prior is not None:
            plan, _ = validate_plan(self.prior.plan, self.limits, tool_names=self._tool_names())
            if plan is None:
                return self._outcome(await self._answer_from_partial(None, {}, "run_state_invalid"),
                                     "run_state_invalid", {}, [], [])
            results = dict(self.prior.results)
            for task_id, output in (client_results or {}).items():
                results[task_id] = TaskResult(task_id, "ok", output=output, attempts=1, model="client")
        else:
            fast = self.config.fast_path
            if fast.enabled and self.tools is None and _is_short_single_step(messages, fast.max_prompt_chars):
                self.notes.append("fast path: a short single-step request, sent straight to one executor call")
                result = await self._call("fast_path", self.config.executors["cheap"], messages)
                if result is not None:
                    return self._outcome(result.text, None, {}, [], [], fast_path=True)
            plan = None
            if self.cached_plan is not None:
                plan, errors = validate_plan(self.cached_plan, self.limits, tool_names=self._tool_names())
                cache_hit = plan is not None
                if plan is not None:
                    self.plans.append(plan.to_dict())
                    self.notes.append("plan taken from the plan cache; planner skipped")
                else:
                    self.notes.append(f"cached plan no longer valid: {'; '.join(errors[:3])}")
            if plan is None:
                plan = await self._plan(messages, None, {})
            if plan is None:
                self.notes.append("no usable plan after one repair: answered by a single planner completion")
                result = await self._call("fallback", self.config.planner, messages)
                if result is None:
                    reason = self._stop_now() or "planner_unavailable"
                    return self._outcome(await self._answer_from_partial(None, {}, reason), reason, {}, [], [],
                                         cache_hit=cache_hit)
                return self._outcome(result.text, None, {}, [], [], cache_hit=cache_hit)
            if self.journal is not None:
                await self.journal.plan_made(plan)
            results = dict(self.journal.finished) if self.journal is not None else {}
        self._outputs.update((k, r) for k, r in results.items() if r.status == "ok")
        return await self._rounds(messages, plan, results, cache_hit)

    async def _rounds(
        self, messages: list[dict[str, Any]], plan: Plan, results: dict[str, TaskResult], cache_hit: bool | None,
    ) -> RunOutcome:
        overhead: list[float] = []
        stop: str | None = None
        answer: str | None = None
        while True:
            pending = Plan(tuple(t for t in plan.tasks if t.id not in results), plan.final_instruction)
            schedule = await run_plan(
                pending, self._task, budget=self.budget, deadline_at=self.budget.deadline_at - _ANSWER_RESERVE_S,
                task_timeout_s=self.config.task_timeout_s, concurrency=self.config.concurrency,
                per_key_limits=dict.fromkeys(self.config.executors, self.config.per_alias_concurrency),
                retries=self.config.task_retries, prior_results=results, estimate=self._task_estimate,
                defer=self.tools.is_client if self.tools is not None else None,
            ) if pending.tasks else None
            deferred: list[Task] = []
            if schedule is not None:
                deferred = [t for t in pending.tasks if schedule.results.get(t.id, _NONE).status == "deferred"]
                results.update((k, r) for k, r in schedule.results.items() if r.status != "deferred")
                overhead += schedule.overhead_s
                self._queue_waits += schedule.queue_wait_s
                stop = schedule.stop_reason
            if stop is None and deferred:
                assert self.tools is not None
                batch, stop = await self.tools.client_batch(deferred, results, self.budget, self.parallel_tool_calls)
                if batch:
                    return self._outcome("", None, results, overhead, list(plan.tasks), cache_hit=cache_hit,
                                         tool_calls=batch, plan=plan)
                if stop is None:
                    continue  # calls whose arguments failed: run again, so what depends on them is skipped
            if stop is not None:
                break
            direct = self._answer_of(plan, results)
            if direct is not None:
                answer = direct
                break
            action, text = await self._join(plan, results)
            if action == "finish":
                answer = text
                break
            stop = self._stop_now()
            if action != "replan" or stop is not None:
                stop = stop or "joiner_unavailable"
                break
            if (stop := self.budget.can_replan()) is not None:
                break
            replanned = await self._plan(messages, text, results)
            if replanned is None:
                stop = REPEATED_WORK if self.repeated_work else self._stop_now() or "replan_invalid"
                break
            self.budget.note_replan()
            plan = Plan(plan.tasks + replanned.tasks, replanned.final_instruction, replanned.answer_from)
        if answer is None:
            answer = await self._answer_from_partial(plan, results, stop or "stopped")
        return self._outcome(answer, stop, results, overhead, list(plan.tasks), cache_hit=cache_hit, plan=plan)

    def _answer_of(self, plan: Plan, results: dict[str, TaskResult]) -> str | None:
        """The output of the plan's `answer_from` task, when every task succeeded and it was not cut off:
        the answer, with no joiner call. Anything less goes to the joiner, which may re-plan."""
        chosen = results.get(plan.answer_from) if plan.answer_from is not None else None
        if chosen is None or chosen.finish_reason == "length" or not chosen.output.strip():
            return None
        if any(results.get(t.id) is None or results[t.id].status != "ok" for t in plan.tasks):
            return None
        self.notes.append(f"answer taken from task {plan.answer_from}; joiner skipped")
        return chosen.output

    def _tool_names(self) -> list[str]:
        return list(self.tools.specs) if self.tools is not None else []

    def _stop_now(self) -> str | None:
        if self.budget.seconds_left() <= _ANSWER_RESERVE_S:
            # Only the time kept for writing the answer is left: a call cut off now was cut off by the deadline.
            return DEADLINE
        return self.budget.can_call()

    def _outcome(
        self, answer: str, stop: str | None, results: dict[str, TaskResult], overhead: list[float],
        tasks: list[Task], fast_path: bool = False, cache_hit: bool | None = None,
        tool_calls: list[tuple[Task, dict[str, Any]]] | None = None, plan: Plan | None = None,
    ) -> RunOutcome:
        tiers = {t.id: t.tier for t in tasks}
        run_usage, run_cost = self.budget.usage(), self.budget.cost
        round_usage, round_cost = round_account(self.prior.spent if self.prior else {}, run_usage, run_cost)
        earlier_rounds = self.prior.trace.get("rounds", []) if self.prior is not None else []
        rounds = [*earlier_rounds, {
            "round": len(earlier_rounds), "usage": round_usage, "cost_usd": str(round_cost),
            "tasks_finished": [k for k, r in results.items() if self.prior is None or k not in self.prior.results],
            "tool_calls": [{"task": t.id, "tool": t.tool, "arguments": a} for t, a in tool_calls or ()],
            "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
        }]
        called_with = self.tools.called_with if self.tools is not None else {}
        trace = {
            "meta_model": self.name,
            "stop_reason": stop,
            "fast_path": fast_path,
            "plan_cache_hit": cache_hit,
            "plans": self.plans,
            "replans": self.budget.replans,
            "tasks": [task_record(r, tiers.get(r.task_id, "cheap"), called_with.get(r.task_id))
                      for r in results.values()],
            "calls": self.calls,
            "notes": self.notes,
            "rounds": rounds,
            "budget_left": self.budget.remaining(),
        }
        return RunOutcome(
            answer=answer,
            finish_reason="length" if stop else "tool_calls" if tool_calls else "stop",
            stop_reason=stop,
            usage=round_usage,
            cost=round_cost,
            trace=trace,
            tasks_run=sum(1 for r in results.values() if r.status in ("ok", "failed", "cancelled")),
            llm_calls=self.budget.llm_calls,
            replans=self.budget.replans,
            duration_s=time.monotonic() - self.started,
            task_durations=[(tiers.get(r.task_id, "cheap"), r.ended_at - r.started_at) for r in results.values()
                            if r.status == "ok" and r.started_at is not None and r.ended_at is not None],
            scheduler_overhead_s=overhead,
            task_queue_wait_s=self._queue_waits,
            cache_hit=cache_hit,
            tool_calls=tool_calls or [],
            plan=plan,
            results=results,
            spent=self.budget.spent(),
            run_usage=run_usage,
            run_cost=run_cost,
            server_tool_calls=dict(self.tools.outcomes) if self.tools is not None else {},
        )


_NONE = TaskResult("", "skipped")


def _is_short_single_step(messages: list[dict[str, Any]], max_chars: int) -> bool:
    users = [m for m in messages if m.get("role") == "user"]
    if len(users) != 1 or any(m.get("role") in ("assistant", "tool") for m in messages):
        return False
    content = users[0].get("content")
    return isinstance(content, str) and len(content) <= max_chars


def _tasks_of(plan: dict[str, Any]) -> list[Task]:
    return [Task(id=t["id"], instruction=t["instruction"]) for t in plan.get("tasks", [])]
