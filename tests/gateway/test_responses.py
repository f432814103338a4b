"""POST /v1/responses and the stored-response routes through real sockets with the OpenAI SDK, against an
upstream that serves Chat Completions only (every Responses feature translated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import auth, route, sdk, upstream
from tests.support import BackgroundGateway


def chat_only(sim: Any) -> dict[str, Any]:
    return {**upstream(sim), "dialects": ["chat"]}


@pytest.fixture
def sim(make_sim: SimFactory) -> Any:
    return make_sim(output_tokens=6)


@pytest.fixture
def gw(sim: Any, make_gateway: GatewayFactory) -> BackgroundGateway:
    return make_gateway({"sim": chat_only(sim)}, {"assistant": route(("sim", "sim-model"))})


def test_a_response(sim: Any, gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        response = client.responses.create(model="assistant", input="Hello", instructions="Be brief")
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.output_text == "[simulated] lorem ipsum dolor sit amet"
    assert response.usage is not None and response.usage.output_tokens == 6
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert sim.requests[0].path == "/v1/chat/completions"
    assert sim.requests[0].body["messages"] == [{"role": "system", "content": "Be brief"},
                                                {"role": "user", "content": "Hello"}]


def test_max_output_tokens_makes_it_incomplete(gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        response = client.responses.create(model="assistant", input="Hello", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"


def test_a_stream_through_the_sdks_helper(gw: BackgroundGateway) -> None:
    with sdk(gw) as client, client.responses.stream(model="assistant", input="Hello") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "[simulated] lorem ipsum dolor sit amet"
    assert final.status == "completed" and final.usage is not None and final.usage.output_tokens == 6


def test_a_raw_stream_has_typed_numbered_events_and_no_done(gw: BackgroundGateway) -> None:
    body = {"model": "assistant", "input": "Hello", "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/responses", json=body, headers=auth(), timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    blocks = [b for b in raw.split("\n\n") if b and not b.startswith(":")]
    events = [json.loads(b.split("\ndata: ", 1)[1]) for b in blocks]
    assert all(b.startswith(f"event: {e['type']}\n") for b, e in zip(blocks, events, strict=True))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert "[DONE]" not in raw


def test_a_conversation_over_three_turns_then_retrieve_list_and_delete(sim: Any, gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        first = client.responses.create(model="assistant", input="My name is Ada.")
        second = client.responses.create(model="assistant", input="What is my name?", previous_response_id=first.id)
        with client.responses.stream(model="assistant", input="And again?", previous_response_id=second.id) as s:
            third = s.get_final_response()
        # Each turn replays every earlier one to the upstream, which keeps no state of its own.
        sent = [m["content"] for m in sim.requests[2].body["messages"]]
        answer = first.output_text
        assert sent == ["My name is Ada.", answer, "What is my name?", second.output_text, "And again?"]

        assert client.responses.retrieve(second.id).output_text == second.output_text
        assert client.responses.retrieve(third.id).id == third.id
        items = client.responses.input_items.list(second.id)
        assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]
        client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(first.id)
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="assistant", input="x", previous_response_id=first.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    # The deleted turn's successors still hold the conversation up to them.
    with sdk(gw) as client:
        assert client.responses.create(model="assistant", input="still there?", previous_response_id=third.id).id


def test_store_false_keeps_nothing(gw: BackgroundGateway) -> None:
    with sdk(gw) as client:
        response = client.responses.create(model="assistant", input="Hello", store=False)
        assert response.store is False
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)


def test_a_function_call_round_trip_reaches_the_upstream_as_chat(sim: Any, gw: BackgroundGateway) -> None:
    tools: Any = [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}},
                   "strict": False}]
    items: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C and sunny"},
    ]
    with sdk(gw) as client:
        response = client.responses.create(model="assistant", input=items, tools=tools)
    assert response.tools[0].name == "weather"  # type: ignore[union-attr]
    sent = sim.requests[0].body
    assert sent["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {}}, "strict": False}}]
    assert sent["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"}


def test_a_built_in_tool_on_a_chat_only_target_is_refused_by_name(sim: Any, gw: BackgroundGateway) -> None:
    with sdk(gw) as client, pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="assistant", input="Search the news", tools=[{"type": "web_search"}])
    assert caught.value.body["param"] == "tools[0]"  # type: ignore[index]
    assert "'sim-model' of provider 'sim'" in caught.value.body["message"]  # type: ignore[index]
    assert sim.requests == []


def test_only_post_creates(gw: BackgroundGateway) -> None:
    response = httpx.get(f"{gw.base_url}/responses", headers=auth(), timeout=10)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    unknown = httpx.get(f"{gw.base_url}/responses/resp_nope", headers=auth(), timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "response_not_found"
    assert httpx.get(f"{gw.base_url}/responses/resp_nope", timeout=10).status_code == 401


def test_a_conversation_survives_a_restart(sim: Any, make_gateway: GatewayFactory, tmp_path: Path) -> None:
    store = {"store": {"backend": "sqlite", "path": str(tmp_path / "state.sqlite")}}
    first_gateway = make_gateway({"sim": chat_only(sim)}, {"assistant": route(("sim", "sim-model"))}, extra=store)
    with sdk(first_gateway) as client:
        first = client.responses.create(model="assistant", input="Remember me.")
    first_gateway.stop()
    second_gateway = make_gateway({"sim": chat_only(sim)}, {"assistant": route(("sim", "sim-model"))}, extra=store)
    with sdk(second_gateway) as client:
        assert client.responses.retrieve(first.id).output_text == first.output_text
        client.responses.create(model="assistant", input="Do you?", previous_response_id=first.id)
    assert sim.requests[-1].body["messages"][0]["content"] == "Remember me."


# --- an upstream that serves the Responses API itself: passed through, conversations still the gateway's ----


@pytest.fixture
def native_gw(sim: Any, make_gateway: GatewayFactory) -> BackgroundGateway:
    return make_gateway({"sim": {**upstream(sim), "dialects": ["chat", "responses"]}},
                        {"assistant": route(("sim", "sim-model"))})


def test_passthrough_to_an_upstream_serving_responses(sim: Any, native_gw: BackgroundGateway) -> None:
    with sdk(native_gw) as client:
        first = client.responses.create(model="assistant", input="My name is Ada.", max_output_tokens=3)
        with client.responses.stream(model="assistant", input="Who am I?", previous_response_id=first.id) as s:
            second = s.get_final_response()
        assert client.responses.retrieve(second.id).output_text == second.output_text
    # The upstream's own ids and answers; it never sees the gateway's previous_response_id, only the replay.
    assert first.id == "resp_sim_1" and first.status == "incomplete" and first.output_text == "[simulated] lorem ipsum"
    assert [r.path for r in sim.requests] == ["/v1/responses", "/v1/responses"]
    replay = sim.requests[1].body
    assert "previous_response_id" not in replay and replay["model"] == "sim-model"
    assert [(i["type"], i["role"]) for i in replay["input"]] == [("message", "user"), ("message", "assistant"),
                                                                 ("message", "user")]
    assert all("id" not in item for item in replay["input"])
    assert second.output_text.startswith("[simulated]")


def test_a_broken_native_stream_ends_with_an_error(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["stream_break"], output_tokens=12)
    gw = make_gateway({"sim": {**upstream(sim), "dialects": ["chat", "responses"]}},
                      {"assistant": route(("sim", "sim-model"))})
    with sdk(gw) as client, pytest.raises(openai.APIError) as caught:
        for _ in client.responses.create(model="assistant", input="Hello", stream=True):
            pass
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "stream_broken"


class City(BaseModel):
    name: str
    population: int
    coastal: bool
    tags: list[str]


class Cities(BaseModel):
    cities: list[City]
    best: City | None


@pytest.mark.parametrize("dialects", [["chat"], ["chat", "responses"]], ids=["translated", "native"])
def test_structured_output_parses_into_a_model(
    sim: Any, make_gateway: GatewayFactory, dialects: list[str]
) -> None:
    gw = make_gateway({"sim": {**upstream(sim), "dialects": dialects}}, {"assistant": route(("sim", "sim-model"))})
    with sdk(gw) as client:
        parsed = client.responses.parse(model="assistant", input="Which cities?", text_format=Cities).output_parsed
    assert parsed == Cities(cities=[], best=City(name="simulated", population=0, coastal=False, tags=[]))
    sent = sim.requests[0].body
    if dialects == ["chat"]:
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["name"] == "Cities"
    else:
        assert sent["text"]["format"]["name"] == "Cities"


def test_a_tool_call_and_its_answer_round_trip(sim: Any, gw: BackgroundGateway) -> None:
    tools: Any = [{"type": "function", "name": "weather", "strict": True, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}]
    with sdk(gw) as client:
        with client.responses.stream(model="assistant", input="Weather in Paris?", tools=tools) as stream:
            argument_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
            asked = stream.get_final_response()
        [call] = asked.output
        assert call.type == "function_call" and call.name == "weather"
        assert "".join(argument_deltas) == call.arguments == '{"city":"simulated"}' and len(argument_deltas) > 1
        answered = client.responses.create(model="assistant", previous_response_id=asked.id, tools=tools, input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}])
    assert answered.output_text.startswith("[simulated]")
    messages = sim.requests[-1].body["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C"}


def test_a_tool_call_passed_through_from_an_upstream_serving_responses(
    sim: Any, native_gw: BackgroundGateway
) -> None:
    tools: Any = [{"type": "function", "name": "weather", "strict": True, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}]
    with sdk(native_gw) as client:
        with client.responses.stream(model="assistant", input="Weather?", tools=tools) as stream:
            asked = stream.get_final_response()
        [call] = asked.output
        assert call.type == "function_call" and call.arguments == '{"city":"simulated"}'
        answered = client.responses.create(model="assistant", previous_response_id=asked.id, tools=tools, input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}])
    assert answered.output_text.startswith("[simulated]")
    replayed = sim.requests[-1].body["input"]
    assert [i["type"] for i in replayed] == ["message", "function_call", "function_call_output"]
    assert replayed[1]["call_id"] == call.call_id and "id" not in replayed[1]
