"""Shadow copies: fire-and-forget, never on the primary's path.

A copy gets a deep-copied request with the shadow target's model and the stream
flag kept (so its time to first token is real), one attempt through the
dispatcher (`SHADOW` policy: no retry, no fallback, the targets' health left
alone) under its own timeout, and a slot in a bounded per-migration pool: when
the pool is full the copy is dropped and counted, never queued. Its answer never
reaches the client. When both sides are done the pair is compared
(migration.compare), the shadow arm's sample and the paired cost delta go into
the step's window, and its spend goes on the shadow ledger (arm="shadow" in the
metrics), apart from client spend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from metering.meter import Meter
from migration.answers import AnswerFetcher, copy_for
from migration.compare import AnswerSummary, compare, wants_json
from migration.judge import JudgeRunner
from migration.live import Decision, LiveMigrations
from migration.quality import check_pair
from migration.window import Sample, kind_of
from providers.dispatch import Call, Dispatcher, Outbound
from telemetry.metrics import status_class
from telemetry.migration_metrics import MigrationMetrics

_log = logging.getLogger("cutover.migration")


class ShadowPair:
    """The meeting point of a primary and its shadow copy."""

    def __init__(self) -> None:
        self._primary: asyncio.Future[AnswerSummary] = asyncio.get_running_loop().create_future()

    def set_primary(self, summary: AnswerSummary) -> None:
        if not self._primary.done():
            self._primary.set_result(summary)

    async def primary(self, timeout_s: float) -> AnswerSummary | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self._primary), timeout_s)
        except TimeoutError:
            return None


class ShadowRunner:
    def __init__(
        self, dispatcher: Dispatcher, meter: Meter, live: LiveMigrations, metrics: MigrationMetrics,
        judge: JudgeRunner | None = None,
    ) -> None:
        self._answers = AnswerFetcher(dispatcher, meter)
        self._live = live
        self._metrics = metrics
        self._judge = judge
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}

    def in_flight(self, migration_id: str) -> int:
        return len(self._tasks.get(migration_id, ()))

    def launch(
        self, decision: Decision, alias: str, payload: Mapping[str, Any], stream: bool, path: str, request_id: str
    ) -> ShadowPair | None:
        target = decision.shadow_target
        if target is None or not self._live.shadow_allowed(decision):
            return None
        settings = self._live.shadow_settings(decision.migration_id)
        tasks = self._tasks.setdefault(decision.migration_id, set())
        if len(tasks) >= settings.max_concurrency:
            self._metrics.shadow_requests.labels(decision.migration_id, "dropped").inc()
            return None
        call = Call(alias, path, (Outbound(target, copy_for(payload, target, stream)),), stream, request_id + "-shadow")
        pair = ShadowPair()
        task = asyncio.ensure_future(self._run(decision, call, pair, settings.timeout_s))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        self._metrics.shadow_requests.labels(decision.migration_id, "sent").inc()
        return pair

    def cancel(self, migration_id: str) -> None:
        """A rollback stops shadowing at once: copies in flight (and their judgements) are abandoned."""
        for task in list(self._tasks.get(migration_id, ())):
            task.cancel()
        if self._judge is not None:
            self._judge.cancel(migration_id)

    async def cancel_all(self) -> None:
        """At shutdown: no copy outlives the gateway (nothing would compare or record it)."""
        tasks = [t for pool in self._tasks.values() for t in pool]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._judge is not None:
            await self._judge.cancel_all()

    async def _run(self, decision: Decision, call: Call, pair: ShadowPair, timeout_s: float) -> None:
        migration_id = decision.migration_id
        try:
            shadow = await self._call(decision, call, timeout_s)
            self._account(decision, shadow)
            primary = await pair.primary(timeout_s)
            if primary is None:
                return
            self._compare(decision, primary, shadow, call.outbound[0].payload)
            self._offer_to_judge(decision, call, primary, shadow, timeout_s)
        except asyncio.CancelledError:
            self._metrics.shadow_requests.labels(migration_id, "cancelled").inc()
            raise
        except Exception:
            _log.exception("shadow copy failed unexpectedly", extra={"fields": {"migration": migration_id}})

    async def _call(self, decision: Decision, call: Call, timeout_s: float) -> AnswerSummary:
        answer = await self._answers.fetch(call, timeout_s)
        if not answer.ok:
            self._metrics.shadow_requests.labels(decision.migration_id, "failed").inc()
        return answer

    def _account(self, decision: Decision, shadow: AnswerSummary) -> None:
        m = self._metrics
        mid = decision.migration_id
        m.arm_requests.labels(mid, "shadow", status_class(shadow.status)).inc()
        if shadow.ok:
            m.arm_duration.labels(mid, "shadow").observe(shadow.latency_s)
            if shadow.ttft_s is not None:
                m.arm_ttft.labels(mid, "shadow").observe(shadow.ttft_s)
            m.arm_cost.labels(mid, "shadow").inc(shadow.cost_micros / 1_000_000)
        m.arm_attempts.labels(mid, "shadow", status_class(shadow.status)).inc()
        if decision.shadow_arm is not None:
            # A copy is one attempt (no retry) and its own request.
            kind = kind_of(shadow.status)
            sample = Sample.of(shadow.status, shadow.latency_s, shadow.ttft_s, shadow.cost_micros)
            self._live.record(decision, decision.shadow_arm, sample, () if kind is None else (kind,))

    def _compare(
        self, decision: Decision, primary: AnswerSummary, shadow: AnswerSummary, request: Mapping[str, Any],
    ) -> None:
        m = self._metrics
        mid = decision.migration_id
        result = compare(primary, shadow, wants_json(request))
        self._check_quality(decision, primary, shadow, request)
        m.shadow_requests.labels(mid, "compared").inc()
        checks = {
            "status": result.status_match, "finish_reason": result.finish_match, "exact": result.exact_match,
            "normalised": result.normalised_match, "tools": result.tools_match, "overall": result.agrees,
        }
        if result.json_parity is not None:
            checks["json"] = result.json_parity
        for name, agreed in checks.items():
            if agreed:
                m.shadow_agreement.labels(mid, name).inc()
        m.shadow_latency_delta.labels(mid).observe(result.latency_delta_s)
        m.shadow_cost_delta.labels(mid).observe(result.cost_delta_micros / 1_000_000)
        if primary.ok and shadow.ok:
            m.shadow_similarity.labels(mid).observe(result.similarity)
            baseline, candidate = _by_arm(decision, primary, shadow)
            self._live.record_pair(decision, candidate.cost_micros, baseline.cost_micros)

    def _check_quality(
        self, decision: Decision, primary: AnswerSummary, shadow: AnswerSummary, request: Mapping[str, Any],
    ) -> None:
        """The cheap checks on both answers of a pair: each arm's own counts, and the pair's on the candidate."""
        if decision.shadow_arm is None:
            return
        baseline, candidate = _by_arm(decision, primary, shadow)
        checked = check_pair(request, baseline, candidate)
        for arm, counts in checked.own.items():
            for name, value in counts.to_dict().items():
                if value:
                    self._metrics.quality_checks.labels(decision.migration_id, arm, name).inc(value)
        for arm, counts in checked.window.items():
            self._live.record_quality(decision, arm, counts)

    def _offer_to_judge(
        self, decision: Decision, call: Call, primary: AnswerSummary, shadow: AnswerSummary, timeout_s: float,
    ) -> None:
        spec = self._live.spec_of(decision.migration_id)
        if self._judge is None or spec is None or decision.shadow_arm is None:
            return
        baseline, candidate = _by_arm(decision, primary, shadow)
        target = decision.shadow_target if decision.shadow_arm == "baseline" else decision.arm_target
        request = call.outbound[0].payload

        async def second_baseline() -> AnswerSummary | None:
            # The noise floor's second answer from the baseline: one more copy, on the shadow ledger.
            assert target is not None
            body = copy_for(request, target, call.stream)
            again = Call(call.alias, call.path, (Outbound(target, body),), call.stream, call.request_id + "-noise")
            answer = await self._call(decision, again, timeout_s)
            if answer.ok:
                self._metrics.arm_cost.labels(decision.migration_id, "shadow").inc(answer.cost_micros / 1_000_000)
            return answer

        self._judge.offer(decision, spec.alias, spec.gates.quality, request, baseline, candidate,
                          second_baseline if target is not None else None)


def _by_arm(decision: Decision, primary: AnswerSummary, shadow: AnswerSummary) -> tuple[AnswerSummary, AnswerSummary]:
    """(baseline's answer, candidate's answer) of a compared pair."""
    return (shadow, primary) if decision.shadow_arm == "baseline" else (primary, shadow)
