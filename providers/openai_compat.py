"""Any OpenAI-compatible HTTP upstream, over one pooled keep-alive aiohttp session.

aiohttp rather than httpx on this path: on one core it forwards 2-4x more
requests per second (bench/README.md). Error messages raised from here name the
provider, never its URL or key, because they may reach logs.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from providers.base import (
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReply,
    UpstreamRequest,
    UpstreamStatusError,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from providers.sse_parser import SSEParser

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
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout, connect=connect_timeout, sock_read=read_timeout
        )
        # Streams may legitimately run longer than `total`; that bound applies
        # to getting the first event instead (see open_stream).
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._first_event_timeout = total_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, keepalive_timeout=30, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(), raise_for_status=False
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_or_fail(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamConnectError(f"provider '{self.name}' is not started")
        return self._session

    def _request_headers(self, request: UpstreamRequest) -> dict[str, str]:
        return {**self._headers, "X-Request-Id": request.request_id}

    def redact(self, body: bytes) -> bytes:
        """Upstream error bodies sometimes echo the key; never pass it on."""
        if self._api_key and self._api_key.encode() in body:
            return body.replace(self._api_key.encode(), b"[redacted]")
        return body

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        session = self._session_or_fail()
        url = self._base_url + request.path
        try:
            async with session.post(
                url, data=orjson.dumps(request.payload), headers=self._request_headers(request),
                timeout=self._timeout,
            ) as resp:
                body = await resp.read()
                content_type = resp.headers.get("Content-Type", "application/json")
                if resp.status >= 300:
                    raise UpstreamStatusError(
                        resp.status, self.redact(body), parse_retry_after(resp.headers.get("Retry-After"))
                    )
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
        return UpstreamReply(status=resp.status, body=body, content_type=content_type, data=data)

    async def open_stream(self, request: UpstreamRequest) -> SSEStream:
        session = self._session_or_fail()
        url = self._base_url + request.path
        try:
            async with asyncio.timeout(self._first_event_timeout):
                resp = await session.post(
                    url, data=orjson.dumps(request.payload), headers=self._request_headers(request),
                    timeout=self._stream_timeout,
                )
                if resp.status >= 300:
                    try:
                        body = await resp.read()
                    finally:
                        resp.release()
                    raise UpstreamStatusError(
                        resp.status, self.redact(body), parse_retry_after(resp.headers.get("Retry-After"))
                    )
                if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                    resp.close()
                    raise UpstreamProtocolError(f"provider '{self.name}' did not answer with an event stream")
                stream = SSEStream(self.name, resp)
                try:
                    await stream.prime()
                except BaseException:
                    resp.close()
                    raise
                return stream
        except ProviderError:
            raise
        except Exception as exc:
            raise self._map_exception(exc) from None

    def _map_exception(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return UpstreamTimeout(f"provider '{self.name}' timed out")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return UpstreamProtocolError(f"provider '{self.name}' sent a truncated body")
        if isinstance(exc, aiohttp.ClientResponseError):
            return UpstreamProtocolError(f"provider '{self.name}' sent a malformed response")
        if isinstance(exc, aiohttp.ClientError | OSError):
            return UpstreamConnectError(f"provider '{self.name}' could not be reached")
        return UpstreamProtocolError(f"provider '{self.name}' failed ({type(exc).__name__})")


class SSEStream:
    """An upstream event stream: `batches()` yields the data payloads that arrived together.

    Ends after `[DONE]`; raises UpstreamStreamBroken if the upstream closes first.
    Payloads that arrive in one read are handed over in one batch so the
    gateway can forward them to the client in one write.
    """

    def __init__(self, provider: str, resp: aiohttp.ClientResponse) -> None:
        self._provider = provider
        self._resp = resp
        self._parser = SSEParser()
        self._first: list[bytes] | None = None
        self._done = False
        self._eof = False

    async def prime(self) -> None:
        """Read up to the first event, so a failure before any byte reaches the client can still fail over."""
        self._first = await self._read_batch()
        # A 200 whose first event is not JSON is garbage, not a stream. Rejecting it
        # here, before any byte reaches the client, lets the dispatcher retry or fall back.
        if self._first[0] != _DONE:
            try:
                orjson.loads(self._first[0])
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError(f"provider '{self._provider}' sent an undecodable event") from None

    async def _read_batch(self) -> list[bytes]:
        content = self._resp.content
        while not self._eof:
            chunk = await content.readany()
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
                if _DONE in batch:
                    self._done = True
                    yield batch[: batch.index(_DONE) + 1]
                    return
                yield batch
                batch = await self._read_batch()
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
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
        # A stream abandoned half-way leaves unread bytes on the connection;
        # only a finished one may go back to the pool.
        if self._done:
            self._resp.release()
        else:
            self._resp.close()


def usage_of(data: dict[str, Any]) -> dict[str, Any] | None:
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else None
