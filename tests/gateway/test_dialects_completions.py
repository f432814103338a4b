"""The legacy completions dialect without a network: what a request becomes, and how answers are translated."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.dialects.completions import Completions, TranslatedFrames, text_completion
from gateway.errors import InvalidRequest
from providers.base import UpstreamReply

CHAT_REPLY = {
    "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": None}, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def parse(**fields: Any) -> Any:
    return Completions().parse(orjson.dumps({"model": "legacy", **fields}))


def test_a_prompt_becomes_one_user_message_with_the_endpoints_default_cap() -> None:
    request = parse(prompt="Once upon", temperature=0.2, stop=["\n"], n=2, user="u1", seed=7)
    assert request.payload == {"model": "legacy", "messages": [{"role": "user", "content": "Once upon"}],
                               "temperature": 0.2, "stop": ["\n"], "n": 2, "user": "u1", "seed": 7,
                               "max_tokens": 16}
    assert request.max_output_tokens == 16 and not request.stream
    assert request.native is not None and request.native.native_only == ()
    assert request.native.body("up-model") == {"model": "up-model", "prompt": "Once upon", "temperature": 0.2,
                                               "stop": ["\n"], "n": 2, "user": "u1", "seed": 7}


def test_a_native_stream_always_asks_for_usage() -> None:
    request = parse(prompt="x", stream=True)
    assert request.native is not None
    assert request.native.body("m")["stream_options"] == {"include_usage": True}
    assert not request.wants_usage


@pytest.mark.parametrize(
    ("fields", "needs"),
    [
        ({"suffix": "end"}, ("suffix",)),
        ({"suffix": ""}, ()),
        ({"echo": True, "logprobs": 0}, ("echo", "logprobs")),
        ({"best_of": 2, "n": 2}, ()),
        ({"best_of": 3, "n": 2}, ("best_of",)),
        ({"prompt": ["a", "b"]}, ("prompt",)),
        ({"prompt": ["only"]}, ()),
        ({"prompt": [[1, 2], [3]]}, ("prompt",)),
    ],
)
def test_what_only_a_native_upstream_honours(fields: dict[str, Any], needs: tuple[str, ...]) -> None:
    request = parse(**{"prompt": "x", **fields})
    assert request.native is not None and tuple(request.native.native_only) == needs


@pytest.mark.parametrize(("fields", "param"), [({"prompt": 3}, "prompt"), ({"prompt": []}, "prompt"),
                                               ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
                                               ({"prompt": "x", "stream": "yes"}, "stream")])
def test_bad_fields_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    assert caught.value.param == param


def test_a_chat_answer_as_a_text_completion() -> None:
    assert text_completion(CHAT_REPLY) == {
        "id": "cmpl-abc", "object": "text_completion", "created": 1700000000, "model": "m",
        "choices": [{"text": "Hello.", "index": 0, "logprobs": None, "finish_reason": "stop"},
                    {"text": "", "index": 1, "logprobs": None, "finish_reason": "length"}],
        "usage": CHAT_REPLY["usage"],
    }
    reply = UpstreamReply(200, orjson.dumps(CHAT_REPLY), "application/json", CHAT_REPLY)
    assert orjson.loads(Completions().answer_body(reply, native=False))["object"] == "text_completion"
    assert Completions().answer_body(reply, native=True) == reply.body


def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 5, "model": "m",
                            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


@pytest.mark.parametrize("wants_usage", [False, True])
def test_chat_chunks_as_text_completion_chunks(wants_usage: bool) -> None:
    frames = TranslatedFrames(wants_usage)
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    events = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    ]
    out = [frames.event(orjson.dumps(e), None) for e in events]
    out.append(frames.event(orjson.dumps(chunk([], usage)), chunk([], usage)))
    sent = [orjson.loads(f.removeprefix(b"data: ")) for f in out if f is not None]
    expected = [
        {"id": "cmpl-x", "object": "text_completion", "created": 5, "model": "m",
         "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}]}
        for text, reason in (("Hel", None), ("lo", None), ("", "stop"))
    ]
    if wants_usage:
        expected.append({"id": "cmpl-x", "object": "text_completion", "created": 5, "model": "m", "choices": [],
                         "usage": usage})
    assert sent == expected
    assert out[0] is None
    assert frames.end(b": cost\n\n") == b": cost\n\ndata: [DONE]\n\n"
    assert b"[DONE]" not in frames.broken() and b"stream_broken" in frames.broken()
