"""Control endpoints, scripting, recording, validation and latency."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest

from simulator import SimulationSettings, SimulatorServer

SimFactory = Callable[..., Awaitable[SimulatorServer]]
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m", "messages": MESSAGES}


def _root(server: SimulatorServer) -> str:
    return server.base_url.removesuffix("/v1")


async def _chat_status(client: httpx.AsyncClient, server: SimulatorServer) -> int:
    resp = await client.post(f"{server.base_url}/chat/completions", json=CHAT)
    return resp.status_code


@pytest.mark.asyncio
async def test_script_consumed_in_order(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["ok", "rate_limit", "server_error", "ok", "unavailable"])
    async with httpx.AsyncClient() as client:
        statuses = [await _chat_status(client, sim) for _ in range(6)]
    assert statuses == [200, 429, 500, 200, 503, 200]


@pytest.mark.asyncio
async def test_script_shared_by_chat_and_embeddings(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["ok", "rate_limit"])
    async with httpx.AsyncClient() as client:
        first = await client.post(f"{sim.base_url}/embeddings", json={"model": "e", "input": "x"})
        second = await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
    assert (first.status_code, second.status_code) == (200, 429)


@pytest.mark.asyncio
async def test_put_behaviour_replaces_settings_and_restarts_script(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["server_error"])
    root = _root(sim)
    async with httpx.AsyncClient() as client:
        assert await _chat_status(client, sim) == 500
        assert await _chat_status(client, sim) == 200
        put = await client.put(f"{root}/_sim/behaviour", json={"script": ["unavailable"], "output_tokens": 2})
        assert put.status_code == 200
        assert put.json()["output_tokens"] == 2
        assert await _chat_status(client, sim) == 503
        ok = await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
        current = (await client.get(f"{root}/_sim/behaviour")).json()
        put_again = await client.put(f"{root}/_sim/behaviour", json={"script": ["unavailable"]})
        assert put_again.status_code == 200
        assert await _chat_status(client, sim) == 503
    assert ok.json()["usage"]["completion_tokens"] == 2
    assert current == SimulationSettings(script=["unavailable"], output_tokens=2).model_dump(mode="json")
    assert sim.settings.output_tokens == 16  # PUT replaces, it does not merge


@pytest.mark.asyncio
async def test_patch_behaviour_merges(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient() as client:
        await client.patch(f"{_root(sim)}/_sim/behaviour", json={"output_tokens": 3})
        resp = await client.patch(f"{_root(sim)}/_sim/behaviour", json={"reply": "fixed"})
    assert resp.status_code == 200
    assert (sim.settings.output_tokens, sim.settings.reply) == (3, "fixed")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad",
    [b"not json", b"[1, 2]", b'{"error_rate": 2}', b'{"script": ["boom"]}', b'{"surprise": 1}'],
)
async def test_bad_behaviour_is_400_and_keeps_settings(make_sim: SimFactory, bad: bytes) -> None:
    sim = await make_sim(output_tokens=5)
    async with httpx.AsyncClient() as client:
        resp = await client.put(
            f"{_root(sim)}/_sim/behaviour", content=bad, headers={"content-type": "application/json"}
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert sim.settings.output_tokens == 5


@pytest.mark.asyncio
async def test_requests_are_recorded_with_times(make_sim: SimFactory) -> None:
    sim = await make_sim(first_token_ms=30, script=["ok", "rate_limit"])
    before = time.time()
    async with httpx.AsyncClient() as client:
        headers = {"Authorization": "Bearer secret-1", "X-Request-Id": "req-42"}
        await client.post(f"{sim.base_url}/chat/completions", json={**CHAT, "stream": True}, headers=headers)
        await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
        await client.post(f"{sim.base_url}/chat/completions", json={"model": "m"})
        records: list[dict[str, Any]] = (await client.get(f"{_root(sim)}/_sim/requests")).json()
        cleared = await client.delete(f"{_root(sim)}/_sim/requests")
        after_clear = (await client.get(f"{_root(sim)}/_sim/requests")).json()
    first, second, invalid = records
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert first["path"] == "/v1/chat/completions" and first["model"] == "m" and first["stream"] is True
    assert first["body"] == {**CHAT, "stream": True}
    assert first["headers"] == {"authorization": "Bearer secret-1", "x-request-id": "req-42"}
    assert first["outcome"] == "ok" and second["outcome"] == "rate_limit"
    assert invalid["outcome"] == "invalid_request"
    assert before <= first["started_at"] <= first["ended_at"] <= second["started_at"] <= second["ended_at"]
    assert first["ended_at"] - first["started_at"] >= 0.025
    assert second["headers"]["x-request-id"] is None
    assert cleared.json() == {"cleared": 3}
    assert after_clear == []


@pytest.mark.asyncio
async def test_recording_can_be_disabled_or_bounded(make_sim: SimFactory) -> None:
    off = await make_sim(record=False)
    bounded = await make_sim(record_limit=2)
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            await client.post(f"{off.base_url}/chat/completions", json=CHAT)
            await client.post(f"{bounded.base_url}/chat/completions", json=CHAT)
    assert off.requests == []
    assert [r.seq for r in bounded.requests] == [2, 3]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("chat/completions", {"messages": MESSAGES}, "model"),
        ("chat/completions", {"model": "m"}, "messages"),
        ("chat/completions", {"model": "m", "messages": []}, "messages"),
        ("chat/completions", {"model": 3, "messages": MESSAGES}, "model"),
        ("chat/completions", {**CHAT, "max_tokens": "many"}, "max_tokens"),
        ("chat/completions", [1, 2], None),
        ("embeddings", {"model": "e"}, "input"),
        # Token arrays are valid input, as with OpenAI; a mixed array is not.
        ("embeddings", {"model": "e", "input": [1, "two"]}, "input"),
        ("embeddings", {"input": "x"}, "model"),
    ],
)
async def test_bad_input_gives_openai_400(sim: SimulatorServer, path: str, payload: Any, param: str | None) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{sim.base_url}/{path}", json=payload)
    assert resp.status_code == 400
    assert resp.headers["x-cutover-simulator"] == "true"
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.asyncio
async def test_invalid_json_body_via_sdk(sim: SimulatorServer) -> None:
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=[])
    assert caught.value.status_code == 400


@pytest.mark.asyncio
async def test_invalid_requests_do_not_consume_the_script(make_sim: SimFactory) -> None:
    sim = await make_sim(script=["rate_limit"])
    async with httpx.AsyncClient() as client:
        bad = await client.post(f"{sim.base_url}/chat/completions", json={"model": "m"})
        good = await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
    assert (bad.status_code, good.status_code) == (400, 429)


@pytest.mark.asyncio
async def test_every_response_is_labelled(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient() as client:
        responses = [
            await client.get(f"{sim.base_url}/models"),
            await client.get(f"{_root(sim)}/_sim/behaviour"),
            await client.get(f"{_root(sim)}/nope"),
            await client.post(f"{sim.base_url}/embeddings", json={"model": "e", "input": "x"}),
        ]
    assert all(r.headers["x-cutover-simulator"] == "true" for r in responses)
    assert responses[2].status_code == 404


@pytest.mark.asyncio
async def test_latency_settings(make_sim: SimFactory) -> None:
    sim = await make_sim(first_token_ms=100, per_token_ms=10, output_tokens=5)
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        await client.post(f"{sim.base_url}/chat/completions", json=CHAT)
        whole = time.monotonic() - started
        started = time.monotonic()
        async with client.stream("POST", f"{sim.base_url}/chat/completions", json={**CHAT, "stream": True}) as r:
            first_at = None
            async for _ in r.aiter_bytes():
                if first_at is None:
                    first_at = time.monotonic() - started
        streamed = time.monotonic() - started
    assert 0.14 <= whole < 0.6  # 100 ms + 5 x 10 ms
    assert first_at is not None and 0.09 <= first_at < 0.5
    assert 0.13 <= streamed < 0.6  # 100 ms + 4 gaps of 10 ms


@pytest.mark.asyncio
async def test_jitter_never_negative_and_seeded(make_sim: SimFactory) -> None:
    sim = await make_sim(first_token_ms=0, jitter_ms=20, seed=1)
    delays = [sim.state.first_delay_s(sim.settings) for _ in range(200)]
    assert min(delays) == 0.0 and max(delays) <= 0.02
    sim.set_settings(SimulationSettings(first_token_ms=0, jitter_ms=20, seed=1))
    assert [sim.state.first_delay_s(sim.settings) for _ in range(200)] == delays
