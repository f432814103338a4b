"""OpenAICompatProvider against small aiohttp servers on 127.0.0.1, one failure mode at a time."""

from __future__ import annotations

import asyncio
import email.utils
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from providers.base import UpstreamRequest
from providers.errors import (
    RequestUnsendable,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from providers.openai_compat import OpenAICompatProvider, SSEStream, parse_retry_after, usage_of

API_KEY = "sk-upstream-secret-123"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHAT = UpstreamRequest(path="/chat/completions", payload={"model": "m", "messages": []}, stream=False,
                       request_id="req-1")
ANSWER_CHOICE = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
STREAM = UpstreamRequest(path="/chat/completions", payload={"model": "m", "messages": [], "stream": True},
                         stream=True, request_id="req-2")


class Upstream:
    """One fake upstream: `handler` answers POST /v1/chat/completions and /v1/embeddings; requests are recorded."""

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.seen: list[tuple[CIMultiDict[str], bytes]] = []
        # Handlers that must "hang" wait on this; teardown sets it so the server can stop at once.
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.headers.copy(), await request.read()))
        assert self.handler is not None
        return await self.handler(request)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}/v1"


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    fake = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.dispatch)
    app.router.add_post("/v1/embeddings", fake.dispatch)
    app.router.add_post("/v1/responses", fake.dispatch)
    fake.server = TestServer(app, host="127.0.0.1", port=0)
    await fake.server.start_server()
    try:
        yield fake
    finally:
        fake.release.set()
        await fake.server.close()


def make_provider(base_url: str, *, api_key: str | None = API_KEY, read: float = 2.0, total: float = 5.0,
                  headers: dict[str, str] | None = None) -> OpenAICompatProvider:
    return OpenAICompatProvider(
        "up", base_url, api_key, connect_timeout=2.0, read_timeout=read, total_timeout=total, pool_size=4,
        headers=headers,
    )


@pytest_asyncio.fixture
async def provider(upstream: Upstream) -> AsyncIterator[OpenAICompatProvider]:
    client = make_provider(upstream.base_url, headers={"X-Org": "team-a"})
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def reply_json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                            headers=headers)

    return handler


def reply_raw(body: bytes, status: int = 200, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type=content_type, headers=headers)

    return handler


def sse(chunks: list[bytes], *, hang_after: bool = False, release: asyncio.Event | None = None,
        content_type: str = "text/event-stream") -> Handler:
    """Write each chunk as its own network write, so parsing across chunk boundaries is exercised."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
        if hang_after and release is not None:
            await release.wait()
        return resp

    return handler


async def events_until_broken(stream: SSEStream) -> list[bytes]:
    """The events a stream delivered before it broke (it must break)."""
    seen: list[bytes] = []
    with pytest.raises(UpstreamStreamBroken):
        async for event in stream.events():
            seen.append(event)
    await stream.aclose()
    return seen


async def collect(stream: SSEStream) -> list[bytes]:
    events = [event async for event in stream.events()]
    await stream.aclose()
    return events


# --- Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), (" 1.5 ", 1.5), ("0", 0.0), ("-3", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(30.0)
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0


# --- send ----------------------------------------------------------------------


async def test_send_success_headers_and_body(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    answer = {"id": "x", "choices": [ANSWER_CHOICE], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    upstream.handler = reply_json(answer)
    reply = await provider.send(CHAT)
    assert reply.status == 200
    assert reply.data == answer
    assert orjson.loads(reply.body) == answer
    assert reply.content_type.startswith("application/json")
    assert usage_of(reply.data) == answer["usage"]
    [(headers, body)] = upstream.seen
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["X-Org"] == "team-a"
    assert headers["X-Request-Id"] == "req-1"
    assert headers["Content-Type"] == "application/json"
    assert orjson.loads(body) == CHAT.payload


async def test_no_api_key_sends_no_authorization(upstream: Upstream) -> None:
    upstream.handler = reply_json({"choices": [ANSWER_CHOICE]})
    client = make_provider(upstream.base_url, api_key=None)
    await client.start()
    try:
        await client.send(CHAT)
    finally:
        await client.close()
    assert "Authorization" not in upstream.seen[0][0]


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_wait", "retryable", "kind"),
    [
        (429, "3", 3.0, True, "rate_limited"),
        (503, "1.5", 1.5, True, "http_5xx"),
        (500, None, None, True, "http_5xx"),
        (408, None, None, True, "http_4xx"),
        (400, None, None, False, "http_4xx"),
        (404, None, None, False, "http_4xx"),
    ],
)
async def test_status_errors(
    upstream: Upstream, provider: OpenAICompatProvider, status: int, retry_after: str | None,
    expected_wait: float | None, retryable: bool, kind: str,
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else None
    upstream.handler = reply_json({"error": {"message": "nope"}}, status=status, headers=headers)
    with pytest.raises(UpstreamStatusError) as caught:
        await provider.send(CHAT)
    err = caught.value
    assert err.status == status
    assert err.retry_after_s == expected_wait
    assert err.retryable is retryable
    assert err.kind == kind
    assert orjson.loads(err.body) == {"error": {"message": "nope", "type": None, "param": None, "code": None}}


async def test_upstream_key_redacted_from_echoed_error(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    echoed = f'{{"error": {{"message": "Incorrect API key provided: {API_KEY}. Check {API_KEY}"}}}}'.encode()
    upstream.handler = reply_raw(echoed, status=401)
    with pytest.raises(UpstreamStatusError) as caught:
        await provider.send(CHAT)
    assert API_KEY.encode() not in caught.value.body
    assert caught.value.body.count(b"[redacted]") == 2
    assert API_KEY not in str(caught.value)


async def test_upstream_error_bodies_keep_only_the_four_fields_scrubbed(
    upstream: Upstream, provider: OpenAICompatProvider, caplog: pytest.LogCaptureFixture
) -> None:
    host = upstream.base_url.split("//")[1].split("/")[0]
    message = (f"Model not found on {host} (see {upstream.base_url}/models); key sk-proj-****{API_KEY[-4:]}, "
               "deployment llm-east.internal.example.com:8443, node 10.0.3.7")
    echoed = {"error": {"message": message, "type": "invalid_request_error", "param": "model",
                        "code": "model_not_found", "internal": {"trace": upstream.base_url}}, "debug": API_KEY}
    upstream.handler = reply_json(echoed, status=404)
    with caplog.at_level("DEBUG", logger="cutover.upstream"), pytest.raises(UpstreamStatusError) as caught:
        await provider.send(CHAT)
    error = orjson.loads(caught.value.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_not_found")
    for leaked in (host, "127.0.0.1", upstream.base_url, API_KEY[-4:], "internal.example.com", "8443", "10.0.3.7"):
        assert leaked not in error["message"], (leaked, error["message"])
    assert error["message"].startswith("Model not found on [redacted]")
    # The raw answer is kept for whoever debugs the upstream, at debug level only.
    [record] = [r for r in caplog.records if r.name == "cutover.upstream"]
    assert record.levelname == "DEBUG" and "internal.example.com" in record.fields["body"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [b"<html>nginx: 404 at 10.0.0.1</html>", b'{"detail": "no"}', b"[1]"])
async def test_an_error_body_not_shaped_like_openais_is_not_relayed(
    upstream: Upstream, provider: OpenAICompatProvider, body: bytes
) -> None:
    upstream.handler = reply_raw(body, status=400, content_type="text/html")
    with pytest.raises(UpstreamStatusError) as caught:
        await provider.send(CHAT)
    assert caught.value.body == b""


async def test_invalid_json_is_protocol_error(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    upstream.handler = reply_raw(b"<html>gateway hiccup</html>", content_type="text/html")
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.send(CHAT)
    # Messages may reach logs: they name the provider, not its URL.
    assert "'up'" in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_payload_that_cannot_be_encoded_is_never_sent(
    upstream: Upstream, provider: OpenAICompatProvider, stream: bool
) -> None:
    deep: Any = "x"
    for _ in range(300):  # orjson refuses past 255 levels
        deep = [deep]
    request = UpstreamRequest(path="/chat/completions", payload={"model": "m", "metadata": deep}, stream=stream,
                              request_id="req-3")
    with pytest.raises(RequestUnsendable):
        await (provider.open_stream(request) if stream else provider.send(request))
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/chat/completions", {"id": "x", "object": "chat.completion"}),
        ("/chat/completions", {"id": "x", "choices": []}),
        ("/chat/completions", {"id": "x", "choices": None}),
        ("/embeddings", {"object": "list", "model": "m"}),
        ("/embeddings", {"object": "list", "data": "nope"}),
    ],
)
async def test_a_2xx_without_the_endpoints_shape_is_protocol_error(
    upstream: Upstream, provider: OpenAICompatProvider, path: str, answer: dict[str, Any]
) -> None:
    upstream.handler = reply_json(answer)
    request = UpstreamRequest(path=path, payload={"model": "m"}, stream=False, request_id="req-4")
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.send(request)
    assert "without" in str(caught.value)


async def test_non_object_json_is_protocol_error(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    upstream.handler = reply_raw(b"[1, 2, 3]")
    with pytest.raises(UpstreamProtocolError):
        await provider.send(CHAT)


def _closed_port() -> int:
    # Bound then closed: nothing listens there, so a connect is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused_is_connect_error(stream: bool) -> None:
    client = make_provider(f"http://127.0.0.1:{_closed_port()}/v1")
    await client.start()
    try:
        with pytest.raises(UpstreamConnectError) as caught:
            if stream:
                await client.open_stream(STREAM)
            else:
                await client.send(CHAT)
    finally:
        await client.close()
    assert "127.0.0.1" not in str(caught.value)


async def test_not_started_is_connect_error() -> None:
    client = make_provider("http://127.0.0.1:1/v1")
    assert not client.ready
    with pytest.raises(UpstreamConnectError):
        await client.send(CHAT)


async def test_ready_follows_lifecycle(upstream: Upstream) -> None:
    client = make_provider(upstream.base_url)
    await client.start()
    assert client.ready
    await client.close()
    assert not client.ready


@pytest.mark.parametrize(("read", "total"), [(0.2, 5.0), (5.0, 0.2)], ids=["read-timeout", "total-timeout"])
async def test_a_server_that_never_answers_is_a_timeout(upstream: Upstream, read: float, total: float) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await upstream.release.wait()
        return web.Response(text="{}")

    upstream.handler = hang
    client = make_provider(upstream.base_url, read=read, total=total)
    await client.start()
    try:
        with pytest.raises(UpstreamTimeout):
            await client.send(CHAT)
    finally:
        await client.close()


# --- streams ---------------------------------------------------------------------


async def test_sse_parsing(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    upstream.handler = sse(
        [
            b": keep-alive\r\n\r\n",
            b"event: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n",
            b"data:{\"b\":2}\n\n",  # no space after the colon, LF only
            b"data: {\"c\":\r\ndata: 3}\r\n\r\n",
            b"data: {\"split\": ",
            b"\"across writes\"}\r\n",
            b"\r\n: trailing comment\r\n\r\n",
            b"data: [DONE]\r\n\r\n",
        ]
    )
    stream = await provider.open_stream(STREAM)
    events = await collect(stream)
    assert events == [b'{"a":1}', b'{"b":2}', b'{"c":\n3}', b'{"split": "across writes"}', b"[DONE]"]
    headers, _ = upstream.seen[0]
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["X-Org"] == "team-a"


async def test_stream_events_after_done_are_not_read(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    upstream.handler = sse([b"data: 1\n\n", b"data: [DONE]\n\n", b"data: after\n\n"])
    assert await collect(await provider.open_stream(STREAM)) == [b"1", b"[DONE]"]


async def test_stream_closed_before_done_is_broken(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    upstream.handler = sse([b"data: {\"a\":1}\n\n", b"data: {\"b\":2}\n\n"])
    seen = await events_until_broken(await provider.open_stream(STREAM))
    assert seen == [b'{"a":1}', b'{"b":2}']


async def test_unterminated_last_event_is_delivered_then_broken(
    upstream: Upstream, provider: OpenAICompatProvider
) -> None:
    upstream.handler = sse([b'data: {"n": 1}\n\n', b'data: {"n": 2}'])
    seen = await events_until_broken(await provider.open_stream(STREAM))
    assert seen == [b'{"n": 1}', b'{"n": 2}']


@pytest.mark.parametrize("bad", [b"data: {\"n\": 2,\n\n", b"data: <html>oops</html>\n\n"])
async def test_an_undecodable_event_mid_stream_breaks_it(
    upstream: Upstream, provider: OpenAICompatProvider, bad: bytes
) -> None:
    # Delivered up to the bad event, then broken: never relayed, never followed by a clean end.
    upstream.handler = sse([b'data: {"n": 1}\n\n', b'data: {"n": 1.5}\n\n' + bad + b'data: {"n": 3}\n\n',
                            b"data: [DONE]\n\n"])
    seen = await events_until_broken(await provider.open_stream(STREAM))
    assert seen == [b'{"n": 1}', b'{"n": 1.5}']


async def test_an_undecodable_event_before_any_byte_fails_the_open(
    upstream: Upstream, provider: OpenAICompatProvider
) -> None:
    # Only the first read is primed; both its events are checked, so the dispatcher can still fail over.
    upstream.handler = sse([b'data: {"n": 1}\n\ndata: {broken\n\n', b"data: [DONE]\n\n"])
    with pytest.raises(UpstreamProtocolError):
        await provider.open_stream(STREAM)


async def test_stream_closed_before_first_event_fails_on_open(
    upstream: Upstream, provider: OpenAICompatProvider
) -> None:
    # Failing in open_stream (not mid-stream) is what lets the dispatcher fall back.
    upstream.handler = sse([b": only a comment\n\n"])
    with pytest.raises(UpstreamStreamBroken):
        await provider.open_stream(STREAM)


async def test_stream_wrong_content_type_is_protocol_error(
    upstream: Upstream, provider: OpenAICompatProvider
) -> None:
    upstream.handler = reply_json({"id": "not-a-stream"})
    with pytest.raises(UpstreamProtocolError):
        await provider.open_stream(STREAM)


async def test_stream_status_error_keeps_retry_after_and_redacts(
    upstream: Upstream, provider: OpenAICompatProvider
) -> None:
    upstream.handler = reply_raw(f'{{"error": "bad key {API_KEY}"}}'.encode(), status=429,
                                 headers={"Retry-After": "4"})
    with pytest.raises(UpstreamStatusError) as caught:
        await provider.open_stream(STREAM)
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 4.0
    assert API_KEY.encode() not in caught.value.body


async def test_stream_first_event_bounded_by_total(upstream: Upstream) -> None:
    upstream.handler = sse([b": waiting\n\n"], hang_after=True, release=upstream.release)
    client = make_provider(upstream.base_url, read=5.0, total=0.2)
    await client.start()
    try:
        with pytest.raises(UpstreamTimeout):
            await client.open_stream(STREAM)
    finally:
        await client.close()


async def test_stream_stall_mid_stream_is_timeout(upstream: Upstream) -> None:
    upstream.handler = sse([b'data: {"n": 1}\n\n'], hang_after=True, release=upstream.release)
    client = make_provider(upstream.base_url, read=0.2, total=5.0)
    await client.start()
    try:
        stream = await client.open_stream(STREAM)
        seen: list[bytes] = []
        with pytest.raises(UpstreamTimeout):
            async for event in stream.events():
                seen.append(event)
        await stream.aclose()
        assert seen == [b'{"n": 1}']
    finally:
        await client.close()


async def test_abort_breaks_a_pending_stream(upstream: Upstream, provider: OpenAICompatProvider) -> None:
    upstream.handler = sse([b'data: {"n": 1}\n\n'], hang_after=True, release=upstream.release)
    stream = await provider.open_stream(STREAM)
    events = stream.events()
    assert await events.__anext__() == b'{"n": 1}'
    stream.abort()
    with pytest.raises(UpstreamStreamBroken):
        await events.__anext__()
    await stream.aclose()


# --- malformed HTTP, from a raw socket server ------------------------------------------


async def _send_to_raw_server(raw: bytes) -> None:
    """Answer the request with exactly `raw` and hang up; aiohttp.web would never send such bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = make_provider(f"http://127.0.0.1:{port}/v1")
    await client.start()
    try:
        await client.send(CHAT)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_truncated_body_is_protocol_error() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":"
    with pytest.raises(UpstreamProtocolError, match="truncated"):
        await _send_to_raw_server(raw)


async def test_malformed_status_line_is_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="malformed"):
        await _send_to_raw_server(b"NONSENSE\r\n\r\n")


async def test_hang_up_without_answer_is_connect_error() -> None:
    with pytest.raises(UpstreamConnectError):
        await _send_to_raw_server(b"")


def test_unexpected_exception_maps_to_protocol_error() -> None:
    client = make_provider("http://127.0.0.1:1/v1")
    mapped = client._map_exception(ValueError("odd"))
    assert isinstance(mapped, UpstreamProtocolError)
    assert "ValueError" in str(mapped)


def _typed(kind: str, **payload: Any) -> bytes:
    return b"data: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


async def test_a_responses_stream_ends_at_its_final_event_and_a_failed_one_is_broken(
    upstream: Upstream, provider: OpenAICompatProvider
) -> None:
    request = UpstreamRequest(path="/responses", payload={"model": "m", "stream": True}, stream=True,
                              request_id="req-5")
    upstream.handler = sse([_typed("response.created"), _typed("response.completed", response={"output": []}),
                            _typed("response.after")])
    assert [orjson.loads(e)["type"] for e in await collect(await provider.open_stream(request))] == [
        "response.created", "response.completed"]
    upstream.handler = sse([_typed("response.created"), _typed("response.failed", response={"status": "failed"})])
    seen = await events_until_broken(await provider.open_stream(request))
    assert [orjson.loads(e)["type"] for e in seen] == ["response.created", "response.failed"]


async def test_a_failed_responses_answer_is_an_upstream_failure(
    upstream: Upstream, provider: OpenAICompatProvider
) -> None:
    upstream.handler = reply_json({"object": "response", "status": "failed", "output": [],
                                   "error": {"code": "server_error", "message": "boom"}})
    with pytest.raises(UpstreamProtocolError):
        await provider.send(UpstreamRequest(path="/responses", payload={"model": "m"}, stream=False,
                                            request_id="req-6"))
