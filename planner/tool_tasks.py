"""Tool tasks of one run: their arguments (references filled, checked, repaired once) and server calls.

A client tool task is never called here: its checked arguments go back to the client as a tool
call (planner.rounds). A server tool task (an MCP server's tool) is called through `ToolServer`
with an idempotency key made of the run and the task, so a retried or resumed call is the same
call to the server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from planner.budget import MAX_TOOL_CALLS, Budget, StopReason
from planner.extract import extract_json
from planner.plan import Task
from planner.rounds import tool_key
from planner.scheduler import AttemptFailed, TaskResult
from planner.tools import ToolSpec, fill_references

# (task, spec, arguments, errors) -> the repaired arguments' JSON text, or None when no call could be made.
Repair = Callable[[Task, ToolSpec, Any, list[str]], Awaitable[str | None]]


class ToolServer(Protocol):
    async def call(self, spec: ToolSpec, arguments: dict[str, Any], idempotency_key: str) -> str: ...


class BadArguments(Exception):
    """A tool task's arguments still do not fit the tool's schema after one repair."""


class ToolTasks:
    def __init__(self, specs: Mapping[str, ToolSpec], server: ToolServer | None, run_id: str, repair: Repair) -> None:
        self.specs = specs
        self._server = server
        self._run_id = run_id
        self._repair = repair
        # Task id -> the arguments it was called with (after filling and repair), for the trace.
        self.called_with: dict[str, dict[str, Any]] = {}
        self.repairs: dict[str, str] = {}
        # Server tool calls of this round by outcome (ok, failed), for the metrics.
        self.outcomes: Counter[str] = Counter()

    def is_client(self, task: Task) -> bool:
        spec = self.specs.get(task.tool) if task.tool is not None else None
        return spec is not None and spec.is_client

    async def arguments(self, task: Task, inputs: Mapping[str, TaskResult]) -> dict[str, Any]:
        """The task's arguments, references filled and checked against the schema; one repair by a
        cheap executor when they do not fit. `BadArguments` when they still do not."""
        assert task.tool is not None
        spec = self.specs[task.tool]
        arguments: Any = fill_references(task.arguments or {}, {k: r.output for k, r in inputs.items()})
        errors = spec.argument_errors(arguments)
        if errors:
            repaired = await self._repair(task, spec, arguments, errors)
            self.repairs[task.id] = "; ".join(errors[:3])
            fixed = extract_json(repaired)[0] if repaired else None
            after = spec.argument_errors(fixed) if fixed is not None else ["the repair gave no JSON object"]
            if after:
                raise BadArguments(f"arguments for '{spec.name}' do not fit its schema after one repair: "
                                   + "; ".join(after[:3]))
            arguments = fixed
        self.called_with[task.id] = arguments
        return dict(arguments)

    async def run(self, task: Task, inputs: dict[str, TaskResult]) -> TaskResult:
        """Call a server tool task; a failure is final (the server module already retried what it may)."""
        assert task.tool is not None
        spec = self.specs[task.tool]
        if self._server is None or spec.is_client:
            raise AttemptFailed(f"tool '{spec.name}' cannot be called inside the gateway", retryable=False)
        try:
            arguments = await self.arguments(task, inputs)
        except BadArguments as exc:
            raise AttemptFailed(str(exc), retryable=False) from None
        started = time.time()
        try:
            output = await self._server.call(spec, arguments, tool_key(self._run_id, task.id))
        except Exception as exc:
            self.outcomes["failed"] += 1
            raise AttemptFailed(str(exc)[:500], retryable=False) from None
        self.outcomes["ok"] += 1
        return TaskResult(task.id, output=output, started_at=started, ended_at=time.time(), attempts=1,
                          model=spec.source)

    async def client_batch(self, tasks: list[Task], results: dict[str, TaskResult], budget: Budget,
                           parallel: bool) -> tuple[list[tuple[Task, dict[str, Any]]], StopReason | None]:
        """The ready client tool calls to hand back now, with checked arguments, or why none may be made.

        Every ready call goes in one batch, or only the first when the client asked for no parallel
        calls; never more than the tool calls and tasks left. A call whose arguments cannot be
        repaired fails its task here (its dependents are skipped when the scheduler next runs).
        """
        tasks = tasks if parallel else tasks[:1]
        left = min(budget.tool_calls_left(), budget.caps.max_tasks - budget.tasks_started)
        if left <= 0:
            return [], budget.can_call_tools(1) or budget.can_start_task() or MAX_TOOL_CALLS
        tasks = tasks[:left]
        checked = await asyncio.gather(*(self.arguments(t, {d: results[d] for d in t.deps}) for t in tasks),
                                       return_exceptions=True)
        batch = []
        for task, arguments in zip(tasks, checked, strict=True):
            if isinstance(arguments, BadArguments):
                results[task.id] = TaskResult(task.id, "failed", error=str(arguments))
            elif isinstance(arguments, BaseException):
                raise arguments
            else:
                batch.append((task, arguments))
                budget.note_task_started()
        budget.note_tool_calls(len(batch))
        return batch, None
