"""Control endpoints under ``/_sim/`` used by tests to inspect and steer the simulator."""

from __future__ import annotations

import orjson
from aiohttp import web

from simulator.behaviour import SimulationSettings
from simulator.faults import json_response
from simulator.state import STATE_KEY
from simulator.validation import BadRequest, invalid_request, parse_json


async def get_requests(request: web.Request) -> web.Response:
    records = request.app[STATE_KEY].records
    return json_response(orjson.dumps([entry.to_json() for entry in records]))


async def clear_requests(request: web.Request) -> web.Response:
    records = request.app[STATE_KEY].records
    cleared = len(records)
    records.clear()
    return json_response(orjson.dumps({"cleared": cleared}))


async def get_behaviour(request: web.Request) -> web.Response:
    return _settings_response(request.app[STATE_KEY].settings)


async def put_behaviour(request: web.Request) -> web.Response:
    return await _set_behaviour(request, merge=False)


async def patch_behaviour(request: web.Request) -> web.Response:
    return await _set_behaviour(request, merge=True)


async def _set_behaviour(request: web.Request, *, merge: bool) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = parse_json(await request.read())
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
    return json_response(orjson.dumps(settings.model_dump(mode="json")))
