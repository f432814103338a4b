"""Plans: the task graph a planner model writes, and the checks that decide whether to trust it.

A planner answers once with JSON following `plan_json_schema()`:

    {"tasks": [{"id": "t1", "instruction": "...", "deps": [], "tier": "cheap", "max_tokens": 512},
               {"id": "t2", "instruction": "...", "deps": ["t1"], "tier": "cheap", "max_tokens": 256}],
     "final_instruction": "how to combine the task results into the answer"}

A reply goes through, with no I/O anywhere (re-plan and cache comparisons live in planner.reuse):

    extract_json(text)        the first JSON object in the reply (planner.extract)
    validate_plan(obj, ...)   shape and types, unique ids, dependency order, acyclicity, size, depth,
                              fan-in and tier limits -> a frozen `Plan`, or a list of errors that
                              name the offending task and are fit to send back for one repair

When tools are on offer (`tool_names`), a task may call one instead of a model:

    {"id": "w1", "tool": "get_weather", "arguments": {"city": "${t1}"}, "deps": ["t1"]}

Its arguments are an object (or, from strict structured output, the JSON text of one) and may
reference the results of the tasks in its `deps` as "${id}" (planner.tools). The validator checks
that the tool exists and that every reference is a dependency; the arguments are checked against
the tool's schema when the task runs, once the references are filled in.

A dependency must name a task listed *earlier* in the same plan, or a result of an earlier
round (`known_result_ids`), so the list order is itself a topological order. A Kahn pass
still checks acyclicity, so the guarantee does not rest on that one rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeGuard

Tier = Literal["cheap", "strong"]

# Ids end up inside the delimiters of rendered inputs (`<<<result id="t1">>>`), so they are
# restricted to characters that cannot forge or break a delimiter.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PLAN_KEYS = ("tasks", "final_instruction", "answer_from")
_TASK_KEYS = ("id", "instruction", "deps", "tier", "max_tokens")
_TOOL_KEYS = ("tool", "arguments")
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
# A repair prompt with a hundred errors helps nobody; the first few say what is wrong.
_MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    instruction: str
    deps: tuple[str, ...] = ()
    tier: Tier = "cheap"
    max_tokens: int = 1024
    # A tool task calls `tool` with `arguments` (a JSON object, references unfilled) instead of a model.
    tool: str | None = None
    arguments: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Callers may pass the list JSON gives them; the task itself stays immutable.
        if not isinstance(self.deps, tuple):
            object.__setattr__(self, "deps", tuple(self.deps))

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "deps": list(self.deps)}
        if self.tool is None:
            del data["tool"], data["arguments"]
        return data


@dataclass(frozen=True, slots=True)
class Plan:
    tasks: tuple[Task, ...]
    final_instruction: str
    # A model task whose output is the complete answer: when it and every other task succeed, the joiner
    # (a strong model's call) is skipped.
    answer_from: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, tuple):
            object.__setattr__(self, "tasks", tuple(self.tasks))

    def to_dict(self) -> dict[str, Any]:
        """The plan as the planner would write it (for logs and re-plan prompts)."""
        data: dict[str, Any] = {"tasks": [t.to_dict() for t in self.tasks], "final_instruction": self.final_instruction}
        if self.answer_from is not None:
            data["answer_from"] = self.answer_from
        return data


@dataclass(frozen=True, slots=True)
class PlanLimits:
    max_tasks_per_round: int = 16
    max_tasks_total: int = 32
    max_depth: int = 8
    max_fan_in: int = 8
    max_task_tokens: int = 4096
    tiers: tuple[Tier, ...] = ("cheap", "strong")


def _object(properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # Strict mode: every property required, nothing else allowed.
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def plan_json_schema(limits: PlanLimits | None = None, tools: bool = False) -> dict[str, Any]:
    """The JSON schema for a plan, usable with OpenAI strict structured outputs.

    Older strict-mode deployments reject numeric and length keywords, so the limits are
    stated in descriptions; `validate_plan` enforces them either way. With `tools`, every task
    also has `tool` and `arguments` (null for a model task): strict mode requires every key and
    allows no open objects, so the arguments are the JSON text of an object.
    """
    lim = limits or PlanLimits()
    tool_fields = {
        "tool": {"type": ["string", "null"], "description": "A tool's name to call it instead of a model; else null."},
        "arguments": {"type": ["string", "null"],
                      "description": "For a tool task: its arguments as the JSON text of an object, where \"${id}\" "
                      "stands for the result of a task in deps; else null."},
    } if tools else {}
    task = _object({
        "id": {"type": "string", "description": "Unique short id: letters, digits, '_', '-', '.'."},
        "instruction": {"type": "string", "description": "A self-contained instruction for one model call."},
        "deps": {"type": "array", "items": {"type": "string"},
                 "description": f"Ids of earlier tasks whose results this task needs (at most {lim.max_fan_in})."},
        "tier": {"type": "string", "enum": list(lim.tiers), "description": "Which executor model runs the task."},
        "max_tokens": {"type": "integer", "description": f"Completion token cap, 1 to {lim.max_task_tokens}."},
        **tool_fields,
    })
    return _object({
        "tasks": {"type": "array", "items": task,
                  "description": f"1 to {lim.max_tasks_per_round} tasks, each listed after the tasks it depends on; "
                  f"dependency chains at most {lim.max_depth} long."},
        "final_instruction": {"type": "string", "description": "How to combine the task results into the answer."},
        "answer_from": {"type": ["string", "null"],
                        "description": "The id of a model task whose output is the complete answer for the user, "
                        "or null to have the results combined by final_instruction."},
    })


def response_format(limits: PlanLimits | None = None, tools: bool = False) -> dict[str, Any]:
    """The `response_format` body field asking for a plan in strict JSON-schema mode."""
    schema = plan_json_schema(limits, tools)
    return {"type": "json_schema", "json_schema": {"name": "plan", "strict": True, "schema": schema}}


# Validation ----------------------------------------------------------------------------------


def _where(index: int, raw: Any) -> str:
    task_id = raw.get("id") if isinstance(raw, dict) else None
    return f"tasks[{index}] (id {task_id!r})" if isinstance(task_id, str) else f"tasks[{index}]"


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _tool_arguments(where: str, raw: dict[str, Any], tools: Collection[str], errors: list[str]) -> (
    dict[str, Any] | None
):
    """The tool task's arguments as an object, after checking its tool and references; None if wrong."""
    tool, arguments = raw.get("tool"), raw.get("arguments", {})
    if tool not in tools:
        errors.append(f"{where}: unknown tool {tool!r} (available: {', '.join(sorted(tools))})")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            errors.append(f"{where}: arguments are not valid JSON: {exc}")
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        errors.append(f"{where}: arguments must be a JSON object")
        return None
    deps: list[Any] = raw["deps"] if isinstance(raw.get("deps"), list) else []
    for name in sorted(set(_REFERENCE.findall(json.dumps(arguments)))):
        if name not in deps:
            errors.append(f"{where}: arguments reference ${{{name}}}, which is not one of this task's deps")
    return arguments if tool in tools else None


def _parse_task(index: int, raw: Any, limits: PlanLimits, errors: list[str], tools: Collection[str] = ()) -> (
    Task | None
):
    where = _where(index, raw)
    keys = (*_TASK_KEYS, *_TOOL_KEYS) if tools else _TASK_KEYS
    if not isinstance(raw, dict):
        errors.append(f"{where}: must be an object with keys {', '.join(keys)}")
        return None
    before = len(errors)
    errors.extend(f"{where}: unexpected key {key!r} (allowed: {', '.join(keys)})" for key in raw if key not in keys)
    if tools and raw.get("tool") is not None:
        return _parse_tool_task(where, raw, errors, before, tools)
    errors.extend(f"{where}: missing required key {key!r}" for key in _TASK_KEYS if key not in raw)
    # Any: planner output, checked field by field below before it becomes a Task.
    task_id: Any = raw.get("id")
    instruction: Any = raw.get("instruction")
    deps: Any = raw.get("deps")
    tier: Any = raw.get("tier")
    max_tokens: Any = raw.get("max_tokens")
    if "id" in raw and not (isinstance(task_id, str) and _ID_PATTERN.fullmatch(task_id)):
        errors.append(f"{where}: id must be 1-64 characters of letters, digits, '_', '-' or '.'")
    if "instruction" in raw and not (isinstance(instruction, str) and instruction.strip()):
        errors.append(f"{where}: instruction must be a non-empty string")
    if "deps" in raw and not (isinstance(deps, list) and all(isinstance(d, str) for d in deps)):
        errors.append(f"{where}: deps must be a list of task ids (strings); use [] for none")
    if "tier" in raw and tier not in limits.tiers:
        errors.append(f"{where}: tier {tier!r} is not one of {', '.join(map(repr, limits.tiers))}")
    if "max_tokens" in raw and not (_is_int(max_tokens) and 1 <= max_tokens <= limits.max_task_tokens):
        errors.append(f"{where}: max_tokens must be an integer from 1 to {limits.max_task_tokens}, got {max_tokens!r}")
    if len(errors) > before:
        return None
    if raw.get("arguments") is not None:
        errors.append(f"{where}: arguments belong to a tool task; give 'tool' or set arguments to null")
        return None
    return Task(id=task_id, instruction=instruction, deps=tuple(deps), tier=tier, max_tokens=max_tokens)


def _parse_tool_task(where: str, raw: dict[str, Any], errors: list[str], before: int, tools: Collection[str]) -> (
    Task | None
):
    """A task calling a tool: id, tool, arguments and deps count; instruction, tier and max_tokens are ignored."""
    errors.extend(f"{where}: missing required key {key!r}" for key in ("id", "deps") if key not in raw)
    task_id: Any = raw.get("id")
    deps: Any = raw.get("deps", [])
    if "id" in raw and not (isinstance(task_id, str) and _ID_PATTERN.fullmatch(task_id)):
        errors.append(f"{where}: id must be 1-64 characters of letters, digits, '_', '-' or '.'")
    if not (isinstance(deps, list) and all(isinstance(d, str) for d in deps)):
        errors.append(f"{where}: deps must be a list of task ids (strings); use [] for none")
    arguments = _tool_arguments(where, raw, tools, errors)
    if len(errors) > before or arguments is None:
        return None
    instruction = raw.get("instruction")
    shown = instruction if isinstance(instruction, str) and instruction.strip() else f"call {raw['tool']}"
    return Task(id=task_id, instruction=shown, deps=tuple(deps), tool=raw["tool"], arguments=arguments)


def topological_order(graph: Mapping[str, Collection[str]]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm over `node -> its dependencies` (edges to unknown nodes are ignored).

    Returns (order, stuck): `order` lists nodes after their dependencies; `stuck` holds the
    nodes on a cycle or downstream of one, empty for a DAG.
    """
    dependents: dict[str, list[str]] = {node: [] for node in graph}
    waiting: dict[str, int] = {}
    for node, deps in graph.items():
        inside = {d for d in deps if d in graph}
        waiting[node] = len(inside)
        for dep in inside:
            dependents[dep].append(node)
    ready = [node for node, count in waiting.items() if count == 0]
    order: list[str] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    done = set(order)
    return order, [node for node in graph if node not in done]


def _check_graph(raw_tasks: Sequence[Any], limits: PlanLimits, known: Collection[str], errors: list[str]) -> None:
    """Ids, dependency order, cycles, fan-in and depth, for every task whose id and deps are well-formed
    (even if other fields are not, so one repair round can fix everything)."""
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_tasks):
        task_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(task_id, str):
            continue
        if task_id in known:
            errors.append(f"{_where(index, raw)}: id {task_id!r} is already taken by a result of an earlier "
                          "round; choose a new id")
        elif task_id in first_index:
            errors.append(f"{_where(index, raw)}: duplicate id {task_id!r} "
                          f"(already used by tasks[{first_index[task_id]}])")
        else:
            first_index[task_id] = index

    graph: dict[str, list[str]] = {}
    for index, raw in enumerate(raw_tasks):
        task_id, deps = (raw.get("id"), raw.get("deps")) if isinstance(raw, dict) else (None, None)
        if not (isinstance(task_id, str) and isinstance(deps, list) and all(isinstance(d, str) for d in deps)):
            continue
        where = _where(index, raw)
        if len(deps) > limits.max_fan_in:
            errors.append(f"{where}: depends on {len(deps)} tasks, more than the limit of {limits.max_fan_in}; "
                          "merge some inputs in an intermediate task")
        if len(set(deps)) < len(deps):
            errors.append(f"{where}: deps lists the same id more than once")
        for dep in dict.fromkeys(deps):
            if dep == task_id:
                errors.append(f"{where}: depends on itself")
            elif dep in known or first_index.get(dep, index) < index:
                continue
            elif dep in first_index:
                errors.append(f"{where}: depends on {dep!r}, which is listed later (tasks[{first_index[dep]}]); "
                              "list every task after the tasks it depends on")
            else:
                errors.append(f"{where}: depends on unknown id {dep!r}")
        if first_index.get(task_id) == index:
            # Self-loops are reported above; the cycle check covers everything else.
            graph[task_id] = [d for d in deps if d != task_id]

    order, stuck = topological_order(graph)
    if stuck:
        errors.append(f"the dependencies form a cycle; tasks on or behind it: {', '.join(stuck)}")
        return
    depth: dict[str, int] = {}
    parent: dict[str, str] = {}  # node -> its deepest dependency, to print the offending chain
    for node in order:
        deepest = max((d for d in graph[node] if d in graph), key=depth.__getitem__, default=None)
        depth[node] = 1 if deepest is None else 1 + depth[deepest]
        if deepest is not None:
            parent[node] = deepest
    too_deep = [(first_index[n], n) for n in graph if depth[n] > limits.max_depth]
    if too_deep:
        index, node = min(too_deep)
        chain = [node]
        while chain[-1] in parent:
            chain.append(parent[chain[-1]])
        errors.append(
            f"tasks[{index}] (id {node!r}): dependency chain {' -> '.join(reversed(chain))} is {depth[node]} "
            f"tasks long, more than the limit of {limits.max_depth}; run steps in parallel or merge them"
        )


def validate_plan(
    obj: Any,
    limits: PlanLimits | None = None,
    tasks_done_before: int = 0,
    known_result_ids: Collection[str] = frozenset(),
    tool_names: Collection[str] = frozenset(),
) -> tuple[Plan | None, list[str]]:
    """A parsed planner reply -> (Plan, []) if every rule holds, else (None, errors).

    `tasks_done_before` counts tasks of earlier rounds against `max_tasks_total`;
    `known_result_ids` are earlier rounds' task ids, which new tasks may depend on but not reuse;
    `tool_names` are the tools a task may call (none: tool tasks are not allowed).
    """
    limits = limits or PlanLimits()
    if not isinstance(obj, dict):
        return None, [f"the plan must be a JSON object with keys {', '.join(map(repr, _PLAN_KEYS))}"]
    errors = [f"unexpected top-level key {key!r} (allowed: {', '.join(_PLAN_KEYS)})" for key in obj
              if key not in _PLAN_KEYS]
    final: Any = obj.get("final_instruction")
    if not (isinstance(final, str) and final.strip()):
        errors.append("'final_instruction' must be a non-empty string")
    raw_tasks = obj.get("tasks")
    if not isinstance(raw_tasks, list):
        errors.append("'tasks' must be a list of task objects")
        return None, errors
    if not raw_tasks:
        errors.append("'tasks' is empty; a plan needs at least one task")
    if len(raw_tasks) > limits.max_tasks_per_round:
        errors.append(f"the plan has {len(raw_tasks)} tasks, more than the limit of "
                      f"{limits.max_tasks_per_round} per round")
    if tasks_done_before + len(raw_tasks) > limits.max_tasks_total:
        allowed = max(0, limits.max_tasks_total - tasks_done_before)
        errors.append(f"{tasks_done_before} tasks already ran; {len(raw_tasks)} more would exceed the limit of "
                      f"{limits.max_tasks_total} in total (at most {allowed} more allowed)")
    parsed = [t for i, raw in enumerate(raw_tasks)
              if (t := _parse_task(i, raw, limits, errors, tool_names)) is not None]
    _check_graph(raw_tasks, limits, known_result_ids, errors)
    answer_from: Any = obj.get("answer_from")
    if answer_from is not None and answer_from not in {t.id for t in parsed if t.tool is None}:
        errors.append(f"'answer_from' must be null or the id of a model task of this plan, got {answer_from!r}")
    if errors:
        if len(errors) > _MAX_ERRORS:
            errors = [*errors[:_MAX_ERRORS], f"... and {len(errors) - _MAX_ERRORS} more errors"]
        return None, errors
    return Plan(tasks=tuple(parsed), final_instruction=final, answer_from=answer_from), []


# Re-plan guard --------------------------------------------------------------------------------
