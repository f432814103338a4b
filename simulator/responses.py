"""POST /v1/responses as OpenAI serves it: a `response` object, or its typed events (numbered, each with
its `event:` line, no `[DONE]`). The same faults and replies as chat (simulator.handlers); the simulator
keeps no conversations, so `previous_response_id` is refused as an unknown id, as OpenAI refuses one it
never issued.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from simulator import faults
from simulator.behaviour import SimulationSettings
from simulator.handlers import pause, read_checked, serve, token_budget
from simulator.schema import structured_reply
from simulator.state import STATE_KEY
from simulator.tools import responses_call
from simulator.validation import BadRequest, invalid_request
from simulator.wire import text_tokens


def _input_text(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", None)
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    value = body.get("input", "")
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest("'input' must be a string or an array of items.", "input")
    texts = []
    for item in value:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        elif isinstance(item, dict) and isinstance(item.get("output"), str):
            texts.append(item["output"])
    return " ".join(texts)


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def _response(body: dict[str, Any], seq: int, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": f"resp_sim_{seq}", "object": "response", "created_at": int(time.time()), "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"], "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": body.get("store", True) is not False,
        "temperature": body.get("temperature"), "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p"), "truncation": "disabled", "usage": usage, "user": None,
        "metadata": body.get("metadata") or {},
    }


def _event(seq: int, kind: str, **payload: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(
        {"type": kind, "sequence_number": seq, **payload}) + b"\n\n"


def _fixed(settings: SimulationSettings, model: str) -> bool:
    return model in settings.replies or settings.reply is not None


def _call_answer(body: dict[str, Any], seq: int, stream: bool, call: tuple[str, str], usage: Any) -> web.Response:
    name, arguments = call
    item = {"id": f"fc_sim_{seq}", "type": "function_call", "status": "completed", "call_id": f"call_sim_{seq}",
            "name": name, "arguments": arguments}
    if not stream:
        return faults.json_response(orjson.dumps(_response(body, seq, "completed", [item], usage)))
    third = max(1, len(arguments) // 3)
    fragments = [f for f in (arguments[:third], arguments[third: 2 * third], arguments[2 * third:]) if f]
    where = {"item_id": item["id"], "output_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response(body, seq, "in_progress", [], None)}),
        ("response.in_progress", {"response": _response(body, seq, "in_progress", [], None)}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress",
                                                                      "arguments": ""}}),
        *[("response.function_call_arguments.delta", {**where, "delta": f}) for f in fragments],
        ("response.function_call_arguments.done", {**where, "name": name, "arguments": arguments}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": _response(body, seq, "completed", [item], usage)}),
    ]
    return faults.sse_whole(b"".join(_event(i, kind, **payload) for i, (kind, payload) in enumerate(events)))


async def responses(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    checked = await read_checked(request, _input_text)
    if isinstance(checked, web.Response):
        return checked
    body, prompt = checked
    if body.get("previous_response_id"):
        return invalid_request(f"Previous response with id '{body['previous_response_id']}' not found.",
                               "previous_response_id")
    stream = body.get("stream") is True

    async def answer(settings: SimulationSettings, outcome: str, seq: int) -> web.StreamResponse:
        plan = state.plan_for(settings, body["model"], structured_reply(body))
        count, finish = token_budget({"max_tokens": body.get("max_output_tokens")}, len(plan.pieces))
        status = "incomplete" if finish == "length" else "completed"
        text = plan.content_for(count)
        usage = _usage(text_tokens(prompt), count) if settings.report_usage else None
        message = {"id": f"msg_sim_{seq}", "type": "message", "status": status, "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
        await pause(state.first_delay_s(settings) + (0 if stream else settings.per_token_ms * count / 1000.0))
        if outcome == "garbage":
            return faults.garbage_response(stream)
        call = responses_call(body) if outcome == "ok" and not _fixed(settings, body["model"]) else None
        if call is not None:
            return _call_answer(body, seq, stream, call, usage)
        if not stream:
            payload = orjson.dumps(_response(body, seq, status, [message], usage))
            if outcome == "stream_break":
                return await faults.truncated_json(request, payload)
            return faults.json_response(payload)
        empty_item = {**message, "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": _response(body, seq, "in_progress", [], None)}),
            ("response.in_progress", {"response": _response(body, seq, "in_progress", [], None)}),
            ("response.output_item.added", {"output_index": 0, "item": empty_item}),
            ("response.content_part.added", {**where, "part": part}),
            *[("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
              for piece in plan.pieces[:count]],
            ("response.output_text.done", {**where, "text": text, "logprobs": []}),
            ("response.content_part.done", {**where, "part": message["content"][0]}),
            ("response.output_item.done", {"output_index": 0, "item": message}),
            (f"response.{status}", {"response": _response(body, seq, status, [message], usage)}),
        ]
        frames = [_event(i, kind, **payload) for i, (kind, payload) in enumerate(events)]
        if outcome == "stream_break":
            resp = faults.sse_response()
            await resp.prepare(request)
            await resp.write(b"".join(frames[: len(frames) // 2]))
            await faults.break_stream(request)
            return resp
        return faults.sse_whole(b"".join(frames))

    return await serve(request, body, stream, answer)
