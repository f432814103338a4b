"""OpenAI API handlers of the simulator: chat completions, embeddings, models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import orjson
from aiohttp import web

from simulator import faults, shaping
from simulator.behaviour import SimulationSettings
from simulator.schema import structured_reply
from simulator.state import STATE_KEY, RecordedRequest, SimulatorState
from simulator.tools import call_deltas, call_message, requested_call
from simulator.validation import BadRequest, check_chat, check_embeddings, invalid_request, parse_json
from simulator.wire import (
    DONE_FRAME,
    ChunkFramer,
    chat_completion_body,
    embeddings_body,
    estimate_prompt_tokens,
    text_tokens,
    usage_dict,
)

T = TypeVar("T")

DEFAULT_MODEL: Final = "sim-model"
# Above this many values (about 1 ms of work) an embeddings answer is built on a worker thread.
OFFLOAD_VALUES: Final = 4096
# Models have no meaningful creation time here; a constant keeps answers stable.
_MODEL_CREATED: Final = 1700000000


def begin(
    request: web.Request, state: SimulatorState, body: Any, *, stream: bool, outcome: str
) -> tuple[int, RecordedRequest | None]:
    seq = state.next_seq()
    model = body.get("model") if isinstance(body, dict) else None
    entry = state.record(
        seq=seq,
        path=request.path,
        model=model if isinstance(model, str) else None,
        stream=stream,
        body=body,
        outcome=outcome,
        started_at=time.time(),
        headers=request.headers,
    )
    return seq, entry


def reject(request: web.Request, state: SimulatorState, body: Any, exc: BadRequest) -> web.Response:
    # Recorded so tests can see what the gateway sent, but the script is not
    # consumed: a malformed request never reaches the "model".
    _, entry = begin(request, state, body, stream=False, outcome="invalid_request")
    if entry is not None:
        entry.ended_at = entry.started_at
    return invalid_request(exc.message, exc.param)


async def read_checked(
    request: web.Request, check: Callable[[Any], T]
) -> tuple[dict[str, Any], T] | web.Response:
    """The body and what `check` made of it; or, for a malformed request, its recorded 400."""
    state = request.app[STATE_KEY]
    body: Any = None
    try:
        body = parse_json(await request.read())
        return body, check(body)
    except BadRequest as exc:
        return reject(request, state, body, exc)


Answer = Callable[[SimulationSettings, str, int], Awaitable[web.StreamResponse]]


async def serve(request: web.Request, body: dict[str, Any], stream: bool, answer: Answer) -> web.StreamResponse:
    """One modelled answer, for every endpoint: the outcome drawn and recorded, error statuses and hangs
    acted out here, the rest by `answer(settings, outcome, seq)`."""
    state = request.app[STATE_KEY]
    # Snapshot: a PUT /_sim/behaviour mid-request must not change this answer.
    settings = state.settings
    outcome = state.next_outcome(settings)
    seq, entry = begin(request, state, body, stream=stream, outcome=outcome)
    try:
        immediate = faults.status_fault(outcome, settings)
        if immediate is not None:
            return immediate
        if outcome == "timeout":
            return await faults.hang_then_close(request, state, settings.hang_s)
        # The quality knob and the scripted judge (simulator.shaping); a healthy model passes through.
        shaped = shaping.shape(state, settings, request.path, body, outcome)
        if shaped.call is not None and request.path == shaping.CHAT_PATH:
            return await _call_tool(request, state, settings, body, seq, stream, shaped.call)
        return shaping.finish(shaped, await answer(shaped.settings, outcome, seq))
    finally:
        if entry is not None:
            entry.ended_at = time.time()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    checked = await read_checked(request, check_chat)
    if isinstance(checked, web.Response):
        return checked
    body, _ = checked
    stream = body.get("stream") is True

    async def answer(settings: SimulationSettings, outcome: str, seq: int) -> web.StreamResponse:
        if outcome == "garbage":
            await pause(state.first_delay_s(settings))
            return faults.garbage_response(stream)
        if outcome == "malformed" and not stream:
            await pause(state.first_delay_s(settings))
            return faults.shapeless_response(body["model"], "chat")
        # A fixed reply wins: tests that set one expect it whatever the request offers.
        fixed = body["model"] in settings.replies or settings.reply is not None
        call = requested_call(body, settings.tool_rounds) if outcome == "ok" and not fixed else None
        if call is not None:
            return await _call_tool(request, state, settings, body, seq, stream, call)
        if stream:
            return await _stream_chat(request, state, settings, body, seq, broken=outcome == "stream_break",
                                      malformed=outcome == "malformed")
        return await _whole_chat(request, state, settings, body, seq, broken=outcome == "stream_break")

    return await serve(request, body, stream, answer)


async def pause(seconds: float) -> None:
    # Skipping the call entirely keeps the zero-latency path free of a loop round-trip.
    if seconds > 0:
        await asyncio.sleep(seconds)


def token_budget(body: dict[str, Any], planned: int) -> tuple[int, str]:
    cap = body.get("max_completion_tokens")
    if cap is None:
        cap = body.get("max_tokens")
    if cap is not None and cap < planned:
        return cap, "length"
    return planned, "stop"


async def _call_tool(
    request: web.Request, state: SimulatorState, settings: SimulationSettings, body: dict[str, Any], seq: int,
    stream: bool, call: tuple[str, str],
) -> web.StreamResponse:
    name, arguments = call
    call_id = f"call_sim_{seq}"
    completion_id = state.completion_id(seq)
    prompt_tokens = estimate_prompt_tokens(body["messages"], body.get("tools"))
    usage = usage_dict(prompt_tokens, 12) if settings.report_usage else None
    await pause(state.first_delay_s(settings))
    if not stream:
        payload = {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
                   "model": body["model"], "choices": [{"index": 0, "message": call_message(call_id, name, arguments),
                                                        "logprobs": None, "finish_reason": "tool_calls"}]}
        if usage is not None:
            payload["usage"] = usage
        return faults.json_response(orjson.dumps(payload))
    options = body.get("stream_options")
    include_usage = usage is not None and isinstance(options, dict) and options.get("include_usage") is True
    framer = ChunkFramer(completion_id=completion_id, created=int(time.time()), model=body["model"],
                         include_usage=include_usage)
    frames = [framer.role(), *[framer.content(d) for d in call_deltas(call_id, name, arguments)],
              framer.finish("tool_calls")]
    if include_usage and usage is not None:
        frames.append(framer.usage(usage))
    return faults.sse_whole(b"".join(frames) + DONE_FRAME)


async def _whole_chat(
    request: web.Request,
    state: SimulatorState,
    settings: SimulationSettings,
    body: dict[str, Any],
    seq: int,
    *,
    broken: bool,
) -> web.StreamResponse:
    model = body["model"]
    plan = state.plan_for(settings, model, structured_reply(body))
    count, finish_reason = token_budget(body, len(plan.pieces))
    await pause(state.first_delay_s(settings) + settings.per_token_ms * count / 1000.0)
    usage = None
    if settings.report_usage:
        usage = usage_dict(estimate_prompt_tokens(body["messages"], body.get("tools")), count)
    payload = chat_completion_body(
        completion_id=state.completion_id(seq),
        created=int(time.time()),
        model=model,
        content=plan.content_for(count),
        finish_reason=finish_reason,
        usage=usage,
    )
    if broken:
        return await faults.truncated_json(request, payload)
    return faults.json_response(payload)


async def _stream_chat(
    request: web.Request,
    state: SimulatorState,
    settings: SimulationSettings,
    body: dict[str, Any],
    seq: int,
    *,
    broken: bool,
    malformed: bool = False,
) -> web.StreamResponse:
    model = body["model"]
    plan = state.plan_for(settings, model, structured_reply(body))
    count, finish_reason = token_budget(body, len(plan.pieces))
    options = body.get("stream_options")
    include_usage = settings.report_usage and isinstance(options, dict) and options.get("include_usage") is True
    framer = ChunkFramer(
        completion_id=state.completion_id(seq),
        created=int(time.time()),
        model=model,
        include_usage=include_usage,
    )
    sent = count // 2 if broken or malformed else count
    # The malformed line and a normal-looking end replace the rest of the answer.
    tail = faults.MALFORMED_EVENT + DONE_FRAME if malformed else None
    choices = plan.choice_bytes[:sent]

    await pause(state.first_delay_s(settings))
    per_token_s = settings.per_token_ms / 1000.0
    if per_token_s > 0 and len(choices) > 1:
        resp = faults.sse_response()
        await resp.prepare(request)
        # The first token goes out with the role chunk, the rest one per per_token_ms.
        await resp.write(framer.role() + framer.content(choices[0]))
        for choice in choices[1:]:
            await asyncio.sleep(per_token_s)
            await resp.write(framer.content(choice))
        if broken:
            await faults.break_stream(request)
        elif tail is not None:
            # Paced like a token, so the bad line arrives after the client already has the good ones.
            await asyncio.sleep(per_token_s)
            await resp.write_eof(tail)
        else:
            await resp.write_eof(_stream_tail(framer, finish_reason, include_usage, body, count))
        return resp

    frames = [framer.role(), *[framer.content(choice) for choice in choices]]
    if broken:
        resp = faults.sse_response()
        await resp.prepare(request)
        await resp.write(b"".join(frames))
        await faults.break_stream(request)
        return resp
    frames.append(tail or _stream_tail(framer, finish_reason, include_usage, body, count))
    # Everything is ready at once, so send it as one chunked Response: aiohttp
    # then coalesces headers, body and terminator into a single send.
    return faults.sse_whole(b"".join(frames))


def _stream_tail(
    framer: ChunkFramer, finish_reason: str, include_usage: bool, body: dict[str, Any], count: int
) -> bytes:
    tail = framer.finish(finish_reason)
    if include_usage:
        tail += framer.usage(usage_dict(estimate_prompt_tokens(body["messages"], body.get("tools")), count))
    return tail + DONE_FRAME


async def embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    checked = await read_checked(request, check_embeddings)
    if isinstance(checked, web.Response):
        return checked
    body, inputs = checked

    async def answer(settings: SimulationSettings, outcome: str, seq: int) -> web.StreamResponse:
        await pause(state.first_delay_s(settings))
        if outcome == "garbage":
            return faults.garbage_response(stream=False)
        if outcome == "malformed":
            return faults.shapeless_response(body["model"], "embeddings")
        dims = body.get("dimensions") or settings.embedding_dims
        encoding = body.get("encoding_format") or "float"
        prompt_tokens = sum(text_tokens(text) for text in inputs)
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens} if settings.report_usage else None
        build = (inputs, dims, encoding, body["model"], usage)
        # In-process (the demo), the simulator shares the gateway's event loop: big answers are built beside it.
        if len(inputs) * dims > OFFLOAD_VALUES:
            encoded = await asyncio.to_thread(embeddings_body, *build)
        else:
            encoded = embeddings_body(*build)
        if outcome == "stream_break":
            return await faults.truncated_json(request, encoded)
        return faults.json_response(encoded)

    return await serve(request, body, False, answer)


async def list_models(request: web.Request) -> web.Response:
    settings = request.app[STATE_KEY].settings
    names = dict.fromkeys([DEFAULT_MODEL, *settings.replies])
    data = [
        {"id": name, "object": "model", "created": _MODEL_CREATED, "owned_by": "cutover-simulator"} for name in names
    ]
    return faults.json_response(orjson.dumps({"object": "list", "data": data}))
