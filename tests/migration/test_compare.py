"""migration.compare: how a primary answer and its shadow copy are summarised and compared."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from migration.compare import (
    AnswerSummary,
    compare,
    normalise,
    request_tool_names,
    similarity,
    summarise_completion,
    summarise_stream,
    wants_json,
)


def _answer(text: str = "Hello", status: int = 200, **fields: Any) -> AnswerSummary:
    return AnswerSummary(status=status, latency_s=fields.pop("latency_s", 1.0), text=text, **fields)


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0) -> bytes:
    choice: dict[str, Any] = {"index": index, "delta": delta or {}, "finish_reason": finish}
    return orjson.dumps({"object": "chat.completion.chunk", "choices": [choice]})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Hello,\n\t  World!!  ", "hello, world"),
        ("\uff28\uff45\uff4c\uff4c\uff4f", "hello"),  # full-width forms fold under NFKC
        ("Straße", "strasse"),  # casefold, not lower
        ("...«quoted»...", "quoted"),
        ("", ""),
    ],
)
def test_normalise_folds_case_width_spacing_and_edge_punctuation(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_similarity() -> None:
    assert similarity("same", "same") == 1.0
    assert similarity("", "x") == similarity("x", "") == 0.0
    assert 0.0 < similarity("the quick brown fox", "the quick brown cat") < 1.0
    assert similarity("abc", "xyz") == 0.0


def test_similarity_is_graded_on_repetitive_text() -> None:
    # Repetitive text was the pathological case of the former edit-distance ratio.
    close = similarity("a" * 5000 + "x", "a" * 5000 + "y")
    assert 0.99 < close < 1.0
    assert similarity('{"k": ' * 800, '{"k": ' * 800 + "]") > 0.99


def test_agreement_is_status_and_normalised_text_and_tools() -> None:
    same = compare(_answer("Hello, world."), _answer("hello,   WORLD"), json_requested=False)
    assert same.status_match and same.normalised_match and not same.exact_match and same.agrees
    assert same.json_parity is None and same.tools_match

    different = compare(_answer("yes"), _answer("no"), json_requested=False)
    assert different.status_match and not different.normalised_match and not different.agrees
    assert different.to_dict()["agrees"] is False

    ab, ba = (("a", "{}"), ("b", "{}")), (("b", "{}"), ("a", "{}"))
    tools = compare(_answer("", tool_calls=ab), _answer("", tool_calls=ba), json_requested=False)
    assert tools.tools_match and tools.agrees
    other_tools = compare(_answer("", tool_calls=(("a", "{}"),)), _answer("", tool_calls=(("c", "{}"),)),
                          json_requested=False)
    assert not other_tools.tools_match and not other_tools.agrees


def test_status_parity() -> None:
    failed = compare(_answer(status=200), _answer("", status=500), json_requested=False)
    assert not failed.status_match and not failed.agrees and failed.similarity == 0.0
    both_failed_alike = compare(_answer("", status=502), _answer("", status=502), json_requested=False)
    assert both_failed_alike.status_match and not both_failed_alike.normalised_match
    both_failed_differently = compare(_answer("", status=502), _answer("", status=504), json_requested=False)
    assert not both_failed_differently.status_match
    # Two successes match whatever their exact 2xx code.
    assert compare(_answer(status=200), _answer(status=201), json_requested=False).status_match


def test_json_parity_only_when_json_was_requested_and_both_answered() -> None:
    valid, invalid = _answer('{"a": 1}'), _answer('{"a": 1')
    assert compare(valid, _answer('{"a":1}'), json_requested=True).json_parity is True
    mismatch = compare(valid, invalid, json_requested=True)
    assert mismatch.json_parity is False and not mismatch.agrees
    assert compare(invalid, _answer("not json either"), json_requested=True).json_parity is True
    assert compare(valid, invalid, json_requested=False).json_parity is None
    assert compare(valid, _answer("", status=500), json_requested=True).json_parity is None


def test_deltas_are_shadow_minus_primary() -> None:
    primary = _answer(latency_s=1.0, ttft_s=0.2, completion_tokens=10, cost_micros=100, finish_reason="stop")
    shadow = _answer(latency_s=1.5, ttft_s=0.1, completion_tokens=14, cost_micros=40, finish_reason="length")
    result = compare(primary, shadow, json_requested=False)
    assert result.latency_delta_s == pytest.approx(0.5)
    assert result.ttft_delta_s == pytest.approx(-0.1)
    assert (result.token_delta, result.cost_delta_micros, result.finish_match) == (4, -60, False)
    assert compare(_answer(ttft_s=0.2), _answer(), json_requested=False).ttft_delta_s is None


def test_summarise_completion() -> None:
    data = {
        "choices": [{
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "Calling tools",
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
                    {"id": "2", "type": "function", "function": {"name": "send_email", "arguments": "{}"}},
                ],
            },
        }],
    }
    summary = summarise_completion(data, 200, 0.3, 120, prompt_tokens=9, completion_tokens=4, ttft_s=0.1)
    assert summary == AnswerSummary(200, 0.3, 0.1, 9, 4, 120, "tool_calls", "Calling tools",
                                     (("lookup", "{}"), ("send_email", "{}")))
    empty = summarise_completion({"choices": []}, 502, 0.1, 0, 0, 0)
    assert (empty.text, empty.finish_reason, empty.tool_names, empty.ok) == ("", None, (), False)
    no_content = summarise_completion({"choices": [{"message": {"content": None}}]}, 200, 0.1, 0, 0, 0)
    assert no_content.text == "" and no_content.ok


def test_summarise_stream() -> None:
    events = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "other choice"}, index=1),
        b"not json",
        _chunk({"content": "lo"}),
        _chunk({"tool_calls": [{"index": 1, "function": {"name": "send_email", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"name": "lookup", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        _chunk(finish="stop"),
        orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
    ]
    summary = summarise_stream(events, 200, 0.5, 0.05, 30, prompt_tokens=3, completion_tokens=2)
    assert summary == AnswerSummary(200, 0.5, 0.05, 3, 2, 30, "stop", "Hello",
                                    (("lookup", "{}"), ("send_email", "")))


def test_the_other_dialects_answers_summarise_alike() -> None:
    response = {"object": "response", "status": "incomplete", "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "Hel"}, {"type": "output_text", "text": "lo"},
                                        {"type": "refusal", "refusal": "no"}]},
        {"type": "function_call", "name": "weather", "call_id": "c", "arguments": "{}"}]}
    summary = summarise_completion(response, 200, 0.2, 5, 1, 2)
    assert (summary.text, summary.finish_reason, summary.tool_names) == ("Hello", "length", ("weather",))
    assert summary.tool_calls == (("weather", "{}"),) and summary.refusal
    legacy = summarise_completion({"choices": [{"text": "Once", "finish_reason": "stop"}]}, 200, 0.2, 5, 1, 2)
    assert (legacy.text, legacy.finish_reason) == ("Once", "stop")

    events = [orjson.dumps(e) for e in (
        {"type": "response.created", "response": {"output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message"}},
        {"type": "response.output_text.delta", "delta": "Hel"},
        {"type": "response.output_text.delta", "delta": "lo"},
        {"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "name": "f"}},
        {"type": "response.output_item.done", "output_index": 1,
         "item": {"type": "function_call", "name": "f", "arguments": '{"a": 1}'}},
        {"type": "response.completed", "response": {"status": "completed"}},
    )]
    streamed = summarise_stream(events, 200, 0.5, 0.05, 30, 3, 2)
    assert (streamed.text, streamed.finish_reason, streamed.tool_calls) == ("Hello", "stop", (("f", '{"a": 1}'),))
    chunks = [orjson.dumps({"choices": [{"index": 0, "text": t, "finish_reason": f}]})
              for t, f in (("On", None), ("ce", None), ("", "length"))]
    assert summarise_stream(chunks, 200, 0.5, None, 1, 1, 1).text == "Once"


def test_request_tool_names_and_wants_json() -> None:
    request = {
        "tools": [
            {"type": "function", "function": {"name": "lookup"}},
            {"type": "function", "function": {"name": "send_email"}},
            {"type": "function"},
            "junk",
        ],
    }
    assert request_tool_names(request) == ["lookup", "send_email"]
    assert request_tool_names({}) == [] and request_tool_names({"tools": None}) == []
    # The Responses API's flat function tools name themselves.
    flat = {"tools": [{"type": "function", "name": "send_email", "parameters": {}}, {"type": "web_search"}]}
    assert request_tool_names(flat) == ["send_email"]
    assert wants_json({"response_format": {"type": "json_object"}})
    assert wants_json({"response_format": {"type": "json_schema", "json_schema": {}}})
    assert not wants_json({"response_format": {"type": "text"}})
    assert not wants_json({"response_format": "json_object"}) and not wants_json({})
