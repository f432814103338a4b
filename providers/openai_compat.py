"""Any OpenAI-compatible HTTP upstream, over one keep-alive connection pool per provider.

The pool is providers.http1 (httptools + asyncio), not aiohttp or httpx: on one core
their per-request CPU cost was most of the gateway's budget (bench/README.md).
Error messages raised from here name the provider, never its URL or key, because
they may reach logs.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from providers.base import UpstreamReply, UpstreamRequest
from providers.errors import (
    ProviderError,
    RequestUnsendable,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from providers.http1 import (
    ConnectionClosed,
    ConnectTimeout,
    HttpError,
    Origin,
    Pool,
    ProtocolError,
    ReadTimeout,
    Response,
)
from providers.scrub import scrubbed_error
from providers.sse_parser import SSEParser

_log = logging.getLogger("cutover.upstream")

_DONE = b"[DONE]"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAICompatProvider:
    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
        pool_size: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # Streams may legitimately run longer than `total`; for them it bounds the
        # wait for the first event instead (see open_stream).
        self._total_timeout = total_timeout
        self._pool_size = pool_size
        self._pool: Pool | None = None
        origin = Origin.parse(self._base_url)
        fixed = {"Host": origin.host_header, "Content-Type": "application/json", "User-Agent": "cutover",
                 **(headers or {})}
        if api_key:
            fixed["Authorization"] = f"Bearer {api_key}"
        self._fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._prefix = origin.prefix
        self._heads: dict[str, bytes] = {}
        # What an error answer must never carry to a client: the key, where the upstream lives, and any
        # configured header value long enough to be a credential.
        self._secrets = tuple(sorted(
            {v for v in (api_key, self._base_url, origin.host_header, origin.host) if v}
            | {v for v in (headers or {}).values() if len(v) >= 8},
            key=len, reverse=True,
        ))

    @property
    def ready(self) -> bool:
        return self._pool is not None and self._pool.ready

    async def start(self) -> None:
        if self._pool is None:
            self._pool = Pool(self._base_url, limit=self._pool_size, connect_timeout=self._connect_timeout)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _pool_or_fail(self) -> Pool:
        if self._pool is None:
            raise UpstreamConnectError(f"provider '{self.name}' is not started")
        return self._pool

    def _head(self, request: UpstreamRequest) -> bytes:
        head = self._heads.get(request.path)
        if head is None:
            head = f"POST {self._prefix}{request.path} HTTP/1.1\r\n".encode() + self._fixed_headers
            self._heads[request.path] = head
        return head + b"X-Request-Id: " + request.request_id.encode("latin-1", "replace") + b"\r\n"

    async def _status_error(self, resp: Response) -> UpstreamStatusError:
        try:
            raw = await resp.read()
        except HttpError:
            raw = b""
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("upstream error body", extra={"fields": {
                "provider": self.name, "status": resp.status, "body": raw[:4096].decode("utf-8", "replace")}})
        return UpstreamStatusError(
            resp.status, scrubbed_error(raw, self._secrets), parse_retry_after(resp.headers.get("retry-after"))
        )

    async def _open(self, request: UpstreamRequest, deadline: float) -> Response:
        """Send the request; a response whose head says 2xx (anything else is raised)."""
        try:
            body = orjson.dumps(request.payload)
        except orjson.JSONEncodeError as exc:
            raise RequestUnsendable(f"request for provider '{self.name}' could not be encoded: {exc}") from None
        resp = await self._pool_or_fail().request(
            self._head(request), body, read_timeout=self._read_timeout, deadline=deadline
        )
        if resp.status >= 300:
            raise await self._status_error(resp)
        return resp

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        # The total timeout is a deadline the pool's own read timers honour, not an
        # asyncio.timeout scope: that would cost a second timer per request (bench/README.md).
        deadline = time.monotonic() + self._total_timeout
        try:
            resp = await self._open(request, deadline)
            try:
                body = await resp.read()
            except BaseException:
                resp.close()
                raise
        except ProviderError:
            raise
        except Exception as exc:
            raise self._map_exception(exc) from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"provider '{self.name}' answered with invalid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(f"provider '{self.name}' answered with a non-object JSON body")
        required = _REQUIRED_LIST.get(request.path)
        found = data.get(required) if required is not None else None
        if required is not None and not (isinstance(found, list) and (found or required == "output")):
            # The SDK would crash on it, and a target answering so is not healthy: retry, fail over, count it.
            raise UpstreamProtocolError(f"provider '{self.name}' answered without '{required}'")
        if required == "output" and data.get("status") == "failed":
            raise UpstreamProtocolError(f"provider '{self.name}' answered with a failed response")
        content_type = resp.headers.get("content-type", "application/json")
        return UpstreamReply(status=resp.status, body=body, content_type=content_type, data=data)

    async def open_stream(self, request: UpstreamRequest) -> SSEStream:
        try:
            resp = await self._open(request, time.monotonic() + self._total_timeout)
            if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                resp.close()
                raise UpstreamProtocolError(f"provider '{self.name}' did not answer with an event stream")
            stream = SSEStream(self.name, resp, typed_end=request.path == "/responses")
            try:
                await stream.prime()
            except BaseException:
                resp.close()
                raise
            # From the first event on, only the read timeout applies: a stream may run long.
            resp.deadline = None
            return stream
        except ProviderError:
            raise
        except Exception as exc:
            raise self._map_exception(exc) from None

    def _map_exception(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, TimeoutError | ReadTimeout | ConnectTimeout):
            return UpstreamTimeout(f"provider '{self.name}' timed out")
        if isinstance(exc, ConnectionClosed):
            if exc.got_bytes:
                return UpstreamProtocolError(f"provider '{self.name}' sent a truncated response")
            return UpstreamConnectError(f"provider '{self.name}' closed the connection without answering")
        if isinstance(exc, ProtocolError):
            return UpstreamProtocolError(f"provider '{self.name}' sent a malformed response")
        if isinstance(exc, HttpError | OSError):
            return UpstreamConnectError(f"provider '{self.name}' could not be reached")
        return UpstreamProtocolError(f"provider '{self.name}' failed ({type(exc).__name__})")


# What a 2xx answer must carry, per endpoint, to be an answer at all.
_REQUIRED_LIST = {"/chat/completions": "choices", "/completions": "choices", "/embeddings": "data",
                  # A Responses answer cut short may have an empty output list; it must still have one.
                  "/responses": "output"}


class SSEStream:
    """An upstream event stream: `batches()` yields the data payloads that arrived together.

    Ends after `[DONE]`; raises UpstreamStreamBroken if the upstream closes first.
    Payloads that arrive in one read are handed over in one batch so the
    gateway can forward them to the client in one write.
    """

    def __init__(self, provider: str, resp: Response, *, typed_end: bool = False) -> None:
        self._provider = provider
        self._resp = resp
        # A Responses API stream ends with its final typed event, not with [DONE].
        self._typed_end = typed_end
        self._parser = SSEParser()
        self._first: list[bytes] | None = None
        self._done = False
        self._eof = False

    async def prime(self) -> None:
        """Read up to the first event, so a failure before any byte reaches the client can still fail over."""
        self._first = await self._read_batch()
        # A 200 whose first events are not JSON is garbage, not a stream. Rejecting it
        # here, before any byte reaches the client, lets the dispatcher retry or fall back.
        if _undecodable(self._first) is not None:
            raise UpstreamProtocolError(f"provider '{self._provider}' sent an undecodable event")

    async def _read_batch(self) -> list[bytes]:
        while not self._eof:
            chunk = await self._resp.read_chunk()
            if not chunk:
                self._eof = True
                batch = self._parser.flush()
            else:
                batch = self._parser.feed(chunk)
            if batch:
                return batch
        raise UpstreamStreamBroken(f"provider '{self._provider}' closed the stream before [DONE]")

    async def batches(self) -> AsyncIterator[list[bytes]]:
        try:
            batch = self._first if self._first is not None else await self._read_batch()
            self._first = None
            while True:
                end = _end_of(batch, self._typed_end)
                if end is not None:
                    self._done = True
                    batch = batch[: end + 1]
                bad = _undecodable(batch)
                if bad is not None:
                    # What came before it is the client's; the rest is a broken stream, never a clean end.
                    if bad:
                        yield batch[:bad]
                    self._done = False
                    raise UpstreamStreamBroken(f"provider '{self._provider}' sent an undecodable event")
                yield batch
                if self._done:
                    return
                batch = await self._read_batch()
        except ProviderError:
            raise
        except (TimeoutError, ReadTimeout):
            raise UpstreamTimeout(f"provider '{self._provider}' stalled mid-stream") from None
        except Exception:
            raise UpstreamStreamBroken(f"provider '{self._provider}' broke the stream") from None

    async def events(self) -> AsyncIterator[bytes]:
        async for batch in self.batches():
            for event in batch:
                yield event

    def abort(self) -> None:
        """Drop the connection now (the client left); a pending read then fails."""
        self._resp.close()

    async def aclose(self) -> None:
        # A stream abandoned half-way leaves unread bytes on the connection; only a
        # finished one may go back to the pool, once its body has been read to the end.
        if self._done:
            try:
                while await self._resp.read_chunk():
                    pass
            except HttpError:
                self._resp.close()
        else:
            self._resp.close()


# response.failed is not among them: the stream then ends without a clean end and is recorded as broken, so a
# failing upstream counts as one (the client still gets the upstream's own response.failed first).
_TYPED_ENDS = (b"response.completed", b"response.incomplete")


def _end_of(batch: list[bytes], typed: bool) -> int | None:
    """Index of the event that ends the stream: `[DONE]`, or for a Responses stream its final typed event
    (only events naming one are parsed to be sure of their type)."""
    if not typed:
        return batch.index(_DONE) if _DONE in batch else None
    for i, event in enumerate(batch):
        if event == _DONE:
            return i
        if any(end in event for end in _TYPED_ENDS):
            try:
                kind = orjson.loads(event).get("type")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if kind is not None and kind.encode() in _TYPED_ENDS:
                return i
    return None


def _undecodable(batch: list[bytes]) -> int | None:
    """Index of the first event that is neither JSON nor the end marker."""
    for i, event in enumerate(batch):
        if event != _DONE:
            try:
                orjson.loads(event)
            except orjson.JSONDecodeError:
                return i
    return None


def usage_of(data: dict[str, Any]) -> dict[str, Any] | None:
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else None
