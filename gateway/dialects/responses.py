"""POST /v1/responses: the Responses API, passed through where the upstream serves it, else translated to
Chat Completions (gateway.dialects.responses_in, _out and _stream hold the maps).

A turn's id (`resp_...`) is chosen here, before any upstream is asked, so the answer, its stream events and
the stored conversation (gateway.conversations) all carry the same one. `previous_response_id` is resolved by
the gateway itself: the earlier turns are replayed to whichever target serves this one, so a conversation
survives a migration moving it from one arm to the other.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from gateway.dialects.base import ClientRequest, Turn
from gateway.dialects.openai import CanonicalDialect
from gateway.dialects.responses_in import input_messages, parse_responses_request, translate
from gateway.dialects.responses_out import new_id, response_object
from gateway.dialects.responses_stream import NativeResponseEvents, ResponseEvents
from providers.base import UpstreamReply
from routing.wire import NativeForm


def input_items(value: Any) -> list[dict[str, Any]]:
    """The input as a list of items, each with an id (input_items lists them by id)."""
    items = [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else list(value or ())
    out = []
    for item in items:
        item = dict(item)
        item.setdefault("type", "message")
        if "id" not in item:
            item["id"] = new_id("msg" if item["type"] == "message" else "item")
        out.append(item)
    return out


def _replayable(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation as any upstream may be sent it again: without item ids, which an upstream would take
    for references to items it stored (the next turn may go to another arm or account, which stored none),
    and without reasoning items, which mean nothing without their ids."""
    return [{k: v for k, v in item.items() if k != "id"} for item in items if item.get("type") != "reasoning"]


def request_of(data: Mapping[str, Any], body_size: int, history: Sequence[dict[str, Any]] = ()) -> ClientRequest:
    """The pipeline's request for a Responses body, after any earlier turns' `history` items."""
    turn = Turn(new_id("resp"), int(time.time()), data, tuple(input_items(data.get("input"))), tuple(history))
    chat, native_only = translate(dict(data), input_messages(list(history), []))
    stream = data.get("stream") is True
    if stream:
        chat["stream"] = True
    max_out = data.get("max_output_tokens")

    def native_body(model: str) -> dict[str, Any]:
        # The upstream knows nothing of the gateway's ids: it gets the whole conversation instead.
        body = {k: v for k, v in data.items() if k != "previous_response_id"}
        body["model"] = model
        body["input"] = _replayable([*history, *turn.items]) if history else data.get("input", [])
        return body

    return ClientRequest(
        str(data["model"]), chat, stream, body_size, max_out if isinstance(max_out, int) else 0, False,
        NativeForm("responses", "/responses", native_body, tuple(native_only)), turn,
    )


Remember = Callable[[Turn, Mapping[str, Any]], Awaitable[None]]


class Responses(CanonicalDialect):
    endpoint = "responses"
    upstream_path = "/chat/completions"
    fits_context = True
    # The copy is the chat translation; the comparison reads either shape (migration.compare).
    shadowable = True

    def __init__(self, remember: Remember) -> None:
        self._remember = remember

    def parse(self, body: bytes) -> ClientRequest:
        return request_of(parse_responses_request(body), len(body))

    def response_of(self, request: ClientRequest, reply: UpstreamReply, native: bool) -> dict[str, Any]:
        assert request.turn is not None
        if native:
            return dict(reply.data)
        return response_object(reply.data, request.turn.data, request.turn.response_id)

    async def answer(self, request: ClientRequest, reply: UpstreamReply, native: bool) -> bytes:
        response = self.response_of(request, reply, native)
        assert request.turn is not None
        # Stored before it is sent: a client may ask for the next turn the moment it has this one.
        await self._remember(request.turn, response)
        return reply.body if native else orjson.dumps(response)

    def stream_frames(self, request: ClientRequest, native: bool) -> ResponseEvents | NativeResponseEvents:
        turn = request.turn
        assert turn is not None

        async def keep(response: Mapping[str, Any]) -> None:
            await self._remember(turn, response)

        if native:
            return NativeResponseEvents(keep)
        return ResponseEvents(turn.data, turn.response_id, turn.created_at, keep)
