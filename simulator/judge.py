"""A scripted LLM judge: verdicts that follow the answers it is shown, so tests of the gateway's judge
(migration.judge) are deterministic.

With SimulationSettings.judge set, a chat request whose last user message holds the judge prompt's blocks
(``<<<request>>>``, ``<<<answer A>>>``, ``<<<answer B>>>``, each closed by its ``<<<end ...>>>``, a ``<<<``
inside content written ``<< <``) is answered with one JSON object, ``{"winner": "A" | "B" | "tie",
"reason": "..."}``, as an ordinary reply (its usage counted like any other).

Each answer loses a point per defect (`defects`): it holds quality.OFF_TOPIC_MARKER; it has fewer than half
the words of the other answer; JSON was expected and it is not valid JSON. JSON is expected when the request
text mentions JSON or either answer is a JSON object or array (the judge prompt does not carry the request's
response_format). More points win; equal points are a tie, except:

- ``position_bias`` "A" or "B": that position always wins, whatever the answers;
- ``noise`` (0..1): a pair with equal points is decided anyway with this probability, drawn from ``seed``,
  the request and the two answers regardless of their order. Two different answers: the draw also picks
  which one wins, so the verdict follows that answer into either position and the gateway's two orders
  agree. Two identical answers (a healthy model answers the same request the same way twice): the prompts
  of both orders are one text, so the k-th time a prompt is seen decides in the draw of round k // 2, for
  a drawn position when k is even and the other one when odd; the two orders of a pair (two sightings of
  one prompt) then prefer the same answer. The noise floor the gateway measures is therefore about ``noise`` (concurrent
  judgements of identical pairs can interleave their sightings and blur this).

Pure: simulator.shaping finds the prompt and builds the reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from simulator.quality import OFF_TOPIC_MARKER, draw
from simulator.wire import message_text

ANSWER_A: Final = "<<<answer A>>>"
ANSWER_B: Final = "<<<answer B>>>"
_BLOCK: Final = re.compile(r"<<<(request|answer A|answer B)>>>\n(.*?)\n<<<end \1>>>", re.DOTALL)


class JudgeScript(BaseModel):
    """How the scripted judge decides (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    position_bias: Literal["A", "B"] | None = None
    noise: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0


def judge_prompt(messages: Any) -> tuple[str, str, str] | None:
    """(request, answer A, answer B) of a judge prompt in the last user message; None when there is none."""
    if not isinstance(messages, list):
        return None
    last = next((m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == "user"), None)
    text = message_text(last.get("content")) if last is not None else ""
    if ANSWER_A not in text or ANSWER_B not in text:
        return None
    blocks = {name: body.replace("<< <", "<<<") for name, body in _BLOCK.findall(text)}
    if "answer A" not in blocks or "answer B" not in blocks:
        return None
    return blocks.get("request", ""), blocks["answer A"], blocks["answer B"]


def _json_document(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict | list)
    except orjson.JSONDecodeError:
        return False


def _valid_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def defects(answer: str, other: str, json_expected: bool) -> list[str]:
    """What the judge holds against `answer`, beside `other`."""
    found = []
    if OFF_TOPIC_MARKER in answer:
        found.append("is off topic")
    if len(answer.split()) * 2 < len(other.split()):
        found.append("is much shorter")
    if json_expected and not _valid_json(answer):
        found.append("is not valid JSON")
    return found


def verdict(script: JudgeScript, request: str, a: str, b: str, occurrence: Callable[[str], int]) -> str:
    """The judge's reply to one prompt. `occurrence(key)`: the 0-based count of earlier sightings of `key`
    (consulted only for noise)."""
    winner: str
    if script.position_bias is not None:
        winner, reason = script.position_bias, f"answer {script.position_bias} reads better"
    else:
        json_expected = "json" in request.lower() or _json_document(a) or _json_document(b)
        against_a, against_b = defects(a, b, json_expected), defects(b, a, json_expected)
        if len(against_a) != len(against_b):
            winner = "A" if len(against_a) < len(against_b) else "B"
            loser, faults = ("B", against_b) if winner == "A" else ("A", against_a)
            reason = f"answer {loser} {', '.join(faults)}"
        else:
            winner, reason = "tie", "both answers serve the request equally well"
            if script.noise > 0:
                first, second = sorted((a, b))
                key = f"{draw(script.seed, request, first, second)}"
                seen = occurrence(key)
                round_ = seen // 2
                if draw(script.seed, "noise", key, round_) < script.noise:
                    if a == b:
                        opening = draw(script.seed, "position", key, round_) < 0.5
                        winner = "A" if opening == (seen % 2 == 0) else "B"
                    else:
                        preferred = min((a, b), key=lambda text: draw(script.seed, "prefer", key, round_, text))
                        winner = "A" if preferred == a else "B"
                    reason = f"answer {winner} reads slightly better"
    return orjson.dumps({"winner": winner, "reason": reason}).decode()
