"""HTTP handlers of the simulated OpenAI-compatible upstream.

Request validation is intentionally minimal (just enough to answer 400 the
way OpenAI does for obviously malformed bodies); the simulator is a test
double, not a schema validator.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import orjson
from aiohttp import web

from simulator import faults
from simulator.behaviour import SimulationSettings
from simulator.state import RecordedRequest, SimulatorState
from simulator.wire import (
    DONE_FRAME,
    ChunkFramer,
    chat_completion_body,
    embedding_vector,
    encode_embedding,
    error_body,
    estimate_prompt_tokens,
    text_tokens,
    usage_dict,
)

STATE_KEY: Final = web.AppKey("cutover_simulator_state", SimulatorState)
DEFAULT_MODEL: Final = "sim-model"
# Models have no meaningful creation time here; a constant keeps answers stable.
_MODEL_CREATED: Final = 1700000000


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def invalid_request(message: str, param: str | None = None) -> web.Response:
    return faults.json_response(error_body(message, "invalid_request_error", param), status=400)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"We could not parse the JSON body of your request: {exc}", None) from exc


def _check_chat(body: Any) -> None:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", None)
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    if not all(isinstance(message, dict) for message in messages):
        raise BadRequest("Each entry of 'messages' must be an object.", "messages")
    if body.get("stream") not in (None, True, False):
        raise BadRequest("'stream' must be a boolean.", "stream")
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 0):
            raise BadRequest(f"'{name}' must be a non-negative integer.", name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", "stream_options")


def _check_embeddings(body: Any) -> list[str]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", None)
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        inputs = [raw_input]
    elif isinstance(raw_input, list) and raw_input and all(isinstance(x, str) for x in raw_input):
        inputs = raw_input
    else:
        raise BadRequest("'input' must be a string or a non-empty array of strings.", "input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (not _is_int(dims) or dims < 1):
        raise BadRequest("'dimensions' must be a positive integer.", "dimensions")
    return inputs


def _begin(
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


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    raw = await request.read()
    body: Any = None
    try:
        body = _parse_json(raw)
        _check_chat(body)
    except BadRequest as exc:
        _, entry = _begin(request, state, body, stream=False, outcome="invalid_request")
        if entry is not None:
            entry.ended_at = time.time()
        return invalid_request(exc.message, exc.param)

    # Snapshot: a PUT /_sim/behaviour mid-request must not change this answer.
    settings = state.settings
    stream = body.get("stream") is True
    outcome = state.next_outcome(settings)
    seq, entry = _begin(request, state, body, stream=stream, outcome=outcome)
    try:
        immediate = faults.status_fault(outcome, settings)
        if immediate is not None:
            return immediate
        if outcome == "timeout":
            return await faults.hang_then_close(request, state, settings.hang_s)
        if outcome == "garbage":
            await _sleep(state.first_delay_s(settings))
            return faults.garbage_response(stream)
        if stream:
            return await _stream_chat(request, state, settings, body, seq, broken=outcome == "stream_break")
        return await _whole_chat(request, state, settings, body, seq, broken=outcome == "stream_break")
    finally:
        if entry is not None:
            entry.ended_at = time.time()


async def _sleep(seconds: float) -> None:
    # Skipping the call entirely keeps the zero-latency path free of a loop round-trip.
    if seconds > 0:
        await asyncio.sleep(seconds)


def _token_budget(body: dict[str, Any], planned: int) -> tuple[int, str]:
    cap = body.get("max_completion_tokens")
    if cap is None:
        cap = body.get("max_tokens")
    if cap is not None and cap < planned:
        return cap, "length"
    return planned, "stop"


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
    plan = state.plan_for(settings, model)
    count, finish_reason = _token_budget(body, len(plan.pieces))
    await _sleep(state.first_delay_s(settings) + settings.per_token_ms * count / 1000.0)
    usage = None
    if settings.report_usage:
        usage = usage_dict(estimate_prompt_tokens(body["messages"]), count)
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
) -> web.StreamResponse:
    model = body["model"]
    plan = state.plan_for(settings, model)
    count, finish_reason = _token_budget(body, len(plan.pieces))
    options = body.get("stream_options")
    include_usage = (
        settings.report_usage and isinstance(options, dict) and options.get("include_usage") is True
    )
    framer = ChunkFramer(
        completion_id=state.completion_id(seq),
        created=int(time.time()),
        model=model,
        include_usage=include_usage,
    )
    sent = count // 2 if broken else count
    choices = plan.choice_bytes[:sent]

    await _sleep(state.first_delay_s(settings))
    resp = faults.sse_response()
    await resp.prepare(request)

    frames = [framer.role()]
    per_token_s = settings.per_token_ms / 1000.0
    if per_token_s > 0 and len(choices) > 1:
        # Paced delivery: first token goes out with the role chunk, the rest
        # one per per_token_ms.
        await resp.write(frames[0] + framer.content(choices[0]))
        for choice in choices[1:]:
            await asyncio.sleep(per_token_s)
            await resp.write(framer.content(choice))
        frames = []
    else:
        frames.extend(framer.content(choice) for choice in choices)

    if broken:
        if frames:
            await resp.write(b"".join(frames))
        await faults.break_stream(request)
        return resp

    frames.append(framer.finish(finish_reason))
    if include_usage:
        frames.append(framer.usage(usage_dict(estimate_prompt_tokens(body["messages"]), count)))
    frames.append(DONE_FRAME)
    # One write for everything that is ready: fewer syscalls on the fast path.
    await resp.write(b"".join(frames))
    await resp.write_eof()
    return resp


async def embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    raw = await request.read()
    body: Any = None
    try:
        body = _parse_json(raw)
        inputs = _check_embeddings(body)
    except BadRequest as exc:
        _, entry = _begin(request, state, body, stream=False, outcome="invalid_request")
        if entry is not None:
            entry.ended_at = time.time()
        return invalid_request(exc.message, exc.param)

    settings = state.settings
    outcome = state.next_outcome(settings)
    _, entry = _begin(request, state, body, stream=False, outcome=outcome)
    try:
        immediate = faults.status_fault(outcome, settings)
        if immediate is not None:
            return immediate
        if outcome == "timeout":
            return await faults.hang_then_close(request, state, settings.hang_s)
        await _sleep(state.first_delay_s(settings))
        if outcome == "garbage":
            return faults.garbage_response(stream=False)
        dims = body.get("dimensions") or settings.embedding_dims
        encoding = body.get("encoding_format") or "float"
        prompt_tokens = sum(text_tokens(text) for text in inputs)
        payload: dict[str, Any] = {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": encode_embedding(embedding_vector(text, dims), encoding),
                }
                for i, text in enumerate(inputs)
            ],
            "model": body["model"],
        }
        if settings.report_usage:
            payload["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        encoded = orjson.dumps(payload)
        if outcome == "stream_break":
            return await faults.truncated_json(request, encoded)
        return faults.json_response(encoded)
    finally:
        if entry is not None:
            entry.ended_at = time.time()


async def list_models(request: web.Request) -> web.Response:
    settings = request.app[STATE_KEY].settings
    names = dict.fromkeys([DEFAULT_MODEL, *settings.replies])
    data = [
        {"id": name, "object": "model", "created": _MODEL_CREATED, "owned_by": "cutover-simulator"}
        for name in names
    ]
    return faults.json_response(orjson.dumps({"object": "list", "data": data}))


async def get_requests(request: web.Request) -> web.Response:
    records = request.app[STATE_KEY].records
    return faults.json_response(orjson.dumps([entry.to_json() for entry in records]))


async def clear_requests(request: web.Request) -> web.Response:
    records = request.app[STATE_KEY].records
    cleared = len(records)
    records.clear()
    return faults.json_response(orjson.dumps({"cleared": cleared}))


async def get_behaviour(request: web.Request) -> web.Response:
    return _settings_response(request.app[STATE_KEY].settings)


async def put_behaviour(request: web.Request) -> web.Response:
    return await _set_behaviour(request, merge=False)


async def patch_behaviour(request: web.Request) -> web.Response:
    return await _set_behaviour(request, merge=True)


async def _set_behaviour(request: web.Request, *, merge: bool) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = _parse_json(await request.read())
    except BadRequest as exc:
        return invalid_request(exc.message)
    if not isinstance(body, dict):
        return invalid_request("The behaviour must be a JSON object.")
    if merge:
        body = {**state.settings.model_dump(), **body}
    try:
        settings = SimulationSettings.model_validate(body)
    except ValueError as exc:
        return invalid_request(f"Invalid simulator behaviour: {exc}")
    state.replace_settings(settings)
    return _settings_response(settings)


def _settings_response(settings: SimulationSettings) -> web.Response:
    return faults.json_response(orjson.dumps(settings.model_dump(mode="json")))
