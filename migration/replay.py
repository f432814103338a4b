"""Pre-flight replay: the alias's captured requests (migration.capture) sent to both arms of a migration
before any live traffic, compared and judged like shadow pairs, and judged by the same gates.

Each captured request goes to the baseline and to the candidate at the same moment (one attempt each,
under the shadow policy: no retry, no fallback, the targets' health left alone), so the two answers
meet the same upstream conditions and the latency and cost comparisons are fair. Requests naming one
of the migration's `shadow.exclude_tools` are never replayed: the copy could act a second time. Pairs
where both arms answered go through the cheap checks (migration.quality) and, when the migration has a
judge, to the judge (`JudgeRunner.judge_now`: every pair, in both orders, with the noise floor, under
the same spend cap and privacy switches). The replay's own window, built from these pairs alone, is
judged by `gates.evaluate` with the step's sample minimum but no hold time; the result goes into the
audit trail as a "replay" record whose verdict `history --verify` recomputes like a tick's.

The spend is real: each replayed request costs one baseline and one candidate call (plus the judge's).
It is counted on the shadow ledger (arm="shadow"), apart from client spend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from config.migration import MigrationSpec
from migration.answers import AnswerFetcher, copy_for
from migration.capture import Capture, CapturedRequest
from migration.compare import AnswerSummary, request_tool_names
from migration.gates import Verdict, evaluate
from migration.judge import JudgeRunner
from migration.quality import QualityCounts, check_pair
from migration.rollout import MigrationState
from migration.service import state_entry
from migration.split import names_excluded_tool
from migration.types import Arm
from migration.window import ArmWindow, Kind, Sample, StepWindow, kind_of
from providers.dispatch import Call, Outbound
from providers.target import TargetRef
from telemetry.metrics import status_class
from telemetry.migration_metrics import MigrationMetrics

_log = logging.getLogger("cutover.migration")

MAX_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class ReplayResult:
    migration_id: str
    alias: str
    # Captured requests read (the newest `limit`), and what became of them.
    captured: int
    replayed: int
    excluded: int
    unreadable: int
    # Pairs both arms answered, and how many of those the judge judged.
    compared: int
    judged: int
    window: StepWindow
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration": self.migration_id, "alias": self.alias, "captured": self.captured,
            "replayed": self.replayed, "excluded": self.excluded, "unreadable": self.unreadable,
            "compared": self.compared, "judged": self.judged, "window": self.window.to_dict(),
        }


@dataclass(slots=True)
class _Tally:
    samples: dict[Arm, list[Sample]] = field(default_factory=lambda: {"baseline": [], "candidate": []})
    attempts: dict[Arm, list[Kind]] = field(default_factory=lambda: {"baseline": [], "candidate": []})
    pairs: list[tuple[int, int]] = field(default_factory=list)
    quality: list[tuple[Arm, QualityCounts]] = field(default_factory=list)
    excluded: int = 0
    failed: int = 0
    compared: int = 0

    def window(self, started_at: float) -> StepWindow:
        window = StepWindow(started_at)
        for arm in ("baseline", "candidate"):
            window = window.with_arm(arm, ArmWindow.of(self.samples[arm], attempts=self.attempts[arm]))
        for candidate_micros, baseline_micros in self.pairs:
            window = window.plus_pair(candidate_micros, baseline_micros)
        for arm, counts in self.quality:
            window = window.plus_quality(arm, counts)
        return window


class Replayer:
    def __init__(
        self, answers: AnswerFetcher, capture: Capture, judge: JudgeRunner | None, metrics: MigrationMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._answers = answers
        self._capture = capture
        self._judge = judge
        self._metrics = metrics
        self._clock = clock

    async def replay(self, spec: MigrationSpec, limit: int | None = None, concurrency: int = 4) -> ReplayResult:
        captured, unreadable = await self._capture.captured(spec.alias, limit)
        mid = spec.id
        if unreadable:
            self._metrics.replayed.labels(mid, "unreadable").inc(unreadable)
        started = self._clock()
        tally = _Tally()
        judging = asyncio.Semaphore(spec.gates.quality.max_concurrency)
        targets = (TargetRef(spec.baseline.provider, spec.baseline.model),
                   TargetRef(spec.candidate.provider, spec.candidate.model))

        async def one(index: int, request: CapturedRequest) -> None:
            if names_excluded_tool(request_tool_names(request.payload), spec.shadow.exclude_tools):
                tally.excluded += 1
                self._metrics.replayed.labels(mid, "excluded").inc()
                return
            try:
                baseline, candidate = await asyncio.gather(*(
                    self._ask(spec, request, target, f"replay-{mid}-{index}-{arm}")
                    for target, arm in zip(targets, ("b", "c"), strict=True)))
            except Exception:  # the gateway's fault, not an arm's: the request counts for neither
                _log.exception("replayed request failed unexpectedly", extra={"fields": {"migration": mid}})
                self._metrics.replayed.labels(mid, "failed").inc()
                tally.failed += 1
                return
            self._metrics.replayed.labels(mid, "replayed").inc()
            self._count(tally, "baseline", baseline)
            self._count(tally, "candidate", candidate)
            if not (baseline.ok and candidate.ok):
                return
            tally.compared += 1
            tally.pairs.append((candidate.cost_micros, baseline.cost_micros))
            tally.quality.extend(check_pair(request.payload, baseline, candidate).window.items())
            if self._judge is not None and spec.gates.quality.judge is not None:
                async with judging:
                    counts = await self._judge.judge_now(
                        mid, spec.alias, spec.gates.quality, request.payload, baseline, candidate,
                        lambda: self._ask(spec, request, targets[0], f"replay-{mid}-{index}-noise"))
                if counts is not None:
                    tally.quality.append(("candidate", counts))

        # A few workers over the list, not a task per request: a capture may hold 100,000 of them.
        work = iter(enumerate(captured))

        async def worker() -> None:
            for index, request in work:
                await one(index, request)

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, MAX_CONCURRENCY)))))
        window = tally.window(started)
        # The replay has no step to hold: its sample minimum stands, its hold time does not.
        plan = spec.plan.model_copy(update={"min_step_s": 0.0})
        verdict = evaluate(window, spec.gates, plan, started)
        return ReplayResult(mid, spec.alias, len(captured), len(captured) - tally.excluded - tally.failed,
                            tally.excluded, unreadable, tally.compared, window.candidate.quality.judged, window,
                            verdict)

    async def _ask(self, spec: MigrationSpec, request: CapturedRequest, target: TargetRef,
                   request_id: str) -> AnswerSummary:
        body = copy_for(request.payload, target, request.stream)
        call = Call(spec.alias, request.path, (Outbound(target, body),), request.stream, request_id)
        answer = await self._answers.fetch(call, spec.shadow.timeout_s)
        m = self._metrics
        m.arm_requests.labels(spec.id, "shadow", status_class(answer.status)).inc()
        if answer.ok:
            m.arm_cost.labels(spec.id, "shadow").inc(answer.cost_micros / 1_000_000)
        return answer

    @staticmethod
    def _count(tally: _Tally, arm: Arm, answer: AnswerSummary) -> None:
        sample = Sample.of(answer.status, answer.latency_s, answer.ttft_s, answer.cost_micros)
        if sample is not None:
            tally.samples[arm].append(sample)
        kind = kind_of(answer.status)
        if kind is not None:
            tally.attempts[arm].append(kind)


def replay_entry(result: ReplayResult, actor: str, state: MigrationState, now: float) -> dict[str, Any]:
    """The audit record of a replay: the verdict (recomputable), and the window it judged."""
    reason = f"pre-flight replay of {result.replayed} captured requests: {result.verdict.reason}"
    entry = state_entry("replay", "Replay", actor, state, state, reason, now, result.verdict)
    entry["replay"] = result.to_dict()
    return entry
