"""A run that calls the client's tools spans several requests: its state between them, and how a
request that answers its tool calls is recognised. Pure data and parsing; the store is the caller's.

    round 0   the client's request  -> plan, run what needs no client tool, hand back the ready
                                       client tool calls (finish_reason "tool_calls"), save the state
    round k   the client sends the tool results (role "tool", tool_call_id = our ids)
                                    -> load the state, add the results, run what they unblock, then
                                       hand back the next calls or the final answer

A tool call id names its run, its round and its task: `call_<run id>_<round>_<task index>`. So any
replica recognises a resuming request from the messages alone, and the same call always gets
the same id, which is the idempotency key the client's tool loop sees.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from planner.scheduler import TaskResult

_CALL_ID = re.compile(r"call_([0-9a-f]{24})_(\d{1,4})_(\d{1,4})")


def new_run_id(meta: str, client: str | None, idempotency_key: str | None) -> str:
    """A retried request with the same Idempotency-Key names the same run, so its calls keep their ids."""
    if idempotency_key:
        seed = f"{meta}\0{client or ''}\0{idempotency_key}".encode()
        return hashlib.sha256(seed).hexdigest()[:24]
    return os.urandom(12).hex()


def call_id(run_id: str, round_: int, index: int) -> str:
    return f"call_{run_id}_{round_}_{index}"


def tool_key(run_id: str, task_id: str) -> str:
    """The idempotency key of a server-side tool call: the same across retries, resumes and replicas."""
    return f"{run_id}.{task_id}"


@dataclass
class RunState:
    """What a run keeps between its round trips (the store's "run" record, JSON)."""

    run_id: str
    meta: str
    client: str | None
    plan: dict[str, Any]
    results: dict[str, TaskResult] = field(default_factory=dict)
    spent: dict[str, int | str] = field(default_factory=dict)
    round: int = 0
    # The calls handed to the client in the latest round: call id -> task id.
    issued: dict[str, str] = field(default_factory=dict)
    # What each round answered, by the round whose tool results it took ("0" for the first
    # request): a retried request gets the same answer instead of running the round again.
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    trace: dict[str, Any] = field(default_factory=dict)
    # The client's tools as it offered them at the start: name, description, parameters.
    tools: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> bytes:
        # orjson writes dataclasses itself, without asdict's deep copy (Decimal as a string).
        return orjson.dumps(self, default=str)

    @classmethod
    def from_json(cls, raw: bytes) -> RunState:
        data = orjson.loads(raw)
        data["results"] = {k: task_result_from(v) for k, v in data["results"].items()}
        return cls(**data)


def task_result_from(data: dict[str, Any]) -> TaskResult:
    """A TaskResult from its JSON form (money as a decimal string)."""
    return TaskResult(**{**data, "cost": Decimal(str(data.get("cost", "0")))})


@dataclass(frozen=True, slots=True)
class Resume:
    """A request that answers a run's tool calls."""

    run_id: str
    round: int  # the round whose calls it answers
    results: dict[str, str]  # call id -> the tool's output as text
    # The conversation before the run's first tool call: the user's request the run serves.
    goal_messages: list[dict[str, Any]]


def find_resume(messages: Sequence[Any]) -> Resume | None:
    """The run a request resumes: its messages end with tool results for our calls, after the
    assistant message that made them. Anything else (a new user turn, another model's calls) is
    a new request."""
    last_assistant = None
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if not isinstance(message, dict):
            return None
        if message.get("role") == "assistant":
            last_assistant = index
            break
        if message.get("role") != "tool":
            return None
    if last_assistant is None or last_assistant == len(messages) - 1:
        return None
    ours = _our_calls(messages[last_assistant])
    if not ours:
        return None
    run_id, round_ = ours[0][1], ours[0][2]
    results = {}
    for message in messages[last_assistant + 1:]:
        call = message.get("tool_call_id")
        if isinstance(call, str) and any(call == c for c, *_ in ours):
            results[call] = _text(message.get("content"))
    first = next(i for i, m in enumerate(messages) if isinstance(m, dict) and any(
        r == run_id for _, r, _ in _our_calls(m)))
    return Resume(run_id, round_, results, [m for m in messages[:first] if isinstance(m, dict)])


def _our_calls(message: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    found = []
    for call in calls if isinstance(calls, list) else ():
        cid = call.get("id") if isinstance(call, dict) else None
        match = _CALL_ID.fullmatch(cid) if isinstance(cid, str) else None
        if match is not None:
            found.append((match.group(0), match.group(1), int(match.group(2))))
    # One assistant message holds one round's calls of one run.
    return [c for c in found if c[1:] == found[0][1:]] if found else []


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "" if content is None else orjson.dumps(content).decode()


def tool_call(call: str, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": call, "type": "function", "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}
