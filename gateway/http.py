"""The few raw-ASGI helpers the hot path needs (it bypasses FastAPI for speed)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.responses import JSONResponse

from gateway.connection import BODY_TIMED_OUT
from gateway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"


class JSONBytes(JSONResponse):
    """A JSON response rendered with orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ClientDisconnected(Exception):
    """The client went away before its request was read."""


def new_request_id() -> str:
    # An identifier, not a secret: 128 bits from the random module (seeded from the OS,
    # and re-seeded in a forked child) cost no system call, unlike os.urandom or uuid4.
    return f"req_{random.getrandbits(128):032x}"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.") from None
        if length > limit:
            raise PayloadTooLarge(f"The request body is {length} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if scope.get(BODY_TIMED_OUT):
            raise RequestTimeout("The request body did not arrive in time.")


async def send_response(
    send: Send, status: int, body: bytes, headers: Headers, content_type: bytes = JSON
) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})
