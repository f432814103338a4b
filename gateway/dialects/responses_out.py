"""A Chat Completions answer as the Responses API object it stands for.

    message.content            -> a `message` item with one `output_text` part (annotations: [])
    message.refusal            -> a `refusal` part
    tool_calls                 -> one `function_call` item each: id fc_..., call_id = the chat call's id
    finish_reason length       -> status "incomplete", incomplete_details.reason "max_output_tokens"
    finish_reason content_filter -> status "incomplete", reason "content_filter"
    usage prompt/completion    -> input_tokens / output_tokens, with cached and reasoning token details
                                  (0 when the upstream gave none) and cache_write_tokens 0

The object carries every field either official SDK expects, echoing the request's settings (tools in
the Responses' own flat shape), so a strict client parses it like OpenAI's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any


def new_id(prefix: str) -> str:
    # Identifiers, not secrets (see gateway.http.new_request_id).
    return f"{prefix}_{random.getrandbits(128):032x}"


def response_usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(usage, Mapping):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, Mapping) else None
    reasoning = completion_details.get("reasoning_tokens") if isinstance(completion_details, Mapping) else None
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached or 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def status_of(finish_reason: Any) -> tuple[str, dict[str, str] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def shell(request: Mapping[str, Any], response_id: str, created_at: int, model: str) -> dict[str, Any]:
    """Everything but output, status and usage: the request's settings, echoed."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": request.get("service_tier"), "store": request.get("store", True) is not False,
        "temperature": request.get("temperature"), "text": text,
        "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
        "top_p": request.get("top_p"), "truncation": request.get("truncation") or "disabled", "usage": None,
        "user": request.get("user"), "metadata": request.get("metadata") or {},
    }


def message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def output_items(message: Mapping[str, Any], finish_reason: Any) -> list[dict[str, Any]]:
    status = "incomplete" if status_of(finish_reason)[0] == "incomplete" else "completed"
    items: list[dict[str, Any]] = []
    text, refusal = message.get("content"), message.get("refusal")
    if text or refusal:
        items.append(message_item(new_id("msg"), text if isinstance(text, str) else None,
                                  refusal if isinstance(refusal, str) else None, status))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(call_item(new_id("fc"), str(call.get("id") or new_id("call")), str(function.get("name", "")),
                               str(function.get("arguments") or "")))
    return items


def response_object(chat: Mapping[str, Any], request: Mapping[str, Any], response_id: str) -> dict[str, Any]:
    choices = chat.get("choices") or [{}]
    choice = choices[0]
    status, incomplete = status_of(choice.get("finish_reason"))
    created = chat["created"] if isinstance(chat.get("created"), int) else int(time.time())
    out = shell(request, response_id, created, str(chat.get("model") or request.get("model")))
    out.update(status=status, incomplete_details=incomplete,
               output=output_items(choice.get("message") or {}, choice.get("finish_reason")),
               usage=response_usage(chat.get("usage")))
    return out
