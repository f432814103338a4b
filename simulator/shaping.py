"""Applies the quality knob (simulator.quality) and the scripted judge (simulator.judge) to one request, for
every dialect the simulator serves (Chat Completions, legacy completions, the Responses API), streamed or not.

`shape` runs in simulator.handlers.serve, once the outcome is drawn, and decides how the answer differs
from a healthy one:

- a degraded text answer, or the judge's verdict, becomes the model's fixed reply in the settings the
  answer is built from (``replies[model]``), so every dialect sends, streams, truncates and counts it
  like any reply. A request the model would answer with a tool call keeps its call (a fixed reply would
  suppress it);
- a malformed tool call: Chat Completions answers with it in place of the healthy one; the Responses
  API's answer (built in simulator.responses, which this package's layering keeps out of reach here) has
  its call's arguments rewritten (`finish`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from simulator import faults
from simulator.behaviour import OK, SimulationSettings
from simulator.judge import judge_prompt, verdict
from simulator.quality import (
    OFF_TOPIC_REPLY,
    broken_json,
    draw,
    malformed_arguments,
    request_key,
    shortened,
)
from simulator.schema import structured_reply
from simulator.state import SimulatorState
from simulator.tools import requested_call, responses_call

CHAT_PATH: Final = "/v1/chat/completions"
COMPLETIONS_PATH: Final = "/v1/completions"
RESPONSES_PATH: Final = "/v1/responses"

@dataclass(frozen=True, slots=True)
class Shaped:
    """How one request is answered: from `settings`, or, when `call` is set, with that (malformed) call."""

    settings: SimulationSettings
    call: tuple[str, str] | None = None


def _occurrence(state: SimulatorState, key: str) -> int:
    return state.occurrences.next(state.settings, key)


def _with_reply(settings: SimulationSettings, model: str, text: str) -> SimulationSettings:
    return settings.model_copy(update={"replies": {**settings.replies, model: text}})


def _parameters(body: Mapping[str, Any], name: str) -> Any:
    """The parameter schema of the offered function tool `name` (Chat Completions' or the Responses API's shape)."""
    for tool in body.get("tools") or ():
        if not isinstance(tool, Mapping):
            continue
        nested = tool.get("function")
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else tool
        if function.get("name") == name:
            return function.get("parameters")
    return None


def shape(state: SimulatorState, settings: SimulationSettings, path: str, body: Any, outcome: str) -> Shaped:
    """How the request is answered (see the module docstring); `settings` itself for a healthy model."""
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str):
        return Shaped(settings)
    if settings.judge is not None and path == CHAT_PATH:
        prompt = judge_prompt(body.get("messages"))
        if prompt is not None:
            reply = verdict(settings.judge, *prompt, occurrence=lambda key: _occurrence(state, "judge:" + key))
            return Shaped(_with_reply(settings, model, reply))
    quality = settings.qualities.get(model, settings.quality)
    if quality.healthy or path not in (CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH):
        return Shaped(settings)
    key = request_key(body)
    seen = _occurrence(state, f"quality:{model}:{key}")

    def hit(knob: str) -> bool:
        rate: float = getattr(quality, knob)
        return rate > 0 and draw(quality.seed, knob, model, key, seen) < rate

    fixed = model in settings.replies or settings.reply is not None
    call = None
    if outcome == OK and not fixed and path != COMPLETIONS_PATH:
        call = requested_call(body, settings.tool_rounds) if path == CHAT_PATH else responses_call(body)
    if call is not None:
        if not hit("bad_tool_arguments"):
            return Shaped(settings)
        name, arguments = call
        roll = draw(quality.seed, "bad_tool_arguments:form", model, key, seen)
        return Shaped(settings, (name, malformed_arguments(arguments, _parameters(body, name), roll)))
    structured = structured_reply(body) if path != COMPLETIONS_PATH else None
    text = state.plan_for(settings, model, structured).content
    if hit("off_topic"):
        text = OFF_TOPIC_REPLY
    elif hit("short"):
        text = shortened(text)
    elif structured is not None and hit("invalid_json"):
        text = broken_json(text)
    else:
        return Shaped(settings)
    return Shaped(_with_reply(settings, model, text))


def finish(shaped: Shaped, response: web.StreamResponse) -> web.StreamResponse:
    """The Responses API's answer with its function call's arguments replaced by the malformed ones."""
    body = response.body if isinstance(response, web.Response) else None
    if shaped.call is None or not isinstance(body, bytes):
        return response
    arguments = shaped.call[1]
    if response.content_type == "application/json":
        data = orjson.loads(body)
        _set_arguments(data, arguments)
        return faults.json_response(orjson.dumps(data))
    frames: list[bytes] = []
    deltas = 0
    for frame in body.split(b"\n\n"):
        head, _, data_line = frame.partition(b"\ndata: ")
        if not data_line:
            continue
        event = orjson.loads(data_line)
        kind = event.get("type")
        if kind == "response.function_call_arguments.delta":
            deltas += 1
            if deltas > 1:
                continue  # the whole of the malformed arguments goes in the first delta
            event["delta"] = arguments
        elif kind == "response.function_call_arguments.done":
            event["arguments"] = arguments
        _set_arguments(event, arguments)
        event["sequence_number"] = len(frames)
        frames.append(head + b"\ndata: " + orjson.dumps(event) + b"\n\n")
    return faults.sse_whole(b"".join(frames))


def _set_arguments(node: Any, arguments: str) -> None:
    """Replaces the arguments of every finished function call item in `node`."""
    if isinstance(node, dict):
        if node.get("type") == "function_call" and node.get("arguments"):
            node["arguments"] = arguments
        for value in node.values():
            _set_arguments(value, arguments)
    elif isinstance(node, list):
        for value in node:
            _set_arguments(value, arguments)
