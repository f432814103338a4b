"""The official openai SDK must accept everything the simulator sends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest

from simulator import BackgroundSimulator, SimulationSettings, SimulatorServer

SimFactory = Callable[..., Awaitable[SimulatorServer]]

MESSAGES = [{"role": "user", "content": "Say hello"}]  # 4 + ceil(9/4) = 7 prompt tokens


def _client(server: SimulatorServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)


@pytest.mark.asyncio
async def test_non_stream_completion_shape(sim: SimulatorServer) -> None:
    async with _client(sim) as client:
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    completion = raw.parse()
    assert raw.headers["x-cutover-simulator"] == "true"
    assert completion.id.startswith("chatcmpl-sim-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.system_fingerprint == "cutover-simulator"
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.logprobs is None
    assert choice.message.role == "assistant" and choice.message.refusal is None
    assert choice.message.content is not None and choice.message.content.startswith("[simulated]")
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 16, 23)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.asyncio
async def test_stream_without_usage(sim: SimulatorServer) -> None:
    async with _client(sim) as client:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert len(chunks) == 1 + 16 + 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text.startswith("[simulated]")


@pytest.mark.asyncio
async def test_stream_include_usage(sim: SimulatorServer) -> None:
    async with _client(sim) as client:
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (7, 16, 23)
    assert all(chunk.usage is None for chunk in body)
    assert body[-1].choices[0].finish_reason == "stop"


@pytest.mark.asyncio
async def test_stream_raw_frames_carry_explicit_null_usage(sim: SimulatorServer) -> None:
    request = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 2,
    }
    async with httpx.AsyncClient() as client:
        raw = await client.post(f"{sim.base_url}/chat/completions", json=request)
    frames = [frame for frame in raw.text.split("\n\n") if frame]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("\n\n")
    assert len(frames) == 1 + 2 + 1 + 1 + 1
    assert frames[-1] == "data: [DONE]"
    assert all('"usage":null' in frame for frame in frames[:-2])
    assert '"choices":[],"usage":{' in frames[-2]


@pytest.mark.asyncio
@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_caps_output(sim: SimulatorServer, param: str) -> None:
    async with _client(sim) as client:
        completion = await client.chat.completions.create(model="m", messages=MESSAGES, **{param: 3})
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **{param: 3}
        )
        chunks = [chunk async for chunk in stream]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert completion.choices[0].message.content == "[simulated] lorem ipsum"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 3
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


@pytest.mark.asyncio
async def test_fixed_replies_per_model(make_sim: SimFactory) -> None:
    plan = '{"steps": ["a", "b"]}'
    sim = await make_sim(reply="generic answer", replies={"planner": plan})
    async with _client(sim) as client:
        planned = await client.chat.completions.create(model="planner", messages=MESSAGES)
        stream = await client.chat.completions.create(model="planner", messages=MESSAGES, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
        other = await client.chat.completions.create(model="other", messages=MESSAGES)
        models = await client.models.list()
    assert planned.choices[0].message.content == plan
    assert streamed == plan
    assert other.choices[0].message.content == "generic answer"
    assert other.usage is not None and other.usage.completion_tokens == 2
    assert [m.id for m in models.data] == ["sim-model", "planner"]
    assert all(m.owned_by == "cutover-simulator" and m.object == "model" for m in models.data)


@pytest.mark.asyncio
async def test_report_usage_false_omits_usage(make_sim: SimFactory) -> None:
    sim = await make_sim(report_usage=False, output_tokens=4)
    async with _client(sim) as client:
        completion = await client.chat.completions.create(model="m", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert completion.usage is None
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert len(chunks) == 1 + 4 + 1


@pytest.mark.asyncio
async def test_embeddings_float_and_base64(make_sim: SimFactory) -> None:
    sim = await make_sim(embedding_dims=12)
    async with _client(sim) as client:
        # The SDK asks for base64 by default and decodes it itself.
        default = await client.embeddings.create(model="emb", input=["alpha", "beta"])
        floats = await client.embeddings.create(model="emb", input="alpha", encoding_format="float")
        sized = await client.embeddings.create(model="emb", input="alpha", dimensions=4)
    assert default.object == "list" and default.model == "emb"
    assert [d.index for d in default.data] == [0, 1]
    assert all(d.object == "embedding" and len(d.embedding) == 12 for d in default.data)
    assert default.usage.prompt_tokens == 3 and default.usage.total_tokens == 3  # 2 + 1
    assert floats.data[0].embedding == pytest.approx(default.data[0].embedding, abs=1e-6)
    assert default.data[0].embedding != default.data[1].embedding
    assert len(sized.data[0].embedding) == 4


def test_sync_client_against_background_thread() -> None:
    with BackgroundSimulator(SimulationSettings(output_tokens=5)) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
        completion = client.chat.completions.create(model="m", messages=MESSAGES)
        chunks = list(
            client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        sim.set_settings(SimulationSettings(script=["rate_limit"]))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=MESSAGES)
        recorded = sim.requests
        client.close()
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert [r.outcome for r in recorded] == ["ok", "ok", "rate_limit"]


async def test_legacy_completions_stream_and_not(sim: SimulatorServer) -> None:
    async with _client(sim) as client:
        reply = await client.completions.create(model="m", prompt=["a", "b"], max_tokens=3)
        assert reply.object == "text_completion" and reply.id.startswith("cmpl-sim-")
        assert [c.text for c in reply.choices] == ["[simulated] lorem ipsum"] * 2
        assert [c.finish_reason for c in reply.choices] == ["length", "length"]
        assert reply.usage is not None and reply.usage.completion_tokens == 6
        default = await client.completions.create(model="m", prompt="a")
        assert default.choices[0].finish_reason == "stop"  # 16 pieces planned, 16 allowed by default
        stream = await client.completions.create(model="m", prompt="a", max_tokens=3, stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "[simulated] lorem ipsum"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_offered_tools_are_called_with_fitting_arguments(sim: SimulatorServer) -> None:
    tools: Any = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}},
    ]
    choice: Any = {"type": "function", "function": {"name": "weather"}}
    async with _client(sim) as client:
        called = await client.chat.completions.create(model="m", messages=MESSAGES, tools=tools, tool_choice=choice)
        [call] = called.choices[0].message.tool_calls or []
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, tools=tools, stream=True)
        deltas = [d for chunk in [c async for c in stream] for d in (chunk.choices[0].delta.tool_calls or [])]
        answered = await client.chat.completions.create(model="m", tools=tools, messages=[
            *MESSAGES, {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "18C"}])
        declined = await client.chat.completions.create(model="m", messages=MESSAGES, tools=tools, tool_choice="none")
    assert called.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, call.function.arguments) == ("weather", '{"city":"simulated","days":0}')  # type: ignore[union-attr]
    assert deltas[0].function is not None and deltas[0].function.name == "lookup"
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == "{}"
    assert answered.choices[0].message.content and not answered.choices[0].message.tool_calls
    assert declined.choices[0].message.content and not declined.choices[0].message.tool_calls


async def test_embeddings_of_token_arrays(sim: SimulatorServer) -> None:
    async with _client(sim) as client:
        one = await client.embeddings.create(model="e", input=[1212, 318, 257])
        many = await client.embeddings.create(model="e", input=[[1212, 318], [257]])
        text = await client.embeddings.create(model="e", input="1212 318")
    assert len(one.data) == 1 and len(many.data) == 2
    # The same token array gets the same vector every time.
    assert many.data[0].embedding == text.data[0].embedding
