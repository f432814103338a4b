"""Each fault kind must look on the wire like the production failure it imitates."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import orjson
import pytest

from simulator import SimulatorServer, handlers
from simulator.validation import MAX_DIMENSIONS, MAX_INPUTS, MAX_VALUES
from simulator.wire import embeddings_body

SimFactory = Callable[..., Awaitable[SimulatorServer]]
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m", "messages": MESSAGES}


def _client(server: SimulatorServer, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=timeout)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limit(make_sim: SimFactory, stream: bool) -> None:
    sim = await make_sim(script=["rate_limit"], retry_after_s=2.5)
    async with _client(sim) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=MESSAGES, stream=stream)
    err = caught.value
    assert err.status_code == 429
    assert err.response.headers["Retry-After"] == "2.5"
    assert err.response.headers["x-cutover-simulator"] == "true"
    assert err.code == "rate_limit_exceeded"
    body = err.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.asyncio
async def test_retry_after_integer_seconds(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["rate_limit"])
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "status"), [("server_error", 500), ("unavailable", 503)])
async def test_server_side_statuses(make_sim: SimFactory, kind: str, status: int) -> None:
    sim = await make_sim(script=[kind, kind])
    async with _client(sim) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.InternalServerError):
            await client.embeddings.create(model="e", input="x")
    assert caught.value.status_code == status
    assert caught.value.response.json()["error"]["type"] == "server_error"


@pytest.mark.asyncio
async def test_garbage_non_stream(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["garbage", "garbage"])
    async with httpx.AsyncClient() as raw_client:
        resp = await raw_client.post(f"{sim.base_url}/chat/completions", json=CHAT)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(resp.content)
    async with _client(sim) as client:
        with pytest.raises(ValueError):  # json.JSONDecodeError inside the SDK
            await client.chat.completions.create(model="m", messages=MESSAGES)


@pytest.mark.asyncio
async def test_garbage_stream_fails_in_chunk_parser(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["garbage"])
    async with _client(sim) as client:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with pytest.raises(ValueError):
            _ = [chunk async for chunk in stream]


@pytest.mark.asyncio
async def test_malformed_answers_lack_their_shape(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["malformed", "malformed"])
    async with httpx.AsyncClient() as client:
        chat = await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
        embed = await client.post(f"{sim.base_url}/embeddings", json={"model": "e", "input": "x"})
    assert chat.status_code == embed.status_code == 200
    assert "choices" not in chat.json() and chat.json()["object"] == "chat.completion"
    assert "data" not in embed.json() and embed.json()["object"] == "list"


@pytest.mark.asyncio
@pytest.mark.parametrize("per_token_ms", [0.0, 5.0])
async def test_malformed_stream_ends_as_if_clean(make_sim: SimFactory, per_token_ms: float) -> None:
    sim = await make_sim(script=["malformed"], output_tokens=10, per_token_ms=per_token_ms)
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{sim.base_url}/chat/completions", json={**CHAT, "stream": True})
    frames = [f.removeprefix(b"data: ") for f in resp.content.split(b"\n\n") if f]
    # role chunk + half of the 10 content chunks, the bad line, then a normal-looking end
    assert len(frames) == 1 + 5 + 2
    assert frames[-1] == b"[DONE]"
    for frame in frames[:6]:
        orjson.loads(frame)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(frames[6])


@pytest.mark.asyncio
async def test_stream_break_raw(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["stream_break"], output_tokens=10)
    received = b""
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", f"{sim.base_url}/chat/completions", json={**CHAT, "stream": True}) as resp:
            assert resp.status_code == 200
            with pytest.raises(httpx.HTTPError):
                async for piece in resp.aiter_bytes():
                    received += piece
    frames = [f for f in received.split(b"\n\n") if f]
    assert b"[DONE]" not in received
    assert b'finish_reason":"stop' not in received
    # role chunk + half of the 10 content chunks
    assert len(frames) == 1 + 5


@pytest.mark.asyncio
async def test_stream_break_sdk(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["stream_break"], per_token_ms=1)
    chunks = []
    async with _client(sim) as client:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
            async for chunk in stream:
                chunks.append(chunk)
    assert 1 < len(chunks) < 1 + 16
    assert all(c.choices[0].finish_reason is None for c in chunks)


@pytest.mark.asyncio
async def test_stream_break_non_stream(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["stream_break", "stream_break"])
    async with _client(sim) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.APIConnectionError):
            await client.embeddings.create(model="e", input="x")


@pytest.mark.asyncio
async def test_timeout_hits_client_timeout(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["timeout"], hang_s=10)
    started = time.monotonic()
    async with _client(sim, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_timeout_hang_then_close_without_answer(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["timeout"], hang_s=0.2)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
    assert 0.15 < time.monotonic() - started < 2
    [entry] = sim.requests
    assert entry.outcome == "timeout"
    assert entry.ended_at is not None and entry.ended_at - entry.started_at >= 0.15


@pytest.mark.asyncio
async def test_stop_does_not_wait_for_hanging_requests(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["timeout"], hang_s=30)
    async with httpx.AsyncClient(timeout=5) as client:
        pending = asyncio.ensure_future(client.post(f"{sim.base_url}/chat/completions", json=CHAT))
        for _ in range(200):
            if sim.requests:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await sim.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.HTTPError):
            await pending


@pytest.mark.asyncio
async def test_random_errors_after_script(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["ok"], error_rate=1.0, error_kinds={"unavailable": 1.0}, seed=3)
    async with _client(sim) as client:
        await client.chat.completions.create(model="m", messages=MESSAGES)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="m", messages=MESSAGES)
    assert [r.outcome for r in sim.requests] == ["ok", "unavailable", "unavailable", "unavailable"]


# --- sizes: a test double that shares the gateway's event loop must not let one request stall it ----------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "dimensions": 816980841}, "dimensions"),
        ({"input": "x", "dimensions": MAX_DIMENSIONS + 1}, "dimensions"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": ["x"] * (MAX_INPUTS + 1)}, "input"),
        ({"input": ["x"] * 2048, "dimensions": 3072}, "dimensions"),
    ],
)
async def test_embedding_sizes_are_bounded(make_sim: SimFactory, body: dict[str, Any], param: str) -> None:
    sim = await make_sim()
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{sim.base_url}/embeddings", json={"model": "e", **body})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param


@pytest.mark.asyncio
async def test_big_embeddings_are_built_off_the_event_loop(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []

    def recording(*args: Any) -> bytes:
        threads.append(threading.get_ident())
        return embeddings_body(*args)

    monkeypatch.setattr(handlers, "embeddings_body", recording)
    sim = await make_sim()
    inputs = ["some text"] * (MAX_VALUES // MAX_DIMENSIONS)
    async with _client(sim, timeout=60) as client:
        small = await client.embeddings.create(model="e", input="x", dimensions=8)
        big = await client.embeddings.create(model="e", input=inputs, dimensions=MAX_DIMENSIONS)
    assert len(small.data[0].embedding) == 8
    assert [len(d.embedding) for d in big.data] == [MAX_DIMENSIONS] * len(inputs)
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread, "a small answer is not worth a thread hop"
    assert threads[1] != loop_thread
