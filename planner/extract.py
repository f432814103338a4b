"""The first JSON object in a model's reply: bare, inside ``` fences, or with prose around it. Pure."""

from __future__ import annotations

import json
import re
from typing import Any

# Each candidate object costs a linear scan; a reply with more stray braces than this is garbage.
_MAX_CANDIDATES = 64
_SIGNIFICANT = re.compile(r'[{}"\\]')


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the object opened at `start`, ignoring braces inside strings."""
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _SIGNIFICANT.finditer(text, start):
        at = match.start()
        if at == escaped_at:
            continue
        char = match.group()
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return at
    return None


def extract_json(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The first JSON object in `text` -> (object, None), or (None, what went wrong).

    Accepts a bare object, one inside ``` or ```json fences, and one with prose before or
    after it. Candidates start at each `{`; a balanced candidate that is not valid JSON is
    skipped whole (so a nested object inside it is never mistaken for the plan).
    """
    if not text or not text.strip():
        return None, "the reply is empty; expected a JSON object"
    try:
        whole = json.loads(text)
    except ValueError:
        pass
    else:
        if isinstance(whole, dict):
            return whole, None
        return None, f"expected a JSON object, got {json.dumps(whole)[:40]}"

    error: str | None = None
    start = text.find("{")
    for _ in range(_MAX_CANDIDATES):
        if start < 0:
            break
        end = _closing_brace(text, start)
        if end is None:
            error = error or f"the JSON object starting at character {start} is never closed (was the reply cut off?)"
            start = text.find("{", start + 1)
            continue
        try:
            return json.loads(text[start : end + 1]), None
        except ValueError as exc:
            error = error or f"invalid JSON in the object starting at character {start}: {exc}"
            start = text.find("{", end + 1)
    return None, error or "no JSON object found in the reply (expected one object: {...})"
