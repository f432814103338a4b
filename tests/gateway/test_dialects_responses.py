"""The Responses dialect without a network: requests translated to Chat Completions, answers and event streams
translated back. Expected shapes are written from the public API reference (docs and the SDKs' types)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.dialects.completions import TranslatedFrames
from gateway.dialects.responses import request_of
from gateway.dialects.responses_in import parse_responses_request, translate
from gateway.dialects.responses_out import response_object, response_usage
from gateway.dialects.responses_stream import NativeResponseEvents, ResponseEvents
from gateway.errors import InvalidRequest
from providers.errors import UpstreamStreamBroken
from providers.sse_parser import SSEParser

WEATHER = {"type": "function", "name": "weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}


def test_a_string_input_with_instructions() -> None:
    chat, native_only = translate({"model": "m", "input": "Hi", "instructions": "Be brief", "temperature": 0.3,
                                   "max_output_tokens": 50, "reasoning": {"effort": "low"}, "metadata": {"a": "b"}})
    assert chat == {"model": "m", "messages": [{"role": "system", "content": "Be brief"},
                                               {"role": "user", "content": "Hi"}],
                    "temperature": 0.3, "max_completion_tokens": 50, "reasoning_effort": "low"}
    assert native_only == []


def test_items_become_messages_and_a_turns_calls_stay_in_one_assistant_message() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris and Rome? "},
                                     {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "call_a", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "21C"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris 18C"}]},
    ]
    chat, native_only = translate({"model": "m", "input": items, "tools": [WEATHER],
                                   "tool_choice": {"type": "function", "name": "weather"},
                                   "text": {"format": {"type": "json_schema", "name": "w", "schema": {},
                                                       "strict": True}}})
    assert chat["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome? "},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "21C"},
        {"role": "assistant", "content": "Paris 18C"},
    ]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "Weather in a city", "parameters": WEATHER["parameters"], "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "w", "schema": {},
                                                                              "strict": True}}
    assert native_only == []


def test_what_only_the_responses_service_can_do_is_named() -> None:
    _, native_only = translate({"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}],
        "tools": [WEATHER, {"type": "web_search"}], "background": True})
    assert native_only == ["background", "input[0].content[0]", "tools[1]"]


@pytest.mark.parametrize(("fields", "param"), [
    ({}, "input"), ({"input": 3}, "input"), ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x", "max_output_tokens": "9"}, "max_output_tokens"), ({"input": "x", "store": "yes"}, "store"),
    # Shapes that once reached the translation and raised there (a 500).
    ({"input": {"role": "user", "content": "x"}}, "input"), ({"input": 5}, "input"), ({"input": ["hi"]}, "input"),
    ({"input": [{"role": ["user"], "content": "x"}]}, "input[0].role"),
    ({"input": "x", "tool_choice": {"type": "allowed_tools", "tools": 5}}, "tool_choice.tools"),
    ({"input": "x", "text": {"format": "json"}}, "text.format"), ({"input": "x", "reasoning": "high"}, "reasoning"),
])
def test_bad_requests_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        data = parse_responses_request(orjson.dumps({"model": "m", **fields}))
        translate(data)
    assert caught.value.param == param


def test_a_continued_turn_replays_the_conversation_and_an_upstream_that_speaks_responses_gets_it_whole() -> None:
    history = [{"type": "message", "role": "user", "content": "Hi", "id": "msg_1"},
               {"type": "message", "role": "assistant", "id": "msg_2",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}]
    request = request_of({"model": "m", "input": "Again", "previous_response_id": "resp_1", "store": False}, 100,
                         history)
    assert request.payload["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                           {"role": "user", "content": "Again"}]
    assert request.turn is not None and request.turn.history == tuple(history) and not request.turn.store
    assert request.native is not None
    native = request.native.body("up")
    assert "previous_response_id" not in native and native["model"] == "up"
    assert [i.get("content") for i in native["input"]][:2] == ["Hi", history[1]["content"]]
    assert native["input"][2]["content"] == "Again"


CHAT_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-x",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
              "prompt_tokens_details": {"cached_tokens": 12}, "completion_tokens_details": {"reasoning_tokens": 4}},
}


def test_a_chat_answer_as_a_response() -> None:
    response = response_object(CHAT_ANSWER, {"model": "alias", "tools": [WEATHER], "store": False}, "resp_x")
    assert response["id"] == "resp_x" and response["object"] == "response" and response["status"] == "completed"
    assert response["created_at"] == 1700000000 and response["model"] == "gpt-x"
    message, call = response["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_") and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]
    assert call["type"] == "function_call" and call["id"].startswith("fc_") and call["call_id"] == "call_a"
    assert (call["name"], call["arguments"], call["status"]) == ("weather", '{"city":"Paris"}', "completed")
    assert response["usage"] == {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 12,
                                                                             "cache_write_tokens": 0},
                                 "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4},
                                 "total_tokens": 29}
    assert response["tools"] == [WEATHER] and response["store"] is False and response["tool_choice"] == "auto"
    for key in ("error", "incomplete_details", "instructions", "metadata", "temperature", "top_p",
                "parallel_tool_calls", "previous_response_id", "text", "truncation"):
        assert key in response


def test_truncation_and_refusal() -> None:
    answer = {"choices": [{"finish_reason": "length", "message": {"content": "Partial"}}]}
    response = response_object(answer, {"model": "m"}, "resp_y")
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    refused = response_object({"choices": [{"finish_reason": "stop", "message": {"content": None,
                                                                                  "refusal": "I can't."}}]},
                              {"model": "m"}, "resp_z")
    assert refused["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]
    assert response_usage(None) is None


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return orjson.dumps(body)


def events_of(frames: bytes) -> list[dict[str, Any]]:
    out = []
    for block in frames.split(b"\n\n"):
        lines = [line for line in block.split(b"\n") if line and not line.startswith(b":")]
        if lines:
            assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: ")
            event = orjson.loads(lines[1][6:])
            assert lines[0][7:].decode() == event["type"]
            out.append(event)
    return out


async def test_a_stream_of_text_then_two_calls_with_split_arguments() -> None:
    kept: list[Any] = []

    async def keep(response: Any) -> None:
        kept.append(response)

    frames = ResponseEvents({"model": "alias"}, "resp_s", 7, keep)
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}), chunk({"content": "check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Par\\u00e9"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "weather", "arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"Rome"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(None, usage=usage),  # usage after the finish, as OpenAI sends it
    ]
    out = b"".join(f for c in chunks if (f := frames.event(c, None)) is not None)
    await frames.settle()
    out += frames.end(b": cost\n\n")
    events = events_of(out)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["output"] == [] and events[0]["response"]["status"] == "in_progress"
    message_id = events[2]["item"]["id"]
    assert {e.get("item_id") for e in events[3:8]} == {message_id}
    assert events[6]["text"] == "Let me check."
    first_call = events[9]["item"]
    assert (first_call["call_id"], first_call["arguments"], events[9]["output_index"]) == ("call_a", "", 1)
    # Fragments are joined as they came, escapes included: the arguments are the model's JSON text.
    assert events[12]["arguments"] == '{"city":"Par\\u00e9"}' and events[12]["name"] == "weather"
    assert events[14]["output_index"] == 2 and events[17]["arguments"] == '{"city":"Rome"}'
    final = events[-1]["response"]
    assert final["id"] == "resp_s" and final["status"] == "completed"
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 7
    assert kept == [final]
    assert b": cost\n\n" in out and b"[DONE]" not in out


async def test_a_stream_cut_by_max_output_tokens_is_incomplete() -> None:
    frames = ResponseEvents({"model": "m"}, "resp_t", 1)
    out = b"".join(f for c in [chunk({"content": "Part"}), chunk({}, "length")] if (f := frames.event(c, None)))
    await frames.settle()
    events = events_of(out + frames.end(b""))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"


def test_a_stream_broken_mid_call_ends_with_an_error_and_failed() -> None:
    frames = ResponseEvents({"model": "m"}, "resp_u", 1)
    out = b"".join(f for c in [chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {
        "name": "weather", "arguments": '{"ci'}}]})] if (f := frames.event(c, None)))
    events = events_of(out + frames.broken())
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["error"]["code"] == "stream_broken"
    assert events[-1]["response"]["status"] == "failed"
    assert all(e["type"] != "response.completed" for e in events)


async def test_a_native_stream_is_relayed_with_its_event_lines_and_its_final_response_kept() -> None:
    kept: list[Any] = []

    async def keep(response: Any) -> None:
        kept.append(response)

    frames = NativeResponseEvents(keep)
    final = {"id": "resp_up", "object": "response", "status": "completed", "output": [], "usage": {
        "input_tokens": 1, "output_tokens": 2, "total_tokens": 3}}
    upstream = [{"type": "response.created", "sequence_number": 0, "response": {**final, "status": "in_progress"}},
                {"type": "response.completed", "sequence_number": 1, "response": final}]
    out = b"".join(f for e in upstream if (f := frames.event(orjson.dumps(e), None)))
    await frames.settle()
    assert events_of(out + frames.end(b"")) == upstream
    assert kept == [final]
    assert events_of(frames.broken())[0]["sequence_number"] == 2


async def test_a_stream_split_at_every_byte_translates_the_same() -> None:
    """Multi-byte characters and JSON escapes cut across reads reach the events whole."""
    chunks = [chunk({"content": "Ça "}), chunk({"content": "va — "}),
              chunk({"tool_calls": [{"index": 0, "id": "call_ü", "function": {"name": "wëather", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Zürich \\"'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'old town\\""}'}}]}),
              chunk({}, "tool_calls")]
    wire = b"".join(b"data: " + c + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    parser = SSEParser()
    events = [e for i in range(len(wire)) for e in parser.feed(wire[i:i + 1])]
    assert events[:-1] == chunks and events[-1] == b"[DONE]"
    whole, split = ResponseEvents({"model": "m"}, "resp_w", 1), ResponseEvents({"model": "m"}, "resp_w", 1)
    translated = []
    for frames, source in ((whole, chunks), (split, events[:-1])):
        out = b"".join(f for c in source if (f := frames.event(c, None)))
        await frames.settle()
        translated.append(events_of(out + frames.end(b"")))
    assert [e["type"] for e in translated[0]] == [e["type"] for e in translated[1]]
    final = translated[1][-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Ça va — "
    assert final["output"][1]["arguments"] == '{"city": "Zürich \\"old town\\""}'
    assert final["output"][1]["call_id"] == "call_ü" and final["output"][1]["name"] == "wëather"


async def test_a_streamed_refusal_is_a_refusal_part() -> None:
    frames = ResponseEvents({"model": "m"}, "resp_r", 1)
    source = [chunk({"role": "assistant", "refusal": ""}), chunk({"refusal": "I can't "}),
              chunk({"refusal": "help with that."}), chunk({}, "stop")]
    out = b"".join(f for c in source if (f := frames.event(c, None)))
    await frames.settle()
    events = events_of(out + frames.end(b""))
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added", "response.content_part.added", "response.refusal.delta",
        "response.refusal.delta", "response.refusal.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert events[3]["part"] == {"type": "refusal", "refusal": ""}
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_a_replay_carries_no_item_ids_and_no_reasoning() -> None:
    history = [{"type": "reasoning", "id": "rs_1", "summary": []},
               {"type": "function_call", "id": "fc_67b73f697ba4819183a15cc17d011509", "call_id": "call_1", "name": "f",
                "arguments": "{}"},
               {"type": "function_call_output", "id": "client-given", "call_id": "call_1", "output": "x"}]
    request = request_of({"model": "m", "input": "next", "previous_response_id": "resp_1"}, 10, history)
    assert request.native is not None
    replay = request.native.body("m")["input"]
    # The next turn may go to another arm or account, which stored none of these items.
    assert [i["type"] for i in replay] == ["function_call", "function_call_output", "message"]
    assert all("id" not in i for i in replay)


def test_an_error_chunk_mid_stream_breaks_the_translation() -> None:
    error = orjson.dumps({"error": {"message": "overloaded", "type": "server_error", "code": None}})
    frames = ResponseEvents({"model": "m"}, "resp_e", 1)
    assert frames.event(chunk({"content": "Hel"}), None)
    with pytest.raises(UpstreamStreamBroken):
        frames.event(error, None)
    legacy = TranslatedFrames(False)
    assert legacy.event(chunk({"content": "Hel"}), None)
    with pytest.raises(UpstreamStreamBroken):
        legacy.event(error, None)


def test_text_before_calls_stays_in_one_assistant_message_and_more_fields_map() -> None:
    items = [{"role": "user", "content": "Weather?"},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
             {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"}]
    chat, native_only = translate({"model": "m", "input": items, "top_logprobs": 3, "metadata": {"a": "b"},
                                   "text": {"verbosity": "low"}, "truncation": "auto"})
    assert chat["messages"][1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}
    assert (chat["logprobs"], chat["top_logprobs"], chat["verbosity"]) == (True, 3, "low")
    # OpenAI's chat endpoint refuses metadata unless the chat is stored; the response echoes it instead.
    assert "metadata" not in chat
    assert native_only == ["truncation"]
