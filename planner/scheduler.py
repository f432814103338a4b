"""Runs a validated `Plan` as a DAG: every task starts the moment its last dependency succeeds.

    result = await run_plan(plan, run_task, budget=..., deadline_at=..., task_timeout_s=...)
    result.results[task_id] -> TaskResult(status "ok" | "failed" | "skipped" | "cancelled", ...)
    result.stop_reason      -> None, or why new work stopped (a `budget` stop reason)

Event-driven, with no polling and no level-by-level barriers: the runner of a task that
succeeds decrements its dependents' counts of unfinished dependencies and spawns an asyncio
task for each dependent that reaches zero, so a ready task never waits on unrelated slow ones.

A spawned task is admitted in this order:

    1. its key's semaphore (`per_key_limits[key_of(task)]`, e.g. tier or upstream alias), then
    2. the request-wide semaphore (`concurrency`); key first, so a task queued behind a busy
       key never holds a request-wide slot that a task of another key could use;
    3. the budget: an earlier stop, `max_tasks`, then `can_call(*estimate(task))`, tokens and
       dollars (worst cases, so calls admitted together cannot overshoot a cap). A refusal records
       the stop reason (the first one wins) and skips this and every later task; tasks
       already running finish.

Each attempt reserves its estimate on the budget, calls `run_task` under
`asyncio.timeout(task_timeout_s)` and charges what the returned `TaskResult` says it used
(an `AttemptFailed` can carry the usage of a failed attempt); the scheduler is the only one
charging task calls, so `run_task` must not charge the budget itself. An exception is a
failed attempt, retried up to `retries` times after `backoff_s * 2**n` unless the exception
has `retryable = False` (as a non-retryable `providers.base.ProviderError` has); a retry is checked
against the budget like any call. The semaphores are held through backoff, which is the
back-pressure a struggling upstream needs. A task that fails for good skips every task that
depends on it, transitively; the rest of the graph goes on.

A tool task (`task.tool` set) is admitted against the budget's tool calls instead of its LLM
calls, counts one tool call and runs once: the tool's runner owns its retry policy (only a
read-only or idempotent tool may be called again). A task for which `defer(task)` is true is not
run at all: when it becomes ready it is recorded as "deferred" (a client tool call to hand back
to the client) and the tasks behind it wait, absent from the results, for a later `run_plan`.

At `deadline_at` the stop reason becomes "deadline", running tasks are cancelled (status
"cancelled"), everything else is skipped, and `run_plan` returns within `cancel_grace_s`
even if a `run_task` ignores its cancellation. `deadline_at` is read on the injected
`clock`, which must tick with the event loop's monotonic time for the deadline to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, NamedTuple

from planner.budget import DEADLINE, ZERO, Budget, Reservation, StopReason
from planner.plan import Plan, Task, topological_order

Status = Literal["ok", "failed", "skipped", "cancelled", "deferred"]


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One task's outcome. `run_task` fills output, usage and model; the scheduler the rest."""

    task_id: str
    status: Status = "ok"
    output: str = ""
    error: str | None = None
    started_at: float | None = None  # scheduler clock, when run_task was first invoked
    ended_at: float | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = ZERO
    model: str = ""
    # The model's own finish reason; "length" means the output stopped at the task's max_tokens.
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    results: dict[str, TaskResult]
    stop_reason: StopReason | None
    # Per started task, in start order: the scheduler's own seconds from becoming ready to
    # run_task being invoked, waits excluded...
    overhead_s: list[float]
    # ...and the seconds it waited for a concurrency slot or for room in the budget.
    queue_wait_s: list[float]

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.results.values())

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.results.values())

    @property
    def cost(self) -> Decimal:
        return sum((r.cost for r in self.results.values()), ZERO)


class AttemptFailed(Exception):
    """Raise from `run_task` for a failed attempt that still used tokens, so they are charged."""

    def __init__(
        self, message: str, *, retryable: bool = True, prompt_tokens: int = 0, completion_tokens: int = 0,
        cost: Decimal = ZERO,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost = cost


RunTask = Callable[[Task, dict[str, TaskResult]], Awaitable[TaskResult]]


def by_tier(task: Task) -> str:
    return task.tier


class Estimate(NamedTuple):
    """What one attempt of a task may use at most: tokens, and dollars at the dearest target."""

    tokens: int
    cost: Decimal


def completion_estimate(task: Task) -> Estimate:
    """The default per-call estimate: the completion cap, free (prompt size and prices are the caller's to add)."""
    return Estimate(task.max_tokens, ZERO)


def render_inputs(task: Task, results: Mapping[str, TaskResult], max_chars: int = 4000) -> str:
    """The results `task` depends on, as delimited blocks to put after its instruction.

    Each block is `<<<result id="t1" status="ok">>>`, the output cut to `max_chars` with a
    marker saying how much was dropped, then `<<<end t1>>>`. An output the model itself stopped
    at its max_tokens ends with a marker saying so: it may be missing its end. Outputs are appended, never
    substituted into the instruction text; a `<<<` inside an output is broken up so that no
    output can forge a delimiter.
    """
    if max_chars < 0:
        raise ValueError("max_chars must not be negative")
    blocks = []
    for dep in task.deps:
        result = results.get(dep)
        status = "missing" if result is None else result.status
        if result is None:
            body = "(no result)"
        elif result.status == "ok":
            body = result.output
        else:
            body = f"(no output: {result.error or result.status})"
        if len(body) > max_chars:
            body = f"{body[:max_chars]}\n[... truncated: {len(body) - max_chars} of {len(body)} characters omitted]"
        if result is not None and result.status == "ok" and result.finish_reason == "length":
            body += "\n[... cut off: the model stopped at this task's max_tokens; the end may be missing]"
        body = body.replace("<<<", "<< <")
        blocks.append(f'<<<result id="{dep}" status="{status}">>>\n{body}\n<<<end {dep}>>>')
    return "\n\n".join(blocks)


async def run_plan(
    plan: Plan,
    run_task: RunTask,
    *,
    budget: Budget,
    deadline_at: float,
    task_timeout_s: float,
    concurrency: int = 5,
    per_key_limits: Mapping[str, int] | None = None,
    key_of: Callable[[Task], str] = by_tier,
    retries: int = 1,
    backoff_s: float = 0.2,
    estimate: Callable[[Task], Estimate] = completion_estimate,
    prior_results: Mapping[str, TaskResult] | None = None,
    defer: Callable[[Task], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    cancel_grace_s: float = 0.1,
) -> ScheduleResult:
    """Run every task of `plan` as early as its dependencies, limits and budget allow.

    `run_task(task, inputs)` gets the results of the task's dependencies (from this run or
    from `prior_results`, earlier rounds' results), returns a TaskResult with output and
    usage, and raises for a failed attempt. Never raises for a task's failure.
    """
    if concurrency < 1 or retries < 0 or task_timeout_s <= 0:
        raise ValueError("need concurrency >= 1, retries >= 0 and task_timeout_s > 0")
    if any(limit < 1 for limit in (per_key_limits or {}).values()):
        raise ValueError("per-key limits must be at least 1")
    ids = [task.id for task in plan.tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("plan has duplicate task ids")
    if topological_order({task.id: task.deps for task in plan.tasks})[1]:
        raise ValueError("plan has a dependency cycle")
    run = _Run(
        plan, run_task, budget=budget, deadline_at=deadline_at, task_timeout_s=task_timeout_s,
        concurrency=concurrency, per_key_limits=per_key_limits or {}, key_of=key_of, retries=retries,
        backoff_s=backoff_s, estimate=estimate, prior_results=prior_results or {}, clock=clock,
        sleep=sleep, cancel_grace_s=cancel_grace_s, defer=defer or _never,
    )
    return await run.run()


class _Run:
    """The state of one `run_plan` call; lives exactly as long as the call."""

    def __init__(
        self, plan: Plan, run_task: RunTask, *, budget: Budget, deadline_at: float, task_timeout_s: float,
        concurrency: int, per_key_limits: Mapping[str, int], key_of: Callable[[Task], str], retries: int,
        backoff_s: float, estimate: Callable[[Task], Estimate], prior_results: Mapping[str, TaskResult],
        clock: Callable[[], float], sleep: Callable[[float], Awaitable[object]], cancel_grace_s: float,
        defer: Callable[[Task], bool],
    ) -> None:
        self._plan = plan
        self._defer = defer
        # Tasks behind a deferred one: they cannot run in this call and get no result from it.
        self._waiting: set[str] = set()
        self._run_task = run_task
        self._budget = budget
        self._deadline_at = deadline_at
        self._task_timeout_s = task_timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._estimate = estimate
        self._key_of = key_of
        self._clock = clock
        self._sleep = sleep
        self._cancel_grace_s = cancel_grace_s
        self._slots = asyncio.Semaphore(concurrency)
        self._charged = asyncio.Event()
        self._key_slots = {key: asyncio.Semaphore(limit) for key, limit in per_key_limits.items()}

        self._tasks = {task.id: task for task in plan.tasks}
        self._dependents: dict[str, list[str]] = {task.id: [] for task in plan.tasks}
        self._unfinished_deps: dict[str, int] = {}
        self._inputs: dict[str, TaskResult] = {k: r for k, r in prior_results.items() if r.status == "ok"}
        self._unmet: dict[str, str] = {}  # task id -> a dependency that is neither in the plan nor a prior success
        for task in plan.tasks:
            inside = [d for d in dict.fromkeys(task.deps) if d in self._tasks]
            for dep in inside:
                self._dependents[dep].append(task.id)
            self._unfinished_deps[task.id] = len(inside)
            missing = [d for d in task.deps if d not in self._tasks and d not in self._inputs]
            if missing:
                self._unmet[task.id] = missing[0]

        self.results: dict[str, TaskResult] = {}
        self.stop_reason: StopReason | None = None
        self.overhead_s: list[float] = []
        self.queue_wait_s: list[float] = []
        self._ready_at: dict[str, float] = {}
        self._slot_wait: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._started_at: dict[str, float] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._all_done = asyncio.Event()
        # Set when run() returns; a run_task that ignored its cancellation must not start more work.
        self._closed = False

    async def run(self) -> ScheduleResult:
        for task in self._plan.tasks:
            if task.id in self._unmet:
                self._finish(self._skipped(task.id, f"dependency {self._unmet[task.id]!r} has no result"))
            elif self._unfinished_deps[task.id] == 0:
                self._spawn(task)
        try:
            if not self._all_done.is_set():
                async with asyncio.timeout(max(0.0, self._deadline_at - self._clock())):
                    await self._all_done.wait()
        except TimeoutError:
            self._stop(DEADLINE)
            await self._cancel_runners()
        finally:
            # Also when our caller cancels us (client went away): leave nothing running.
            for runner in list(self._runners):
                runner.cancel()
            self._closed = True
        return ScheduleResult(
            results={task.id: self.results.get(task.id) or self._cut_off(task.id) for task in self._plan.tasks
                     if task.id in self.results or task.id not in self._waiting},
            stop_reason=self.stop_reason,
            overhead_s=self.overhead_s,
            queue_wait_s=self.queue_wait_s,
        )

    async def _cancel_runners(self) -> None:
        pending = [runner for runner in self._runners if not runner.done()]
        for runner in pending:
            runner.cancel()
        if pending:
            # Bounded: a run_task that swallows its cancellation must not hold the reply hostage.
            await asyncio.wait(pending, timeout=self._cancel_grace_s)

    def _stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def _spawn(self, task: Task) -> None:
        self._ready_at[task.id] = self._clock()
        if self._defer(task):
            self._deferred(task)
            return
        if self.stop_reason is not None:
            self._finish(self._skipped(task.id, f"not started: {self.stop_reason}"))
            return
        runner = asyncio.get_running_loop().create_task(self._guarded(task), name=f"plan-task-{task.id}")
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _guarded(self, task: Task) -> None:
        try:
            key_slot = self._key_slots.get(self._key_of(task))
            asking = self._clock()
            async with key_slot if key_slot is not None else contextlib.nullcontext(), self._slots:
                self._slot_wait[task.id] = self._clock() - asking
                await self._attempt_all(task)
        except asyncio.CancelledError:
            self._finish(self._cut_off(task.id))
            raise
        except Exception as exc:
            # A broken key_of or estimate must fail its task, not leave the run waiting for the deadline.
            self._finish(self._failed(task.id, f"scheduler error: {type(exc).__name__}: {exc}"))

    def _deferred(self, task: Task) -> None:
        self.results[task.id] = TaskResult(task.id, "deferred")
        stack = list(self._dependents[task.id])
        while stack:
            dependent = stack.pop()
            if dependent not in self._waiting:
                self._waiting.add(dependent)
                stack.extend(self._dependents[dependent])
        self._check_done()

    def _check_done(self) -> None:
        if len(self.results.keys() | self._waiting) == len(self._tasks):
            self._all_done.set()

    async def _call_tool(self, task: Task) -> None:
        budget = self._budget
        admitting = self._clock()
        reason = self.stop_reason or budget.can_start_task() or budget.can_call_tools(1)
        if reason is not None:
            self._stop(reason)
            self._finish(self._skipped(task.id, f"not started: {reason}"))
            return
        budget.note_task_started()
        budget.note_tool_calls(1)
        self._started_at[task.id] = started = self._clock()
        waited = self._slot_wait[task.id] + (started - admitting)
        self.queue_wait_s.append(waited)
        self.overhead_s.append(max(0.0, started - self._ready_at[task.id] - waited))
        self._attempts[task.id] = 1
        try:
            async with asyncio.timeout(self._task_timeout_s):
                result = await self._run_task(task, {dep: self._inputs[dep] for dep in task.deps})
        except TimeoutError:
            self._finish(self._failed(task.id, f"timed out after {self._task_timeout_s:g}s"))
        except Exception as exc:
            self._finish(self._failed(task.id, f"{type(exc).__name__}: {exc}"))
        else:
            self._finish(dataclasses.replace(result, task_id=task.id, status="ok", error=None, started_at=started,
                                             ended_at=self._clock(), attempts=1))

    async def _attempt_all(self, task: Task) -> None:
        if task.tool is not None:
            await self._call_tool(task)
            return
        budget = self._budget
        estimate = self._estimate(task)
        admitting = self._clock()
        reason = await self._admission(estimate, new_task=True)
        if reason is not None:
            self._stop(reason)
            self._finish(self._skipped(task.id, f"not started: {reason}"))
            return
        budget.note_task_started()
        self._started_at[task.id] = started = self._clock()
        waited = self._slot_wait[task.id] + (started - admitting)
        self.queue_wait_s.append(waited)
        self.overhead_s.append(max(0.0, started - self._ready_at[task.id] - waited))
        inputs = {dep: self._inputs[dep] for dep in task.deps}
        error = ""
        for attempt in range(1, self._retries + 2):
            if self._closed:
                return
            if attempt > 1:
                await self._sleep(self._backoff_s * 2 ** (attempt - 2))
                reason = await self._admission(estimate, new_task=False)
                if reason is not None:
                    self._stop(reason)
                    self._finish(self._failed(task.id, f"{error}; not retried: {reason}"))
                    return
            self._attempts[task.id] = attempt
            reservation = budget.reserve(*estimate)
            used: tuple[int, int, Decimal] = (0, 0, ZERO)
            try:
                async with asyncio.timeout(self._task_timeout_s):
                    result = await self._run_task(task, dict(inputs))
                used = (result.prompt_tokens, result.completion_tokens, result.cost)
            except TimeoutError:
                error, retryable = f"timed out after {self._task_timeout_s:g}s", True
            except AttemptFailed as exc:
                used = (exc.prompt_tokens, exc.completion_tokens, exc.cost)
                error, retryable = f"{type(exc).__name__}: {exc}", exc.retryable
            except Exception as exc:
                error, retryable = f"{type(exc).__name__}: {exc}", getattr(exc, "retryable", True) is not False
            else:
                self._charge(used, reservation)
                self._finish(dataclasses.replace(
                    result, task_id=task.id, status="ok", error=None, started_at=started, ended_at=self._clock(),
                    attempts=attempt,
                ))
                return
            finally:
                # Failed, timed out or cancelled: it was still a call, and it releases its reservation.
                if not reservation.settled:
                    self._charge(used, reservation)
            if not retryable:
                break
        self._finish(self._failed(task.id, error))

    async def _admission(self, estimate: Estimate, *, new_task: bool) -> StopReason | None:
        """None once the budget admits the call, or why it never will.

        Worst cases are held for every call in flight; a call that would fit on what has
        really been spent waits for those calls' charges rather than ending the run. A new
        task is also refused once the run has stopped or reached max_tasks, which is checked
        again after every wait: other tasks may have done either meanwhile.
        """
        budget = self._budget
        while True:
            reason = (self.stop_reason or budget.can_start_task()) if new_task else None
            reason = reason or budget.can_call(*estimate)
            if reason is None or self.stop_reason is not None or not budget.held_back_by_calls_in_flight(*estimate):
                return reason
            await self._charged.wait()

    def _charge(self, used: tuple[int, int, Decimal], reservation: Reservation) -> None:
        self._budget.charge(*used, reservation)
        # Wake every call waiting for room; each checks the budget again.
        self._charged.set()
        self._charged = asyncio.Event()

    def _skipped(self, task_id: str, why: str) -> TaskResult:
        return TaskResult(task_id, "skipped", error=why)

    def _failed(self, task_id: str, why: str) -> TaskResult:
        return TaskResult(task_id, "failed", error=why, started_at=self._started_at.get(task_id),
                          ended_at=self._clock(), attempts=self._attempts.get(task_id, 0))

    def _cut_off(self, task_id: str) -> TaskResult:
        """The result of a task the run ended under: cancelled if it had started, else skipped."""
        why = f"cancelled: {self.stop_reason or 'run cancelled'}"
        if task_id not in self._started_at:
            return self._skipped(task_id, f"not started: {self.stop_reason or 'run cancelled'}")
        return TaskResult(task_id, "cancelled", error=why, started_at=self._started_at[task_id],
                          ended_at=self._clock(), attempts=self._attempts.get(task_id, 0))

    def _finish(self, result: TaskResult) -> None:
        """Record a task's final result once, then release or skip what depends on it."""
        if self._closed or result.task_id in self.results:
            return
        self.results[result.task_id] = result
        if result.status == "ok":
            self._inputs[result.task_id] = result
            for dependent in self._dependents[result.task_id]:
                self._unfinished_deps[dependent] -= 1
                if self._unfinished_deps[dependent] == 0 and dependent not in self.results:
                    self._spawn(self._tasks[dependent])
        else:
            why = f"dependency {result.task_id!r} {result.status}"
            stack = list(self._dependents[result.task_id])
            while stack:
                dependent = stack.pop()
                if dependent not in self.results:
                    self.results[dependent] = self._skipped(dependent, why)
                    stack.extend(self._dependents[dependent])
        self._check_done()


def _never(task: Task) -> bool:
    return False
