"""Stored Responses API turns: what `GET /v1/responses/{id}`, its `input_items` and `DELETE` read, and what
`previous_response_id` continues.

Each stored turn keeps its response object, its own input items, and the whole conversation up to and
including its output, as Responses items. A later turn naming it is rebuilt with those items ahead of its
own input and replayed in full to whichever target serves it: translated to chat messages, or as the
`input` of an upstream that serves Responses itself (which never sees the gateway's ids). Nothing ties a
conversation to one upstream, so a migration may move a conversation's next turn to the other arm, or roll
it back, without breaking it.

Records live in the migration store (SQLite by default, Redis with replicas) for `retention_s`; a turn whose
record would pass `max_bytes` is answered but not kept, and continuing from it is the client's 400, as for
an unknown id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.dialects.base import ClientRequest, Turn
from gateway.dialects.responses import request_of
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from store.base import Store, StoreUnavailable

_log = logging.getLogger("cutover.gateway")


def _not_found(response_id: str, param: str | None = None) -> InvalidRequest | NotFound:
    message = f"Previous response with id '{response_id[:100]}' not found." if param else \
        f"No response with id '{response_id[:100]}' is stored."
    if param:
        return InvalidRequest(message, param=param, code="previous_response_not_found")
    return NotFound(message, code="response_not_found")


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Stored responses cannot be reached right now; retry shortly.",
                              code="store_unavailable", headers={"retry-after": "1"})


class Conversations:
    def __init__(self, store: Store, retention_s: float, max_bytes: int) -> None:
        self._store = store
        self._retention_s = retention_s
        self._max_bytes = max_bytes

    async def _raw(self, response_id: str, param: str | None = None) -> bytes:
        try:
            raw = await self._store.get_record("response", response_id)
        except StoreUnavailable:
            raise _unavailable() from None
        if raw is None:
            raise _not_found(response_id, param)
        return raw

    async def _record(self, response_id: str, param: str | None = None) -> dict[str, Any]:
        record: dict[str, Any] = orjson.loads(await self._raw(response_id, param))
        return record

    async def resume(self, request: ClientRequest) -> ClientRequest:
        """A turn naming `previous_response_id`, rebuilt after the conversation it continues."""
        turn = request.turn
        previous = turn.data.get("previous_response_id") if turn is not None else None
        if turn is None or not isinstance(previous, str):
            return request
        raw = await self._raw(previous, "previous_response_id")
        # The replayed conversation counts toward the size that decides whether its tokens must be counted.
        return request_of(turn.data, request.body_size + len(raw), orjson.loads(raw)["items"])

    async def remember(self, turn: Turn, response: Mapping[str, Any]) -> None:
        if not turn.store:
            return
        output = [item for item in response.get("output") or () if isinstance(item, dict)]
        record = orjson.dumps({"response": response, "input": turn.items,
                               "items": [*turn.history, *turn.items, *output]})
        if len(record) > self._max_bytes:
            _log.warning("response not stored", extra={"fields": {
                "response_id": str(response.get("id")), "bytes": len(record), "limit": self._max_bytes}})
            return
        try:
            response_id = str(response.get("id") or turn.response_id)
            await self._store.put_record("response", response_id, record, self._retention_s)
        except StoreUnavailable:
            # The answer is still the client's; only continuing from it will fail (400, as for any unknown id).
            _log.warning("response not stored: the store is unavailable",
                         extra={"fields": {"response_id": turn.response_id}})

    async def get(self, response_id: str) -> dict[str, Any]:
        response: dict[str, Any] = (await self._record(response_id))["response"]
        return response

    async def input_items(self, response_id: str, *, limit: int, order: str, after: str | None) -> dict[str, Any]:
        items = list((await self._record(response_id))["input"])
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

    async def delete(self, response_id: str) -> dict[str, Any]:
        try:
            deleted = await self._store.delete_record("response", response_id)
        except StoreUnavailable:
            raise _unavailable() from None
        if not deleted:
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}
