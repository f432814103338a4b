"""Cheap, deterministic checks of an answer's quality, free of charge on every compared pair (pure).

What the request asked for (`expect`) decides what is checked in an answer (`check`):

- JSON: when the request asked for JSON (`response_format` json_object / json_schema in Chat
  Completions, `text.format` in the Responses API), does the answer parse, and validate against
  the schema when there is one;
- tool calls: when the answer calls tools, is every name one the request offered, and do the
  arguments parse as a JSON object that validates against that tool's parameter schema;
- refusals (the API's own refusal field), empty answers (no text and no tool call), and answers
  cut off at their token limit (finish reason "length").

Counted per arm over compared pairs (`QualityCounts`, integer counts that merge exactly across
replicas like the rest of a window), and paired: a pair where the candidate's answer fails a
check the baseline's passes is "worse", the reverse "better". The quality gates judge those.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, UnknownType
from referencing.exceptions import Unresolvable

from migration.compare import AnswerSummary
from migration.types import Arm


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a request asked of its answer."""

    json: bool = False
    # A validator for the requested JSON schema, when there is a valid one.
    schema: Any = None
    # Offered tools: name -> a validator of its parameters (None: any object).
    tools: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _validator(schema: Any) -> Any:
    # Not checked against the metaschema (milliseconds per schema, on every pair): a schema the checker
    # cannot read faults no answer (`_fits`).
    return Draft202012Validator(schema) if isinstance(schema, Mapping) else None


def _fits(validator: Any, value: Any) -> bool:
    if validator is None:
        return True
    try:
        return next(validator.iter_errors(value), None) is None
    except (SchemaError, UnknownType, Unresolvable, TypeError, ValueError, LookupError):
        return True


def expect(request: Mapping[str, Any]) -> Expectation:
    """The request's JSON and tool expectations, in the Chat Completions or the Responses API shape."""
    wanted = request.get("response_format")
    text = request.get("text")
    if not isinstance(wanted, Mapping) and isinstance(text, Mapping):
        wanted = text.get("format")
    json_kind = wanted.get("type") if isinstance(wanted, Mapping) else None
    schema = None
    if json_kind == "json_schema" and isinstance(wanted, Mapping):
        inner = wanted.get("json_schema")
        holder: Mapping[str, Any] = inner if isinstance(inner, Mapping) else wanted
        schema = _validator(holder.get("schema"))
    tools: dict[str, Any] = {}
    for tool in request.get("tools") or ():
        if not isinstance(tool, Mapping):
            continue
        nested = tool.get("function")
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else tool
        if isinstance(function.get("name"), str):
            tools[function["name"]] = _validator(function.get("parameters"))
    return Expectation(json=json_kind in ("json_object", "json_schema"), schema=schema, tools=tools)


@dataclass(frozen=True, slots=True)
class Checks:
    """What the checks found in one answer. None: the check does not apply to it."""

    json_invalid: bool | None
    tools_invalid: bool | None
    refusal: bool
    empty: bool
    cut_off: bool


def _json_invalid(text: str, schema: Any) -> bool:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return not _fits(schema, value)


def _tools_invalid(calls: tuple[tuple[str, str], ...], offered: Mapping[str, Any]) -> bool:
    for name, arguments in calls:
        if name not in offered:
            return True
        try:
            value = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return True
        if not isinstance(value, dict) or not _fits(offered[name], value):
            return True
    return False


def check(answer: AnswerSummary, expectation: Expectation) -> Checks | None:
    """The checks of a delivered answer; None for a failed request (the error gates judge those)."""
    if not answer.ok:
        return None
    calls = answer.tool_calls
    return Checks(
        # An answer that calls tools instead of writing text owes no JSON.
        json_invalid=_json_invalid(answer.text, expectation.schema) if expectation.json and not calls else None,
        tools_invalid=_tools_invalid(calls, expectation.tools) if calls else None,
        refusal=answer.refusal,
        empty=not answer.text.strip() and not calls and not answer.refusal,
        cut_off=answer.finish_reason == "length",
    )


_COUNTS = re.compile(r"[a-z_]+")


@dataclass(frozen=True, slots=True)
class QualityCounts:
    """Counts of checked answers of one arm, and, on the candidate arm, of checked pairs and judged pairs."""

    checked: int = 0
    json_expected: int = 0
    json_invalid: int = 0
    tool_answers: int = 0
    tools_invalid: int = 0
    refusals: int = 0
    empty: int = 0
    cut_off: int = 0
    # Pairs (candidate arm only): both answers checked for JSON / both calling tools, and how they differed.
    json_pairs: int = 0
    json_worse: int = 0
    json_better: int = 0
    tool_pairs: int = 0
    tools_worse: int = 0
    tools_better: int = 0
    # The judge (candidate arm only): pairs judged, and the candidate's wins, ties and losses; `flips` are
    # judgements that changed with the order of the answers (counted as ties); `noise_pairs` compared two
    # baseline answers to one request, `noise_decisive` of them got a preference all the same.
    judged: int = 0
    wins: int = 0
    ties: int = 0
    losses: int = 0
    flips: int = 0
    noise_pairs: int = 0
    noise_decisive: int = 0

    @classmethod
    def of_answer(cls, checks: Checks) -> QualityCounts:
        return cls(
            checked=1, json_expected=checks.json_invalid is not None, json_invalid=checks.json_invalid is True,
            tool_answers=checks.tools_invalid is not None, tools_invalid=checks.tools_invalid is True,
            refusals=checks.refusal, empty=checks.empty, cut_off=checks.cut_off,
        )

    @classmethod
    def of_pair(cls, baseline: Checks, candidate: Checks) -> QualityCounts:
        """The candidate arm's counts for one pair: its own answer's, and how it compared."""
        own = cls.of_answer(candidate)
        json = baseline.json_invalid is not None and candidate.json_invalid is not None
        tools = baseline.tools_invalid is not None and candidate.tools_invalid is not None
        return dataclasses.replace(
            own,
            json_pairs=json, json_worse=json and candidate.json_invalid is True and baseline.json_invalid is False,
            json_better=json and baseline.json_invalid is True and candidate.json_invalid is False,
            tool_pairs=tools, tools_worse=tools and candidate.tools_invalid is True and baseline.tools_invalid is False,
            tools_better=tools and baseline.tools_invalid is True and candidate.tools_invalid is False,
        )

    def plus(self, other: QualityCounts) -> QualityCounts:
        return QualityCounts(*(int(a) + int(b) for a, b in zip(self._values(), other._values(), strict=True)))

    def minus(self, other: QualityCounts) -> QualityCounts:
        return QualityCounts(*(max(0, int(a) - int(b)) for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def rate(self, part: str, whole: str) -> float | None:
        total = int(getattr(self, whole))
        return int(getattr(self, part)) / total if total else None

    def to_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityCounts:
        known = {f.name for f in dataclasses.fields(cls)}
        counts = {k: int(v) for k, v in data.items() if k in known and _COUNTS.fullmatch(k)}
        if any(v < 0 for v in counts.values()):
            raise ValueError("quality counts must not be negative")
        return cls(**counts)


@dataclass(frozen=True, slots=True)
class PairQuality:
    """The checks of a compared pair: each delivered answer's own counts (for the per-arm metrics), and what
    each arm's window records (the candidate's also says how its answer compared with the baseline's)."""

    own: Mapping[Arm, QualityCounts]
    window: Mapping[Arm, QualityCounts]


def check_pair(request: Mapping[str, Any], baseline: AnswerSummary, candidate: AnswerSummary) -> PairQuality:
    expectation = expect(request)
    base, cand = check(baseline, expectation), check(candidate, expectation)
    own: dict[Arm, QualityCounts] = {}
    window: dict[Arm, QualityCounts] = {}
    if base is not None:
        own["baseline"] = window["baseline"] = QualityCounts.of_answer(base)
    if cand is not None:
        own["candidate"] = QualityCounts.of_answer(cand)
        window["candidate"] = QualityCounts.of_pair(base, cand) if base is not None else own["candidate"]
    return PairQuality(own, window)
