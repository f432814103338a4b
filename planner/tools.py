"""Tools a plan may call: the client's own (offered in the request's `tools`) and MCP servers'.

Pure helpers, no I/O: reading and checking the client's `tools` and `tool_choice`, filling a tool
task's argument references with earlier results, and validating arguments against a tool's
JSON schema. Running a tool lives elsewhere: a client tool is returned to the client as a
`tool_calls` message (planner.rounds), an MCP tool is called inside the gateway (planner.mcp).

An argument may reference an earlier task's result as the string `"${t1}"`. A value that is
exactly one reference becomes the result itself (parsed as JSON when it is JSON, so a number
stays a number); a reference inside a longer string is replaced by the result's text.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

CLIENT = "client"
# The names OpenAI accepts for a function; a client tool's name goes back to the client verbatim.
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]{1,64})\}")
_MAX_ERRORS = 8


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool on offer to the planner. `source` is "client" or "mcp:<server>"."""

    name: str
    description: str
    parameters: dict[str, Any]
    source: str = CLIENT
    # MCP annotations readOnlyHint / idempotentHint: only such a tool is retried after a failure.
    retry_safe: bool = False
    # The tool's name on its MCP server (`name` may carry the server as a prefix).
    remote_name: str = ""
    _validator: Any = field(default=None, compare=False, repr=False)

    @property
    def is_client(self) -> bool:
        return self.source == CLIENT

    def argument_errors(self, arguments: Any) -> list[str]:
        """Why `arguments` do not fit the tool's parameter schema; [] when they do."""
        if not isinstance(arguments, dict):
            return [f"the arguments of '{self.name}' must be a JSON object"]
        validator = self._validator or Draft202012Validator(self.parameters)
        errors = []
        for error in sorted(validator.iter_errors(arguments), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.path) or "(arguments)"
            errors.append(f"{where}: {error.message[:200]}")
            if len(errors) >= _MAX_ERRORS:
                break
        return errors


def make_spec(name: str, description: str, parameters: dict[str, Any], **extra: Any) -> ToolSpec:
    """A ToolSpec whose schema has been checked; raises ValueError for a schema that is not one."""
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        raise ValueError(f"the parameters of tool '{name}' are not a valid JSON schema: {exc.message[:200]}") from None
    return ToolSpec(name, description, parameters, _validator=Draft202012Validator(parameters), **extra)


class SpecCache:
    """Checked specs by their JSON: a client's tool loop sends the same tools on every round trip, and
    checking a schema against the JSON Schema metaschema takes about 2 ms."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._max = max_entries
        self._specs: OrderedDict[bytes, ToolSpec] = OrderedDict()

    def spec(self, name: str, description: str, parameters: dict[str, Any]) -> ToolSpec:
        key = orjson.dumps([name, description, parameters])
        found = self._specs.get(key)
        if found is None:
            found = self._specs[key] = make_spec(name, description, parameters)
            if len(self._specs) > self._max:
                self._specs.popitem(last=False)
        return found


class ToolRequestError(ValueError):
    """The client's `tools` or `tool_choice` cannot be honoured; `param` names the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def client_tools(payload: Mapping[str, Any], cache: SpecCache | None = None) -> list[ToolSpec]:
    """The client's function tools, checked; `ToolRequestError` for anything the meta-model cannot honour."""
    raw = payload.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ToolRequestError("tools", "'tools' must be a list of tool objects")
    specs: dict[str, ToolSpec] = {}
    for index, item in enumerate(raw):
        where = f"tools[{index}]"
        if not isinstance(item, dict) or item.get("type") != "function" or not isinstance(item.get("function"), dict):
            raise ToolRequestError("tools", f"{where}: only tools of type 'function' can be called by a plan")
        function = item["function"]
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ToolRequestError("tools", f"{where}.function.name must be 1-64 letters, digits, '_', '-' or '.'")
        if name in specs:
            raise ToolRequestError("tools", f"{where}: the tool name '{name}' is used twice")
        description = function.get("description") or ""
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(description, str) or not isinstance(parameters, dict):
            raise ToolRequestError("tools", f"{where}: description must be a string and parameters an object")
        try:
            specs[name] = cache.spec(name, description, parameters) if cache else make_spec(name, description,
                                                                                            parameters)
        except ValueError as exc:
            raise ToolRequestError("tools", f"{where}: {exc}") from None
    return list(specs.values())


def offers_tools(payload: Mapping[str, Any]) -> bool:
    """Whether the request offers tools the planner may call (`tool_choice: "none"` withholds them)."""
    return bool(payload.get("tools")) and payload.get("tool_choice") != "none"


def check_tool_choice(payload: Mapping[str, Any]) -> None:
    """`tool_choice` forms a plan cannot honour are the client's 400, never silently ignored.

    "auto" and "none" are honoured. "required" and a named function would force a call the
    plan may not need, and the planner, not the client, decides which tools a plan calls.
    """
    choice = payload.get("tool_choice")
    if choice in (None, "auto", "none"):
        return
    shown = choice if isinstance(choice, str) else (choice.get("type") if isinstance(choice, dict) else None)
    raise ToolRequestError(
        "tool_choice",
        f"tool_choice {shown!r} cannot be honoured by a plan-and-execute model, whose planner decides which tools "
        "to call; use 'auto' or 'none'",
    )


def references(value: Any) -> set[str]:
    """Task ids referenced as "${id}" anywhere inside `value`."""
    found: set[str] = set()

    def collect(text: str) -> str:
        found.update(_REFERENCE.findall(text))
        return text

    _walk(value, collect)
    return found


def fill_references(value: Any, outputs: Mapping[str, str]) -> Any:
    """`value` with every "${id}" replaced by that task's output (see the module doc)."""

    def fill(text: str) -> Any:
        whole = _REFERENCE.fullmatch(text)
        if whole is not None and whole.group(1) in outputs:
            output = outputs[whole.group(1)]
            try:
                return orjson.loads(output)
            except orjson.JSONDecodeError:
                return output
        return _REFERENCE.sub(lambda m: outputs.get(m.group(1), m.group(0)), text)

    return _walk(value, fill)


def _walk(value: Any, on_string: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return on_string(value)
    if isinstance(value, list):
        return [_walk(v, on_string) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, on_string) for k, v in value.items()}
    return value


def catalogue(specs: list[ToolSpec]) -> str:
    """The tools as the planner reads them: name, description, parameter schema."""
    lines = []
    for spec in specs:
        schema = orjson.dumps(spec.parameters).decode()
        lines.append(f"- {spec.name}: {spec.description.strip() or '(no description)'}\n  parameters: {schema}")
    return "\n".join(lines)
