"""Recompute every verdict of a migration from its audit trail alone.

Each analysis tick's audit record carries the verdict with, for every gate, the
counts its test read (`GateFigures.inputs`), its threshold and its level. Running
the same pure tests (`gates.judge`) and the same decision (`gates.decide`) on those
records must give back what was recorded; anything else is a mismatch: a record
edited after the fact, or a decision the code of the day did not make the way it
says. Records written before verdicts kept their inputs cannot be recomputed and
are counted apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migration.gates import Verdict, decide, judge


@dataclass(frozen=True, slots=True)
class Mismatch:
    time: str
    what: str
    recorded: Any
    recomputed: Any

    def __str__(self) -> str:
        return f"{self.time}  {self.what}: recorded {self.recorded!r}, recomputed {self.recomputed!r}"


@dataclass(frozen=True, slots=True)
class Report:
    verdicts: int
    gates: int
    unverifiable: int
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        lines = [f"{self.verdicts} verdicts and {self.gates} gate results recomputed from the audit records: "
                 + ("all match" if self.ok else f"{len(self.mismatches)} mismatches")]
        if self.unverifiable:
            lines.append(f"{self.unverifiable} older records carry no test inputs and were not recomputed")
        lines += [str(m) for m in self.mismatches]
        return "\n".join(lines)


def verify(entries: Iterable[Mapping[str, Any]]) -> Report:
    verdicts = gates = unverifiable = 0
    mismatches: list[Mismatch] = []
    for entry in entries:
        recorded = entry.get("verdict")
        if not recorded:
            continue
        time = str(entry.get("time", "?"))
        try:
            verdict = Verdict.from_dict(recorded)
            tests = [(g, g.inputs["test"]) for g in verdict.gates]
        except (KeyError, TypeError, ValueError):
            unverifiable += 1
            continue
        verdicts += 1
        for gate, test in tests:
            gates += 1
            try:
                result, estimate = judge(test, gate.inputs, gate.threshold, gate.alpha)
            except (KeyError, TypeError, ValueError) as exc:
                mismatches.append(Mismatch(time, f"{gate.gate} ({gate.scope}) inputs", gate.inputs, repr(exc)))
                continue
            if (result, estimate) != (gate.result, gate.estimate):
                mismatches.append(Mismatch(time, f"{gate.gate} ({gate.scope})", (gate.result, gate.estimate),
                                           (result, estimate)))
        again = decide(
            verdict.gates, requests_candidate=verdict.requests_candidate, held_s=verdict.held_s,
            min_samples=verdict.min_samples, min_step_s=verdict.min_step_s,
        )
        if again != (verdict.result, verdict.critical, verdict.reason):
            mismatches.append(Mismatch(time, "verdict", (verdict.result, verdict.critical, verdict.reason), again))
    return Report(verdicts, gates, unverifiable, tuple(mismatches))
