"""The messages the meta-model sends: planner, repair, task, joiner. Pure string building.

Task inputs reach a task as delimited blocks (planner.scheduler.render_inputs),
never spliced into free text, so a result cannot rewrite another task's instruction.
"""

from __future__ import annotations

from typing import Any

import orjson

PLANNER_SYSTEM = """You are the planner of a plan-and-execute system. Break the user's request into a small \
graph of tasks that cheaper models will execute, then say how to write the final answer.

Answer with ONE JSON object and nothing else:
{"tasks": [{"id": "t1", "instruction": "...", "deps": [], "tier": "cheap", "max_tokens": 400}, ...],
 "final_instruction": "how to combine the task results into the answer", "answer_from": null}

Rules:
- ids are short and unique; "deps" lists ids of EARLIER tasks whose results this task needs.
- Tasks without dependencies between them run in parallel; prefer wide graphs over long chains.
- tier is "cheap" for routine work, "strong" only when a task truly needs a stronger model.
- Each instruction must be self-contained: the executor sees only it, the user's request and its inputs.
- Use as few tasks as the request needs; never more than {max_tasks}.
- "answer_from": the id of a last task whose output is the whole answer (no combining step), else null.
Budget left for the whole run: {budget}."""

REPAIR = """Your plan could not be used:
{errors}
Answer again with ONE corrected JSON object that follows the rules, and nothing else."""

TASK_SYSTEM = """You execute one step of a larger plan. Do exactly the step's instruction, using the inputs \
given between <<<result ...>>> markers if any. Answer with the step's result only."""

JOINER_SYSTEM = """You are the joiner of a plan-and-execute system. You get the user's request, the plan's \
final instruction and the results of its tasks (some may have failed or been skipped).
Answer with ONE JSON object and nothing else, either
{"action": "finish", "answer": "the complete answer for the user"}
or, only if the results are clearly insufficient and another round of tasks would fix it,
{"action": "replan", "feedback": "what is missing and why"}."""

FINAL_FROM_PARTIAL = """A hard limit stopped the run early ({reason}). Write the best answer you can for the \
user from the results below, and say briefly what could not be completed."""


def conversation_text(messages: list[dict[str, Any]]) -> str:
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{message.get('role', 'user')}: {content if isinstance(content, str) else ''}")
    return "\n".join(lines)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A prompt's size for budget estimates: about four characters a token, plus a few per message."""
    return sum(4 + (len(conversation_text([m])) + 3) // 4 for m in messages)


# Prompt tokens held for a content part that is not text (an image...): more than an image costs
# at OpenAI's high detail for a 2048 x 2048 picture (~1,100); bytes bound text, not pictures.
NON_TEXT_PART_TOKENS = 2_000


def prompt_token_bound(messages: list[dict[str, Any]]) -> int:
    """More prompt tokens than any tokenizer makes of these messages: a token is at least one byte
    of the message's JSON (content, tool calls, names), plus a few per message for the chat format,
    plus `NON_TEXT_PART_TOKENS` per image or other non-text part. Dollars are held at this."""
    total = 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else ()
        pictures = sum(1 for p in parts if not (isinstance(p, dict) and p.get("type") == "text"))
        total += 8 + len(orjson.dumps(message)) + pictures * NON_TEXT_PART_TOKENS
    return total


def planner_messages(
    messages: list[dict[str, Any]], budget: dict[str, Any], max_tasks: int, feedback: str | None = None,
    done: str | None = None, tools: str | None = None,
) -> list[dict[str, Any]]:
    system = PLANNER_SYSTEM.replace("{max_tasks}", str(max_tasks)).replace(
        "{budget}", orjson.dumps(budget, default=str).decode()
    )
    if tools:
        system += TOOLS.replace("{tools}", tools).replace("{left}", str(budget.get("tool_calls", "")))
    out = [{"role": "system", "content": system}, *messages]
    if feedback is not None:
        out.append({
            "role": "user",
            "content": "The previous round did not finish the job. Feedback: " + feedback
            + "\nResults already available (do NOT plan these again; refer to them by id in deps):\n" + (done or ""),
        })
    return out


def repair_messages(previous: list[dict[str, Any]], answer: str, errors: list[str]) -> list[dict[str, Any]]:
    return [
        *previous,
        {"role": "assistant", "content": answer[:8000]},
        {"role": "user", "content": REPAIR.replace("{errors}", "\n".join(f"- {e}" for e in errors[:20]))},
    ]


def task_messages(goal: str, instruction: str, inputs: str) -> list[dict[str, Any]]:
    user = f"The user's request:\n{goal}\n\nYour step: {instruction}"
    if inputs:
        user += f"\n\nInputs:\n{inputs}"
    return [{"role": "system", "content": TASK_SYSTEM}, {"role": "user", "content": user}]


def joiner_messages(goal: str, final_instruction: str, results: str, stopped: str | None) -> list[dict[str, Any]]:
    system = JOINER_SYSTEM if stopped is None else FINAL_FROM_PARTIAL.replace("{reason}", stopped)
    user = f"The user's request:\n{goal}\n\nFinal instruction: {final_instruction}\n\nResults:\n{results}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


TOOLS = """

Tools you may call (a task calls one instead of a model):
{tools}
A tool task: {"id": "w1", "tool": "<name>", "arguments": {...}, "deps": [...]} (with strict JSON output, give the
arguments as the JSON text of the object and set tool and arguments to null on model tasks). An argument may
use "${t1}" for the result of task t1, which must be in deps. Independent tool calls run in parallel: call
every tool the request needs up front rather than one at a time. Tool calls left for the whole run: {left}."""

TOOL_REPAIR = """A tool call's arguments do not fit the tool's parameter schema. Rewrite them so they do, keeping \
their meaning. Answer with ONE JSON object: the corrected arguments, and nothing else."""


def tool_repair_messages(goal: str, tool: str, schema: dict[str, Any], arguments: Any, errors: list[str]) -> (
    list[dict[str, Any]]
):
    user = (f"The user's request:\n{goal}\n\nTool: {tool}\nParameter schema: {orjson.dumps(schema).decode()}\n"
            f"Arguments: {orjson.dumps(arguments).decode()}\nWhat is wrong:\n" + "\n".join(f"- {e}" for e in errors))
    return [{"role": "system", "content": TOOL_REPAIR}, {"role": "user", "content": user}]
