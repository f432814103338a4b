"""POST /v1/completions: legacy text completions, passed through where the upstream serves them, else
translated to one Chat Completions call with the prompt as the user's message.

What a chat model cannot do is refused, never dropped: `suffix`, `echo`, `logprobs`, `best_of` above
`n`, several prompts or token-array prompts need an upstream that serves completions itself (the targets
that do not are skipped, and the client told when none is left). Translated answers come back as
`text_completion` objects and chunks, ids `cmpl-...`, `[DONE]` at the end, as OpenAI sends them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.dialects.base import ClientRequest
from gateway.dialects.chat import ChatFrames, wants_stream_usage
from gateway.dialects.openai import CanonicalDialect, optional_int, optional_number, parse_json_object, require_model
from gateway.dialects.responses_stream import broken_off
from gateway.errors import InvalidRequest
from providers.base import UpstreamReply
from routing.wire import NativeForm, with_model

# OpenAI's default for this endpoint; chat has none, so a translation must say it.
DEFAULT_MAX_TOKENS = 16
_PASSED = ("n", "temperature", "top_p", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "user",
           "seed", "stream", "stream_options")


def _prompt(data: dict[str, Any]) -> tuple[str, bool]:
    """The prompt as one text, and whether it was something a chat message cannot carry."""
    prompt = data.get("prompt", "")
    if isinstance(prompt, str):
        return prompt, False
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return str(prompt[0]), len(prompt) > 1
        tokens = all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        if tokens or all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return "", True
    raise InvalidRequest("Invalid 'prompt': expected a string, an array of strings, or token arrays.",
                         param="prompt", code="invalid_type")


def _native_only(data: dict[str, Any], prompt_needs_native: bool) -> list[str]:
    needs = []
    if prompt_needs_native:
        needs.append("prompt")
    if data.get("suffix"):
        needs.append("suffix")
    if data.get("echo") is True:
        needs.append("echo")
    if data.get("logprobs") is not None:
        needs.append("logprobs")
    best_of = data.get("best_of")
    if isinstance(best_of, int) and best_of > (data.get("n") or 1):
        needs.append("best_of")
    return needs


def parse_completions_request(body: bytes) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The client's body, its Chat Completions translation, and what only a native upstream honours."""
    data = parse_json_object(body)
    require_model(data)
    text, prompt_needs_native = _prompt(data)
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    if data.get("stream_options") is not None and not isinstance(data["stream_options"], dict):
        raise InvalidRequest("Invalid type for 'stream_options': expected an object.", param="stream_options",
                             code="invalid_type")
    optional_int(data, "max_tokens", 0)
    optional_int(data, "n", 1)
    optional_int(data, "best_of", 1)
    for field in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        optional_number(data, field)
    chat: dict[str, Any] = {"model": data["model"], "messages": [{"role": "user", "content": text}]}
    chat.update((k, data[k]) for k in _PASSED if data.get(k) is not None)
    chat["max_tokens"] = data.get("max_tokens") or DEFAULT_MAX_TOKENS
    return data, chat, _native_only(data, prompt_needs_native)


def _completion_id(chat_id: Any) -> str:
    return "cmpl-" + (chat_id.removeprefix("chatcmpl-") if isinstance(chat_id, str) else "cutover")


def _choice(choice: Mapping[str, Any], index: int, text: str | None) -> dict[str, Any]:
    return {"text": text or "", "index": choice.get("index", index), "logprobs": None,
            "finish_reason": choice.get("finish_reason")}


def text_completion(chat: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion as the text completion it answers."""
    choices = [_choice(c, i, (c.get("message") or {}).get("content")) for i, c in enumerate(chat["choices"])]
    out = {"id": _completion_id(chat.get("id")), "object": "text_completion", "created": chat.get("created", 0),
           "model": chat.get("model"), "choices": choices}
    if isinstance(chat.get("usage"), dict):
        out["usage"] = chat["usage"]
    return out


class TranslatedFrames(ChatFrames):
    """Chat chunks in, `text_completion` chunks out; role-only chunks carry no text and are left out. Ends
    like a chat stream: `[DONE]`, or the error frame of a broken one."""

    passthrough = False

    def event(self, data: bytes, usage_chunk: Mapping[str, Any] | None) -> bytes | None:
        chunk = usage_chunk if usage_chunk is not None else orjson.loads(data)
        broken_off(chunk)
        choices = []
        for i, c in enumerate(chunk.get("choices") or ()):
            text = (c.get("delta") or {}).get("content")
            if text or c.get("finish_reason"):
                choices.append(_choice(c, i, text))
        usage = chunk.get("usage") if self.wants_usage else None
        if not choices and not isinstance(usage, dict):
            return None
        out = {"id": _completion_id(chunk.get("id")), "object": "text_completion",
               "created": chunk.get("created", 0), "model": chunk.get("model"), "choices": choices}
        if isinstance(usage, dict):
            out["usage"] = usage
        return b"data: " + orjson.dumps(out) + b"\n\n"


class Completions(CanonicalDialect):
    endpoint = "completions"
    upstream_path = "/chat/completions"
    fits_context = True
    # The copy is the chat translation; the comparison reads either shape (migration.compare).
    shadowable = True

    def parse(self, body: bytes) -> ClientRequest:
        native, chat, native_only = parse_completions_request(body)
        stream = native.get("stream") is True
        extra = {"stream_options": {**(native.get("stream_options") or {}), "include_usage": True}} if stream else {}
        return ClientRequest(
            native["model"], chat, stream, len(body), chat["max_tokens"], wants_stream_usage(native),
            NativeForm("completions", "/completions", lambda model: with_model(native, model, **extra),
                       tuple(native_only)),
        )

    def answer_body(self, reply: UpstreamReply, native: bool) -> bytes:
        return reply.body if native else orjson.dumps(text_completion(reply.data))

    def stream_frames(self, request: ClientRequest, native: bool) -> ChatFrames | TranslatedFrames:
        # Native chunks have the chat chunks' framing: only the usage chunk asked for on the client's behalf goes.
        return ChatFrames(request.wants_usage) if native else TranslatedFrames(request.wants_usage)
