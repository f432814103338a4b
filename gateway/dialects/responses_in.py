"""A Responses API request, checked and translated to one Chat Completions request.

Pure: the body in, the canonical payload out, plus the fields only an upstream serving Responses itself can
honour (built-in tools, background runs, stored prompts). The map, field by field, is the README's
"Dialects" table; what has no chat equivalent is refused, never dropped.

    instructions                       -> a leading system message
    input (string)                     -> one user message
    message items (input_text/_image)  -> messages with text / image_url parts
    function_call items (consecutive)  -> ONE assistant message with tool_calls (parallel calls stay together)
    function_call_output               -> a tool message answering its call_id
    reasoning items                    -> left out: a chat upstream cannot take them back
    tools (flat function tools)        -> nested chat tools
    text.format json_schema (flat)     -> response_format.json_schema
    max_output_tokens                  -> max_completion_tokens
    reasoning.effort                   -> reasoning_effort
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.dialects.openai import optional_int, optional_number, parse_json_object, require_model
from gateway.errors import InvalidRequest

_ROLES = frozenset({"user", "assistant", "system", "developer"})
# Not `metadata`: OpenAI's chat endpoint refuses it unless the chat is stored; the response echoes it anyway.
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier", "safety_identifier",
           "prompt_cache_key", "seed")
# Request fields whose meaning lives in the Responses service itself.
_NATIVE_ONLY_FIELDS = ("background", "conversation", "prompt", "include", "max_tool_calls", "context_management")


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _text_of(output: Any, where: str) -> str:
    """A function_call_output's output: a string, or parts whose text is joined."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(p.get("text", "") for p in output if isinstance(p, dict) and isinstance(p.get("text"), str))
    raise _invalid(f"Invalid '{where}.output': expected a string or an array of parts.", f"{where}.output",
                   "invalid_type")


def _part(part: Any, where: str, native_only: list[str]) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise _invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise _invalid(f"Missing or invalid '{where}.text'.", f"{where}.text", "invalid_type")
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            native_only.append(where)  # a file_id image: only OpenAI's own store knows it
            return None
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    native_only.append(where)  # input_file, audio and the rest: no chat part carries them everywhere
    return None


def _content(content: Any, where: str, native_only: list[str]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"Invalid type for '{where}': expected a string or an array of parts.", where, "invalid_type")
    parts = [p for i, part in enumerate(content) if (p := _part(part, f"{where}[{i}]", native_only)) is not None]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(items: Any, native_only: list[str]) -> list[dict[str, Any]]:
    """Responses input items as chat messages, in order."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise _invalid("Invalid type for 'input': expected a string or an array of items.", "input", "invalid_type")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _ROLES:
                raise _invalid(f"Invalid value for '{where}.role': expected one of {', '.join(sorted(_ROLES))}.",
                               f"{where}.role")
            messages.append({"role": role, "content": _content(item.get("content"), f"{where}.content",
                                                               native_only)})
        elif kind == "function_call":
            for field in ("call_id", "name", "arguments"):
                if not isinstance(item.get(field), str):
                    raise _invalid(f"Missing or invalid '{where}.{field}'.", f"{where}.{field}", "invalid_type")
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            # Calls made in one turn go back as one assistant message (with the text that came before them),
            # so each result finds its call and no chat template meets two assistant messages in a row.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _invalid(f"Missing or invalid '{where}.call_id'.", f"{where}.call_id", "invalid_type")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": _text_of(item.get("output"), where)})
        elif kind == "reasoning":
            continue
        else:
            native_only.append(where)
    return messages


def chat_tools(tools: Any, native_only: list[str]) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        if tool.get("type") != "function":
            native_only.append(where)  # web_search, file_search, mcp...: the Responses service runs them
            continue
        if not isinstance(tool.get("name"), str):
            raise _invalid(f"Missing required parameter: '{where}.name'.", f"{where}.name",
                           "missing_required_parameter")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        tools = [{"type": "function", "function": {"name": t.get("name")}} for t in choice.get("tools", ())
                 if isinstance(t, dict)]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools}}
    return choice


def response_format(fmt: Any) -> dict[str, Any] | None:
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def translate(data: dict[str, Any], history: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, Any], list[str]]:
    """The chat payload for a Responses request (after the earlier turns' `history` messages), and the
    params only a native upstream honours."""
    native_only: list[str] = [f for f in _NATIVE_ONLY_FIELDS if data.get(f)]
    if data.get("truncation") == "auto":
        native_only.append("truncation")  # the service's own trimming; the gateway's is on_context_overflow
    messages: list[dict[str, Any]] = []
    if isinstance(data.get("instructions"), str) and data["instructions"]:
        messages.append({"role": "system", "content": data["instructions"]})
    messages += history
    messages += input_messages(data.get("input", []), native_only)
    chat: dict[str, Any] = {"model": data["model"], "messages": messages}
    chat.update((k, data[k]) for k in _PASSED if data.get(k) is not None)
    if data.get("tools"):
        tools = chat_tools(data["tools"], native_only)
        if tools:
            chat["tools"] = tools
    if data.get("tool_choice") is not None:
        chat["tool_choice"] = chat_tool_choice(data["tool_choice"])
    text = data.get("text")
    fmt = response_format(text.get("format")) if isinstance(text, dict) else None
    if fmt is not None:
        chat["response_format"] = fmt
    if data.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = data["max_output_tokens"]
    if isinstance(data.get("top_logprobs"), int) and data["top_logprobs"] > 0:
        chat["logprobs"], chat["top_logprobs"] = True, data["top_logprobs"]
    if isinstance(text, dict) and text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]
    reasoning = data.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    if data.get("stream") is True:
        chat["stream"] = True
    return chat, native_only


def parse_responses_request(body: bytes) -> dict[str, Any]:
    data = parse_json_object(body)
    require_model(data)
    if "input" not in data and not data.get("previous_response_id") and not data.get("prompt"):
        raise _invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    for field in ("instructions", "previous_response_id"):
        if data.get(field) is not None and not isinstance(data[field], str):
            raise _invalid(f"Invalid type for '{field}': expected a string.", field, "invalid_type")
    for field in ("stream", "store", "parallel_tool_calls"):
        if data.get(field) is not None and not isinstance(data[field], bool):
            raise _invalid(f"Invalid type for '{field}': expected a boolean.", field, "invalid_type")
    if data.get("metadata") is not None and not isinstance(data["metadata"], dict):
        raise _invalid("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if data.get("text") is not None and not isinstance(data["text"], dict):
        raise _invalid("Invalid type for 'text': expected an object.", "text", "invalid_type")
    fmt = data["text"].get("format") if isinstance(data.get("text"), dict) else None
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") in ("text", "json_object", "json_schema")):
        raise _invalid("Invalid 'text.format': expected an object of type text, json_object or json_schema.",
                       "text.format")
    if data.get("reasoning") is not None and not isinstance(data["reasoning"], dict):
        raise _invalid("Invalid type for 'reasoning': expected an object.", "reasoning", "invalid_type")
    value = data.get("input")
    if value is not None and not isinstance(value, str) and not (
            isinstance(value, list) and all(isinstance(item, dict) for item in value)):
        raise _invalid("Invalid 'input': expected a string or an array of item objects.", "input", "invalid_type")
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools" and not isinstance(
            choice.get("tools"), list):
        raise _invalid("Invalid 'tool_choice.tools': expected an array.", "tool_choice.tools", "invalid_type")
    optional_int(data, "max_output_tokens", 1)
    for field in ("temperature", "top_p"):
        optional_number(data, field)
    return data
