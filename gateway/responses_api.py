"""The stored-response routes of the Responses API: retrieve, list a turn's input items, delete.

Creating a response is a proxy endpoint (gateway.pipeline with gateway.dialects.responses); these read what
gateway.conversations kept of it.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request

from gateway.auth import KeyRing
from gateway.conversations import Conversations
from gateway.http import JSONBytes


def build_responses_router(conversations: Conversations, keys: KeyRing) -> APIRouter:
    def client_key(request: Request) -> str:
        return keys.identify(request.headers.get("authorization", "").encode() or None)

    router = APIRouter(prefix="/v1/responses", dependencies=[Depends(client_key)])

    @router.get("/{response_id}")
    async def retrieve(response_id: str) -> JSONBytes:
        return JSONBytes(await conversations.get(response_id))

    @router.get("/{response_id}/input_items")
    async def input_items(
        response_id: str,
        limit: int = Query(20, ge=1, le=100),
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> JSONBytes:
        return JSONBytes(await conversations.input_items(response_id, limit=limit, order=order, after=after))

    @router.delete("/{response_id}")
    async def delete(response_id: str) -> JSONBytes:
        return JSONBytes(await conversations.delete(response_id))

    return router
