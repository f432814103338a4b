"""The quality knob of a simulated model: answers that are worse than they should be, at given rates.

`Quality` (SimulationSettings.quality, or SimulationSettings.qualities[model]) holds one rate in [0, 1]
per defect; all zero, the default, is a healthy model and changes nothing:

- ``short``: a text answer is cut to its first few words (SHORT_WORDS, or a third of its words when that
  is fewer, at least one);
- ``off_topic``: a text answer is replaced by OFF_TOPIC_REPLY, which starts with OFF_TOPIC_MARKER;
- ``invalid_json``: when the request asks for JSON (``response_format`` json_object / json_schema in Chat
  Completions, ``text.format`` in the Responses API), the answer is not valid JSON (its JSON, cut short);
- ``bad_tool_arguments``: a tool call's arguments are malformed (cut-short JSON) or miss the required
  fields of the tool's parameter schema (which of the two is drawn too).

Text defects apply to text answers (a tool call is not one), first match wins: off-topic, short, invalid
JSON. Decisions are reproducible: each knob's draw is a hash of ``seed``, the knob, the model, the request
body (less ``stream`` / ``stream_options``) and how often that same request was seen since the settings
last changed (`Occurrences`). The same request sequence therefore gets the same answers in every run, and
a request repeated N times still meets each defect at its rate rather than always or never.

Pure: no sockets and no simulator state; simulator.shaping applies it to the requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field

OFF_TOPIC_MARKER: Final = "Unrelated:"
OFF_TOPIC_REPLY: Final = (
    f"{OFF_TOPIC_MARKER} the simulated model talks about the migration of arctic terns instead of answering."
)
SHORT_WORDS: Final = 3
KNOBS: Final = ("short", "off_topic", "invalid_json", "bad_tool_arguments")
# Distinct requests remembered for the occurrence counts; past it they start again from zero.
_OCCURRENCE_LIMIT: Final = 100_000


class Quality(BaseModel):
    """Rates of bad answers of one simulated model (see the module docstring). Default: healthy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    short: float = Field(default=0.0, ge=0, le=1)
    off_topic: float = Field(default=0.0, ge=0, le=1)
    invalid_json: float = Field(default=0.0, ge=0, le=1)
    bad_tool_arguments: float = Field(default=0.0, ge=0, le=1)
    # Mixed into every draw: another seed picks other requests at the same rates.
    seed: int = 0

    @property
    def healthy(self) -> bool:
        return not (self.short or self.off_topic or self.invalid_json or self.bad_tool_arguments)


def draw(*parts: object) -> float:
    """A uniform number in [0, 1) that depends only on `parts` (stable across processes and runs)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def request_key(body: Mapping[str, Any]) -> str:
    """A digest of what a request asks, the same whether it is streamed or not."""
    asked = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    try:
        raw = orjson.dumps(asked, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not from JSON; cannot happen for a parsed request body
        raw = repr(sorted(asked.items(), key=lambda kv: str(kv[0]))).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class Occurrences:
    """How often each key was seen in the current epoch (a settings object); a new epoch starts at zero,
    as the simulator's script and RNG restart when its settings change."""

    def __init__(self) -> None:
        self._epoch: object = None
        self._counts: dict[str, int] = {}

    def next(self, epoch: object, key: str) -> int:
        """The 0-based occurrence of `key` now being seen."""
        if epoch is not self._epoch:
            self._epoch = epoch
            self._counts = {}
        seen = self._counts.get(key, 0)
        if seen == 0 and len(self._counts) >= _OCCURRENCE_LIMIT:
            self._counts = {}
        self._counts[key] = seen + 1
        return seen


def _parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def shortened(text: str) -> str:
    """The first few words of `text`."""
    words = text.split()
    return " ".join(words[: max(1, min(SHORT_WORDS, len(words) // 3))])


def broken_json(text: str) -> str:
    """`text` (usually JSON) cut short so that it does not parse."""
    broken = text.rstrip()[:-1]
    return broken if not _parses(broken) else text + " }"


def malformed_arguments(arguments: str, parameters: Any, roll: float) -> str:
    """Tool-call `arguments` made invalid for `parameters` (the tool's JSON schema): with `roll` below one
    half and required fields in the schema, the arguments without them; else the JSON cut short."""
    required = parameters.get("required") if isinstance(parameters, Mapping) else None
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments  # invalid already
    if roll < 0.5 and isinstance(value, dict) and isinstance(required, list) and required:
        return orjson.dumps({k: v for k, v in value.items() if k not in required}).decode()
    return broken_json(arguments)
