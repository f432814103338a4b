"""Chat Completions chunks in, the Responses API's typed events out, in the order the official SDKs' stream
helpers check:

    response.created, response.in_progress                              (on the first chunk)
    message:   output_item.added, content_part.added, output_text.delta...,
               output_text.done, content_part.done, output_item.done
    each call: output_item.added (function_call, arguments ""), function_call_arguments.delta...,
               function_call_arguments.done, output_item.done
    response.completed | response.incomplete                            (full output and usage)

Every event has `event: <type>` and a `data:` JSON with the same `type` and a `sequence_number` counting from
0; there is no `[DONE]`. Items get contiguous output indexes; a chat tool call's first delta (id, name) opens
its item and later argument fragments are passed on as they come, whatever bytes they split at. A broken
upstream ends the stream with an `error` event and `response.failed`, never with a clean-looking end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.dialects.responses_out import call_item, message_item, new_id, response_usage, shell, status_of
from providers.errors import UpstreamStreamBroken


@dataclass
class _Call:
    index: int
    item_id: str
    call_id: str
    name: str
    output_index: int
    arguments: list[str] = field(default_factory=list)


OnEnd = Callable[[Mapping[str, Any]], Awaitable[None]]


def broken_off(chunk: Any) -> None:
    """An upstream's error chunk mid-stream (OpenAI, LiteLLM and vLLM send `{"error": {...}}`) ends the stream
    as broken: a translation has no event for it and must not go on to a clean-looking end."""
    if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict) and not chunk.get("choices"):
        raise UpstreamStreamBroken("the upstream sent an error mid-stream")


class ResponseEvents:
    """One stream's translation; `event` takes each chat chunk, `settle` then `end` (or `broken`) close it."""

    content_type = b"text/event-stream; charset=utf-8"
    passthrough = False

    def __init__(self, request: Mapping[str, Any], response_id: str, created_at: int,
                 on_end: OnEnd | None = None) -> None:
        self._request = request
        self._on_end = on_end
        self._closing: list[bytes] = []
        self._final: dict[str, Any] | None = None
        self._id = response_id
        self._created_at = created_at
        self._model = str(request.get("model", ""))
        self._seq = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._message_id: str | None = None
        self._message_index = -1
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._part: str | None = None  # "output_text" or "refusal", while a part is open
        self._calls: dict[int, _Call] = {}
        self._open_call: _Call | None = None
        self._finish: Any = None
        self._usage: dict[str, Any] | None = None

    # --- framing ----------------------------------------------------------------------------------------

    def _emit(self, kind: str, **payload: Any) -> bytes:
        body = {"type": kind, "sequence_number": self._seq, **payload}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        out = shell(self._request, self._id, self._created_at, self._model)
        out.update(status=status, output=list(self._output), **extra)
        return out

    # --- the stream -------------------------------------------------------------------------------------

    def event(self, data: bytes, usage_chunk: Mapping[str, Any] | None) -> bytes | None:
        chunk = usage_chunk if usage_chunk is not None else orjson.loads(data)
        broken_off(chunk)
        out: list[bytes] = []
        if not self._started:
            self._started = True
            if isinstance(chunk.get("model"), str):
                self._model = chunk["model"]
            out.append(self._emit("response.created", response=self._snapshot("in_progress")))
            out.append(self._emit("response.in_progress", response=self._snapshot("in_progress")))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices") or ()
        if choices:
            choice = choices[0]
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._text_delta("output_text", delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                out += self._text_delta("refusal", delta["refusal"])
            for call in delta.get("tool_calls") or ():
                out += self._call_delta(call)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return b"".join(out) or None

    def _text_delta(self, part: str, text: str) -> list[bytes]:
        out = self._close_call()
        if self._message_id is None:
            self._message_id = new_id("msg")
            self._message_index = len(self._output)
            self._output.append(message_item(self._message_id, None, None, "in_progress"))
            out.append(self._emit("response.output_item.added", output_index=self._message_index,
                                  item=self._output[-1]))
        if self._part != part:
            out += self._close_part()
            self._part = part
            content_index = len(self._output[self._message_index]["content"])
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []} if part == "output_text" \
                else {"type": "refusal", "refusal": ""}
            self._output[self._message_index]["content"].append(empty)
            out.append(self._emit("response.content_part.added", item_id=self._message_id,
                                  output_index=self._message_index, content_index=content_index, part=empty))
        where = {"item_id": self._message_id, "output_index": self._message_index,
                 "content_index": len(self._output[self._message_index]["content"]) - 1}
        if part == "output_text":
            self._text.append(text)
            out.append(self._emit("response.output_text.delta", **where, delta=text, logprobs=[]))
        else:
            self._refusal.append(text)
            out.append(self._emit("response.refusal.delta", **where, delta=text))
        return out

    def _close_part(self) -> list[bytes]:
        if self._part is None or self._message_id is None:
            return []
        content = self._output[self._message_index]["content"]
        where = {"item_id": self._message_id, "output_index": self._message_index, "content_index": len(content) - 1}
        out = []
        if self._part == "output_text":
            text = "".join(self._text)
            content[-1] = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out.append(self._emit("response.output_text.done", **where, text=text, logprobs=[]))
        else:
            refusal = "".join(self._refusal)
            content[-1] = {"type": "refusal", "refusal": refusal}
            out.append(self._emit("response.refusal.done", **where, refusal=refusal))
        out.append(self._emit("response.content_part.done", **where, part=content[-1]))
        self._part = None
        return out

    def _close_message(self, status: str) -> list[bytes]:
        if self._message_id is None:
            return []
        out = self._close_part()
        item = self._output[self._message_index]
        item["status"] = status
        out.append(self._emit("response.output_item.done", output_index=self._message_index, item=item))
        self._message_id = None
        return out

    def _call_delta(self, delta: Mapping[str, Any]) -> list[bytes]:
        index = delta.get("index", 0)
        function = delta.get("function") or {}
        call = self._calls.get(index)
        out: list[bytes] = []
        if call is None:
            out += self._close_message("completed")
            out += self._close_call()
            call = _Call(index, new_id("fc"), str(delta.get("id") or new_id("call")), str(function.get("name") or ""),
                         len(self._output))
            self._calls[index] = call
            self._open_call = call
            self._output.append(call_item(call.item_id, call.call_id, call.name, "", "in_progress"))
            out.append(self._emit("response.output_item.added", output_index=call.output_index,
                                  item=self._output[-1]))
        elif call is not self._open_call:
            return out  # a late fragment of a call already closed: OpenAI streams calls one after another
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            call.arguments.append(fragment)
            out.append(self._emit("response.function_call_arguments.delta", item_id=call.item_id,
                                  output_index=call.output_index, delta=fragment))
        return out

    def _close_call(self) -> list[bytes]:
        call = self._open_call
        if call is None:
            return []
        self._open_call = None
        arguments = "".join(call.arguments)
        item = call_item(call.item_id, call.call_id, call.name, arguments)
        self._output[call.output_index] = item
        return [
            self._emit("response.function_call_arguments.done", item_id=call.item_id,
                       output_index=call.output_index, name=call.name, arguments=arguments),
            self._emit("response.output_item.done", output_index=call.output_index, item=item),
        ]

    async def settle(self) -> None:
        """The upstream finished: close what is open, then keep the answer before the client sees its end."""
        status, incomplete = status_of(self._finish)
        self._closing = self._close_message("incomplete" if status == "incomplete" else "completed")
        self._closing += self._close_call()
        self._final = self._snapshot(status, incomplete_details=incomplete, usage=response_usage(self._usage))
        if self._on_end is not None:
            await self._on_end(self._final)

    def end(self, trailer: bytes) -> bytes:
        assert self._final is not None, "settle() comes first"
        kind = "response.completed" if self._final["status"] == "completed" else "response.incomplete"
        return b"".join([*self._closing, trailer, self._emit(kind, response=self._final)])

    def broken(self) -> bytes:
        error = {"type": "upstream_error", "code": "stream_broken", "param": None,
                 "message": "The upstream stream broke before it finished; the answer above is incomplete."}
        failed = self._snapshot("failed", error={"code": "server_error", "message": error["message"]})
        return self._emit("error", error=error) + self._emit("response.failed", response=failed)



class NativeResponseEvents:
    """A Responses stream from an upstream that serves the API itself: relayed as it came (each event with
    its `event:` line again), its final response kept like a translated one."""

    content_type = b"text/event-stream; charset=utf-8"
    passthrough = False

    def __init__(self, on_end: OnEnd | None = None) -> None:
        self._on_end = on_end
        self._final: Mapping[str, Any] | None = None
        self._seq = 0

    def event(self, data: bytes, usage_chunk: Mapping[str, Any] | None) -> bytes | None:
        self._seq += 1
        # OpenAI's events (and the simulator's) open with their type: read it without parsing the event, and
        # parse only the final one, which is kept.
        if usage_chunk is None and data.startswith(b'{"type":"'):
            kind = data[9: data.find(b'"', 9)]
            if kind not in (b"response.completed", b"response.incomplete"):
                return b"event: " + kind + b"\ndata: " + data + b"\n\n"
        event = usage_chunk if usage_chunk is not None else orjson.loads(data)
        kind_text = event.get("type")
        if not isinstance(kind_text, str):
            return None
        if isinstance(event.get("sequence_number"), int):
            self._seq = event["sequence_number"] + 1
        if kind_text in ("response.completed", "response.incomplete") and isinstance(event.get("response"), dict):
            self._final = event["response"]
        return b"event: " + kind_text.encode() + b"\ndata: " + data + b"\n\n"

    async def settle(self) -> None:
        if self._on_end is not None and self._final is not None:
            await self._on_end(self._final)

    def end(self, trailer: bytes) -> bytes:
        return trailer

    def broken(self) -> bytes:
        error = {"type": "upstream_error", "code": "stream_broken", "param": None,
                 "message": "The upstream stream broke before it finished; the answer above is incomplete."}
        body = orjson.dumps({"type": "error", "sequence_number": self._seq, "error": error})
        return b"event: error\ndata: " + body + b"\n\n"
