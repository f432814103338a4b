"""Behaviour knobs of the simulated upstream and the pure fault decision.

Everything here is deliberately free of I/O so the decision logic can be
unit-tested without sockets: the server owns the RNG and the script
position and simply asks :func:`decide_outcome` what to do next.
"""

from __future__ import annotations

import random
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simulator.judge import JudgeScript
from simulator.quality import Quality

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "unavailable",
    "timeout",
    "stream_break",
    "garbage",
    "malformed",
]
ScriptStep = Literal[
    "ok",
    "rate_limit",
    "server_error",
    "unavailable",
    "timeout",
    "stream_break",
    "garbage",
    "malformed",
]

OK: Final = "ok"
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)
SCRIPT_STEPS: Final[tuple[str, ...]] = get_args(ScriptStep)


def _equal_fault_weights() -> dict[FaultKind, float]:
    return dict.fromkeys(FAULT_KINDS, 1.0)


class SimulationSettings(BaseModel):
    """How the simulator answers; replaceable at runtime via ``PUT /_sim/behaviour``.

    Frozen so a settings object can be shared between the server and tests
    without one side mutating what the other is reading mid-request.

    Latency: ``first_token_ms`` (+/- uniform ``jitter_ms``, floored at 0) before
    the first stream chunk or the non-stream answer; ``per_token_ms`` between
    stream content chunks, or times the completion tokens for non-stream.

    Outcomes, one per chat/embeddings request: ``script`` items first, then
    ``error_rate`` with ``error_kinds`` weights. ``rate_limit`` (429 with
    ``Retry-After``), ``server_error`` (500) and ``unavailable`` (503) answer
    at once, without latency. ``timeout`` stays silent for ``hang_s`` then
    closes the connection. ``stream_break`` sends about half the stream (or
    half the JSON body) and aborts the connection. ``garbage`` answers 200
    with undecodable JSON (for streams: an SSE data line that is not JSON).
    ``malformed`` answers 200 with well-formed JSON that is not an answer (no
    ``choices``, no ``data``); streams send about half their chunks, then one
    data line that is not JSON, then ``[DONE]``, as if nothing had happened.

    Content: ``replies[model]``, else ``reply``, else generated filler that
    starts with ``[simulated]`` and is ``output_tokens`` pieces long. Fixed
    replies are sent verbatim (they may be JSON a caller parses), split into
    word pieces, one piece per token. ``max_completion_tokens`` or
    ``max_tokens`` truncate the pieces and turn finish_reason into "length".
    Without a fixed reply, a request asking for structured output gets the
    smallest JSON that fits its schema (simulator.schema), and one offering
    function tools gets a call to one of them (simulator.tools).

    Tool use (Chat Completions): ``tool_rounds`` is how many tool results a
    turn must hold before the model answers; until then every answer is one
    more tool call (a ReAct loop, one call per round trip), with arguments
    that vary by round. 1, the default: one call, then an ordinary reply.

    Answer quality: ``qualities[model]``, else ``quality`` (simulator.quality):
    rates of short, off-topic, invalid-JSON answers and malformed tool
    arguments, reproducible per request; the default is healthy. ``judge``
    (simulator.judge), when set, answers judge prompts (migration.judge's
    format) with a scripted JSON verdict that follows the answers shown.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_token_ms: float = Field(default=0.0, ge=0)
    per_token_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)

    output_tokens: int = Field(default=16, ge=0)

    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_kinds: dict[FaultKind, float] = Field(default_factory=_equal_fault_weights)
    retry_after_s: float = Field(default=1.0, ge=0)
    hang_s: float = Field(default=30.0, ge=0)

    script: list[ScriptStep] = Field(default_factory=list)

    report_usage: bool = True
    reply: str | None = None
    replies: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None

    record: bool = True
    record_limit: int = Field(default=10000, ge=0)

    embedding_dims: int = Field(default=8, ge=1, le=3072)

    tool_rounds: int = Field(default=1, ge=1, le=1000)

    quality: Quality = Field(default_factory=Quality)
    qualities: dict[str, Quality] = Field(default_factory=dict)
    judge: JudgeScript | None = None

    @field_validator("error_kinds")
    @classmethod
    def _weights_non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, weight in value.items():
            if weight < 0:
                raise ValueError(f"weight for {kind!r} must be >= 0")
        return value

    @model_validator(mode="after")
    def _errors_need_a_kind(self) -> SimulationSettings:
        # A positive error rate with no weighted kind could never be honoured,
        # so reject it up front instead of silently answering "ok".
        if self.error_rate > 0 and sum(self.error_kinds.values()) <= 0:
            raise ValueError("error_rate > 0 requires at least one positive weight in error_kinds")
        return self


def decide_outcome(rng: random.Random, settings: SimulationSettings, script_pos: int) -> str:
    """Pick the outcome for the request at ``script_pos`` (0-based).

    The script wins while it lasts; afterwards ``error_rate`` applies. The
    RNG is only touched when a random decision is actually needed, so a
    fault-free configuration costs nothing per request and scripted runs
    leave the random stream untouched.
    """
    script = settings.script
    if script_pos < len(script):
        return script[script_pos]
    rate = settings.error_rate
    if rate <= 0.0 or rng.random() >= rate:
        return OK
    kinds = [kind for kind, weight in settings.error_kinds.items() if weight > 0]
    weights = [settings.error_kinds[kind] for kind in kinds]
    return rng.choices(kinds, weights=weights, k=1)[0]
