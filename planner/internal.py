"""Model calls the meta-model makes, sent through the gateway's own hot path in-process.

An internal call is a synthetic ASGI request to /v1/chat/completions with a
per-process key that exists only in memory, so planner, executor and joiner calls
get exactly what a client call gets (aliases, retries, fallbacks, cool-downs,
migrations, metrics, cost headers) without a socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    alias: str
    provider: str
    model: str
    latency_s: float
    finish_reason: str | None


class CallFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class InternalCaller:
    def __init__(self, app: ASGIApp, key: str, caller_name: str) -> None:
        self._app = app
        self._authorization = b"Bearer " + key.encode()
        self._caller = caller_name.encode()

    async def complete(
        self,
        alias: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        request_id: str = "",
    ) -> CallResult:
        body: dict[str, Any] = {"model": alias, "messages": messages}
        if max_tokens:
            body["max_tokens"] = max_tokens
        if response_format is not None:
            body["response_format"] = response_format
        raw = orjson.dumps(body)
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
            "headers": [
                (b"authorization", self._authorization), (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()), (b"x-cutover-caller", self._caller),
                (b"x-cutover-parent-request", request_id.encode()),
            ],
        }
        delivered = False
        finished = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        status = 0
        headers: dict[bytes, bytes] = {}
        chunks: list[bytes] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.update(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        started = time.perf_counter()
        try:
            await self._app(scope, receive, send)
        finally:
            finished.set()
        latency = time.perf_counter() - started
        return _parse(alias, status, headers, b"".join(chunks), latency)


def _parse(alias: str, status: int, headers: dict[bytes, bytes], body: bytes, latency: float) -> CallResult:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if status != 200 or not isinstance(data, dict):
        message = "unreadable answer"
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = str(data["error"].get("message", message))
        raise CallFailed(status or 502, message)
    text, finish = "", None
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message_obj = choices[0].get("message") or {}
        content = message_obj.get("content") if isinstance(message_obj, dict) else None
        text = content if isinstance(content, str) else ""
        finish = choices[0].get("finish_reason")
    reported = data.get("usage")
    usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
    try:
        cost = Decimal(headers.get(b"x-cutover-cost-usd", b"0").decode())
    except InvalidOperation:
        cost = Decimal(0)
    return CallResult(
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cost=cost,
        alias=alias,
        provider=headers.get(b"x-cutover-provider", b"").decode(),
        model=headers.get(b"x-cutover-model", b"").decode(),
        latency_s=latency,
        finish_reason=finish if isinstance(finish, str) else None,
    )
