"""Token usage of one answer: as the upstream reported it, or counted with tiktoken when it did not.

`UsageEstimator` is the one place that estimates: for a parsed reply (chat
completion or embeddings) and for the data payloads of a chat stream. An
estimate carries `estimated=True` all the way to the client's headers and logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from metering.tokens import TokenCounter


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # True when the upstream reported nothing and the gateway counted with tiktoken.
    estimated: bool = False
    # Of the completion tokens, those spent reasoning (priced apart when the price book says so).
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.estimated or other.estimated,
            self.reasoning_tokens + other.reasoning_tokens,
        )


def usage_from_openai(usage: Mapping[str, Any] | None) -> Usage | None:
    """Read an OpenAI `usage` object, Chat Completions' or the Responses API's (input_/output_tokens);
    None when it is absent or unusable."""
    if not isinstance(usage, Mapping):
        return None
    responses = "input_tokens" in usage
    prompt = usage.get("input_tokens" if responses else "prompt_tokens")
    completion = usage.get("output_tokens" if responses else "completion_tokens") or 0
    if not _is_count(prompt) or not _is_count(completion):
        return None
    details = usage.get("input_tokens_details" if responses else "prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, Mapping) else 0
    out_details = usage.get("output_tokens_details" if responses else "completion_tokens_details")
    reasoning = out_details.get("reasoning_tokens", 0) if isinstance(out_details, Mapping) else 0
    return Usage(prompt, completion, cached if _is_count(cached) else 0, False,
                 reasoning if _is_count(reasoning) else 0)


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def has_usage_object(event: bytes) -> bool:
    """Does this stream chunk carry a usage object (not `"usage": null`)? Checked without parsing,
    because with include_usage on, every chunk of a stream mentions usage."""
    at = event.find(b'"usage"')
    if at < 0:
        return False
    return event[at + 7 : at + 16].lstrip(b" \t\n:").startswith(b"{")


def usage_chunk(event: bytes) -> dict[str, Any] | None:
    """The chunk of a stream that carries its usage object, parsed; None for every other chunk."""
    if not has_usage_object(event):
        return None
    try:
        chunk = orjson.loads(event)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(chunk, dict):
        return None
    if isinstance(chunk.get("usage"), dict):
        return chunk
    # A Responses stream reports usage inside its final response (response.completed / .incomplete).
    response = chunk.get("response")
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return {**chunk, "usage": response["usage"]}
    return None


def reported_stream_usage(events: Iterable[bytes]) -> dict[str, Any] | None:
    """The last usage object among a stream's data payloads."""
    found = None
    for event in events:
        chunk = usage_chunk(event)
        if chunk is not None:
            found = chunk["usage"]
    return found


class UsageEstimator:
    def __init__(self, tokens: TokenCounter) -> None:
        self._tokens = tokens

    def of_reply(self, sent: Mapping[str, Any], data: Mapping[str, Any]) -> Usage:
        """A parsed answer: embeddings count their input; chat counts the prompt and each choice's content."""
        tokens = self._tokens
        if "messages" not in sent:
            return Usage(prompt_tokens=tokens.count_input(sent.get("input")), estimated=True)
        completion = 0
        for choice in data.get("choices") or ():
            if isinstance(choice, dict):
                message = choice.get("message") or choice.get("delta") or {}
                completion += tokens.count_content(message.get("content")) if isinstance(message, dict) else 0
        return Usage(tokens.count_prompt(sent), completion, estimated=True)

    def of_stream(self, sent: Mapping[str, Any], events: Iterable[bytes]) -> Usage:
        """A chat stream's data payloads: the prompt, and the content of every delta."""
        parts: list[str] = []
        for event in events:
            try:
                chunk = orjson.loads(event)
            except orjson.JSONDecodeError:
                continue
            for choice in chunk.get("choices") or () if isinstance(chunk, dict) else ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
        tokens = self._tokens
        return Usage(tokens.count_prompt(sent), tokens.count_text("".join(parts)), estimated=True)
