"""POST /v1/completions as OpenAI serves it: `text_completion` objects, chunks with `text`, `[DONE]`.

The same faults and replies as chat (simulator.handlers); a list of prompts is answered choice by choice.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from simulator import faults
from simulator.behaviour import SimulationSettings
from simulator.handlers import pause, read_checked, serve, token_budget
from simulator.state import STATE_KEY
from simulator.validation import BadRequest
from simulator.wire import DONE_FRAME, text_tokens, usage_dict


def _prompts(body: Any) -> list[str]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", None)
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and len(prompt) > 2048:
        raise BadRequest("'prompt' may hold at most 2048 prompts.", "prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    if isinstance(prompt, list) and prompt:
        return [" ".join(map(str, prompt))]  # token arrays: the simulator has no vocabulary to decode them
    raise BadRequest("'prompt' must be a string, an array of strings or token arrays.", "prompt")


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    checked = await read_checked(request, _prompts)
    if isinstance(checked, web.Response):
        return checked
    body, prompts = checked
    stream = body.get("stream") is True

    async def answer(settings: SimulationSettings, outcome: str, seq: int) -> web.StreamResponse:
        plan = state.plan_for(settings, body["model"])
        # OpenAI's default for this endpoint is 16 tokens.
        count, finish_reason = token_budget({"max_tokens": body.get("max_tokens") or 16}, len(plan.pieces))
        text = plan.content_for(count)
        prompt_tokens = sum(text_tokens(p) for p in prompts)
        usage = usage_dict(prompt_tokens, count * len(prompts)) if settings.report_usage else None
        envelope = {"id": f"cmpl-sim-{seq}", "object": "text_completion", "created": int(time.time()),
                    "model": body["model"]}
        await pause(state.first_delay_s(settings) + (0 if stream else settings.per_token_ms * count / 1000.0))
        if outcome == "garbage":
            return faults.garbage_response(stream)
        if not stream:
            choices = [{"text": text, "index": i, "logprobs": None, "finish_reason": finish_reason}
                       for i in range(len(prompts))]
            payload = orjson.dumps({**envelope, "choices": choices, **({"usage": usage} if usage else {})})
            if outcome == "stream_break":
                return await faults.truncated_json(request, payload)
            return faults.json_response(payload)
        frames = [_chunk(envelope, [{"text": piece, "index": i, "logprobs": None, "finish_reason": None}
                                    for i in range(len(prompts))]) for piece in plan.pieces[:count]]
        frames.append(_chunk(envelope, [{"text": "", "index": i, "logprobs": None, "finish_reason": finish_reason}
                                        for i in range(len(prompts))]))
        options = body.get("stream_options")
        if usage and isinstance(options, dict) and options.get("include_usage") is True:
            frames.append(_chunk(envelope, [], usage))
        if outcome == "stream_break":
            resp = faults.sse_response()
            await resp.prepare(request)
            await resp.write(b"".join(frames[: len(frames) // 2]))
            await faults.break_stream(request)
            return resp
        return faults.sse_whole(b"".join(frames) + DONE_FRAME)

    return await serve(request, body, stream, answer)


def _chunk(envelope: dict[str, Any], choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
    body = {**envelope, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"
