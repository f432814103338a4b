"""Comparing a primary answer with its shadow copy (pure).

Both sides are reduced to an `AnswerSummary` first (status, timings, usage, cost,
finish reason, text, tool-call names), from a parsed chat completion or from the
chunks of a stream. `compare` then says where they agree: status and finish-reason
parity, exact and normalised text match, a cheap similarity score, JSON-validity
parity when the request asked for JSON, tool-call name parity, and the latency,
time-to-first-token, token and cost deltas (shadow minus primary).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

_SPACE = re.compile(r"\s+")
_PUNCT_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
# Similarity is a guide, not a verdict: only the heads of long answers are compared.
_SIMILARITY_CHARS = 20_000


@dataclass(frozen=True, slots=True)
class AnswerSummary:
    status: int
    latency_s: float
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    finish_reason: str | None = None
    text: str = ""
    # (name, arguments as the model wrote them) of every tool call, in order.
    tool_calls: tuple[tuple[str, str], ...] = ()
    # The model declined in the API's own refusal field (chat `message.refusal`, a Responses refusal part).
    refusal: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.tool_calls)


@dataclass(frozen=True, slots=True)
class Comparison:
    status_match: bool
    finish_match: bool
    exact_match: bool
    normalised_match: bool
    similarity: float
    json_parity: bool | None
    tools_match: bool
    latency_delta_s: float
    ttft_delta_s: float | None
    token_delta: int
    cost_delta_micros: int

    @property
    def agrees(self) -> bool:
        """The headline agreement figure: same status, and the same answer up to formatting."""
        return self.status_match and self.normalised_match and self.tools_match and self.json_parity is not False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agrees": self.agrees}


def normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT_EDGE.sub("", _SPACE.sub(" ", folded).strip())


def _trigrams(text: str) -> Counter[str]:
    text = normalise(text)[:_SIMILARITY_CHARS]
    if len(text) < 3:
        return Counter([text]) if text else Counter()
    return Counter(text[i : i + 3] for i in range(len(text) - 2))


def similarity(a: str, b: str) -> float:
    """Dice coefficient of character-trigram multisets: 0..1, linear in the text length
    (an edit-distance ratio can be quadratic or worse on repetitive text, and this runs
    on the event loop for every compared pair)."""
    if a == b:
        return 1.0
    grams_a, grams_b = _trigrams(a), _trigrams(b)
    total = sum(grams_a.values()) + sum(grams_b.values())
    if not total:
        return 0.0
    return 2 * sum((grams_a & grams_b).values()) / total


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def wants_json(request: Mapping[str, Any]) -> bool:
    response_format = request.get("response_format")
    return isinstance(response_format, Mapping) and response_format.get("type") in ("json_object", "json_schema")


def compare(primary: AnswerSummary, shadow: AnswerSummary, json_requested: bool) -> Comparison:
    both_ok = primary.ok and shadow.ok
    ttft_delta = (
        shadow.ttft_s - primary.ttft_s if shadow.ttft_s is not None and primary.ttft_s is not None else None
    )
    return Comparison(
        status_match=primary.ok == shadow.ok and (both_ok or primary.status == shadow.status),
        finish_match=primary.finish_reason == shadow.finish_reason,
        exact_match=both_ok and primary.text == shadow.text,
        normalised_match=both_ok and normalise(primary.text) == normalise(shadow.text),
        similarity=similarity(primary.text, shadow.text) if both_ok else 0.0,
        json_parity=(_is_json(primary.text) == _is_json(shadow.text)) if json_requested and both_ok else None,
        tools_match=sorted(primary.tool_names) == sorted(shadow.tool_names),
        latency_delta_s=shadow.latency_s - primary.latency_s,
        ttft_delta_s=ttft_delta,
        token_delta=shadow.completion_tokens - primary.completion_tokens,
        cost_delta_micros=shadow.cost_micros - primary.cost_micros,
    )


def summarise_completion(
    data: Mapping[str, Any], status: int, latency_s: float, cost_micros: int, prompt_tokens: int,
    completion_tokens: int, ttft_s: float | None = None,
) -> AnswerSummary:
    """From a parsed (non-streamed) answer: a chat completion, a legacy text completion, or a Responses API
    response (whose status stands for a finish reason: completed -> stop, incomplete -> length)."""
    text: str = ""
    finish: str | None = None
    tools: list[tuple[str, str]] = []
    refusal = False
    if data.get("object") == "response":
        text, tools, refusal = _response_output(data.get("output"))
        finish = _RESPONSE_FINISH.get(str(data.get("status")))
        return AnswerSummary(status, latency_s, ttft_s, prompt_tokens, completion_tokens, cost_micros, finish, text,
                             tuple(tools), refusal)
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        choice = choices[0]
        message = choice.get("message")
        if isinstance(message, Mapping):
            content = message.get("content")
            text = content if isinstance(content, str) else ""
            tools = _tool_calls(message.get("tool_calls"))
            refusal = isinstance(message.get("refusal"), str) and bool(message["refusal"])
        elif isinstance(choice.get("text"), str):
            text = choice["text"]
        finish = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
    return AnswerSummary(status, latency_s, ttft_s, prompt_tokens, completion_tokens, cost_micros, finish, text,
                         tuple(tools), refusal)


def summarise_stream(
    events: Iterable[bytes], status: int, latency_s: float, ttft_s: float | None, cost_micros: int,
    prompt_tokens: int, completion_tokens: int,
) -> AnswerSummary:
    """From the data payloads of a stream (choice 0): chat chunks, legacy completion chunks, or the Responses
    API's typed events."""
    parts: list[str] = []
    tools: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    refusal = False
    finish: str | None = None
    for event in events:
        try:
            chunk = orjson.loads(event)
        except orjson.JSONDecodeError:
            continue
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if isinstance(kind, str):
            if kind == "response.output_text.delta" and isinstance(chunk.get("delta"), str):
                parts.append(chunk["delta"])
            elif kind in ("response.output_item.added", "response.output_item.done") and isinstance(
                    chunk.get("item"), dict):
                item = chunk["item"]
                if item.get("type") == "function_call" and isinstance(item.get("name"), str):
                    index = int(chunk.get("output_index", len(tools)))
                    tools[index] = item["name"]
                    if kind.endswith("done") and isinstance(item.get("arguments"), str):
                        arguments[index] = [item["arguments"]]
            elif kind == "response.refusal.delta":
                refusal = True
            elif kind in ("response.completed", "response.incomplete"):
                finish = _RESPONSE_FINISH.get(kind.removeprefix("response."))
            continue
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list):
            continue
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if isinstance(choice.get("text"), str):
                parts.append(choice["text"])
            delta = choice.get("delta")
            if isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
                refusal = refusal or (isinstance(delta.get("refusal"), str) and bool(delta["refusal"]))
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        function = call.get("function") or {}
                        index = int(call.get("index", 0))
                        if isinstance(function.get("name"), str) and function["name"]:
                            tools[index] = function["name"]
                        if isinstance(function.get("arguments"), str):
                            arguments.setdefault(index, []).append(function["arguments"])
            if isinstance(choice.get("finish_reason"), str):
                finish = choice["finish_reason"]
    calls = tuple((tools[i], "".join(arguments.get(i, ()))) for i in sorted(tools))
    return AnswerSummary(status, latency_s, ttft_s, prompt_tokens, completion_tokens, cost_micros, finish,
                         "".join(parts), calls, refusal)


_RESPONSE_FINISH = {"completed": "stop", "incomplete": "length"}


def _response_output(output: Any) -> tuple[str, list[tuple[str, str]], bool]:
    """The text, the tool calls (name, arguments) and whether there is a refusal, of a Responses API output list."""
    texts: list[str] = []
    calls: list[tuple[str, str]] = []
    refusal = False
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "message":
            parts = [p for p in item.get("content") or () if isinstance(p, Mapping)]
            texts += [p["text"] for p in parts if p.get("type") == "output_text" and isinstance(p.get("text"), str)]
            refusal = refusal or any(p.get("type") == "refusal" for p in parts)
        elif item.get("type") == "function_call" and isinstance(item.get("name"), str):
            arguments = item.get("arguments")
            calls.append((item["name"], arguments if isinstance(arguments, str) else ""))
    return "".join(texts), calls, refusal


def _tool_calls(calls: Any) -> list[tuple[str, str]]:
    found = []
    for call in calls or ():
        if isinstance(call, Mapping):
            function = call.get("function")
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                arguments = function.get("arguments")
                found.append((function["name"], arguments if isinstance(arguments, str) else ""))
    return found


def request_tool_names(request: Mapping[str, Any]) -> list[str]:
    """Names of the tools a request offers, for excluding side-effecting tools from shadowing."""
    names = []
    for tool in request.get("tools") or ():
        if isinstance(tool, Mapping):
            # Chat Completions nests the function; the Responses API names it on the tool itself.
            nested = tool.get("function")
            function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else tool
            if isinstance(function.get("name"), str):
                names.append(function["name"])
    return names
