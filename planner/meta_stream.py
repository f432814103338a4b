"""The meta-model's answer as a `chat.completion.chunk` stream: role, optional progress lines, then
the tool calls or the answer in pieces, the finish reason and usage.

The run itself is the meta-model's (`result`); this only frames what it returns. A run that fails
ends the stream with an error (`UpstreamStreamBroken`), never with a clean-looking end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson

from providers.base import UpstreamRequest
from providers.errors import UpstreamStreamBroken

_CHUNK_WORDS = 8
Result = Callable[[UpstreamRequest, Any], Awaitable[dict[str, Any]]]
WithTrace = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


class MetaStream:
    """Frames the run as a chat.completion.chunk stream: role, optional progress, the answer, usage."""

    def __init__(self, name: str, request: UpstreamRequest, result: Result, with_trace: WithTrace) -> None:
        self._name = name
        self._request = request
        self._result = result
        self._with_trace = with_trace
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._id = "chatcmpl-pe-" + os.urandom(12).hex()
        self._created = int(time.time())
        self.known_cost: Decimal | None = None
        options = request.payload.get("cutover")
        wants_progress = isinstance(options, dict) and bool(options.get("progress"))
        self._task = asyncio.ensure_future(self._run(wants_progress))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return orjson.dumps({
            "id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._name,
            "system_fingerprint": "cutover-plan-and-execute",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra,
        })

    async def _run(self, wants_progress: bool) -> None:
        put = self._queue.put_nowait
        put(self._chunk({"role": "assistant", "content": ""}))

        async def progress(line: str) -> None:
            put(self._chunk({"cutover_progress": line}))

        try:
            result = await self._result(self._request, progress if wants_progress else None)
        except Exception:
            put(None)
            raise
        body = self._with_trace(result, self._request.payload)
        choice = body["choices"][0]
        for index, call in enumerate(choice["message"].get("tool_calls") or ()):
            put(self._chunk({"tool_calls": [{"index": index, **call}]}))
        words = (choice["message"]["content"] or "").split(" ")
        for start in range(0, len(words), _CHUNK_WORDS) if choice["message"]["content"] else ():
            piece = " ".join(words[start:start + _CHUNK_WORDS])
            put(self._chunk({"content": piece if start == 0 else " " + piece}))
        put(self._chunk({}, choice["finish_reason"], cutover=body["cutover"]))
        put(orjson.dumps({
            "id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._name,
            "choices": [], "usage": body["usage"],
        }))
        self.known_cost = Decimal(result["cost"])
        put(b"[DONE]")

    async def batches(self) -> AsyncIterator[list[bytes]]:
        while True:
            item = await self._queue.get()
            if item is None:
                raise UpstreamStreamBroken(f"the {self._name} run failed")
            batch = [item]
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    self._queue.put_nowait(None)
                    break
                batch.append(nxt)
            yield batch
            if batch[-1] == b"[DONE]":
                return

    async def events(self) -> AsyncIterator[bytes]:
        async for batch in self.batches():
            for event in batch:
                yield event

    def abort(self) -> None:
        # Without an idempotency key nobody can collect the answer: stop paying for it.
        if not self._request.idempotency_key:
            self._task.cancel()
        self._queue.put_nowait(None)

    async def aclose(self) -> None:
        if self._task.done():
            with contextlib.suppress(BaseException):
                self._task.result()
