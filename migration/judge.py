"""An LLM judge on sampled compared pairs: which answer is better, the baseline's or the candidate's?

Off the client's path, fire and forget, like shadow copies. A sampled pair (both answers delivered)
is judged twice, once in each order, so a judge that prefers a position cannot pass for one that
prefers an answer: a judgement that flips with the order counts as a tie (`flips`). A share of the
judged requests also gets a second baseline answer (a copy on the shadow ledger), judged against the
first the same way: how often the judge prefers one of two answers of the same model is the noise
floor the win-rate gate reads beside the candidate's result (migration.quality_gates).

The judge is an alias of the config, called through the gateway's own path (`JudgeCall`, bound at
start-up), so it gets routing, fallbacks and cost accounting. Its spend has a hard cap per rolling
hour: a pair is judged only if the worst case of all its calls fits in what the hour has left, and
that worst case is held until the calls are charged. Concurrency is bounded; a pair that finds no
slot is dropped and counted, never queued. Prompts and answers are never logged; with `store_examples`
the judged pairs (excerpts of the request and both answers, the verdict, the judge's reasons) are kept in
the store for the report, for `examples_retention_s`, the newest `max_examples` of them.

A pre-flight replay (migration.replay) judges its pairs through `judge_now`: unsampled, awaited, under the
same cap and the same privacy switches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from config.migration import QualityGates
from migration.compare import AnswerSummary
from migration.quality import QualityCounts
from telemetry.migration_metrics import MigrationMetrics

_log = logging.getLogger("cutover.migration")

Preference = Literal["baseline", "candidate", "tie"]
# (alias, messages, max_tokens) -> (reply text, cost in USD); raises when the call failed.
JudgeCall = Callable[[str, list[dict[str, Any]], int], Awaitable[tuple[str, Decimal]]]
# (alias, prompt token bound, completion tokens) -> the dearest cost of such a call; None: unpriced.
WorstCase = Callable[[str, int, int], Decimal | None]
# A second answer from the baseline's target to the same request (None: it failed).
SecondAnswer = Callable[[], Awaitable[AnswerSummary | None]]
# (migration id, its quality settings, a judged pair) -> kept in the store, with the settings' retention.
ExampleSink = Callable[[str, QualityGates, dict[str, Any]], Awaitable[None]]

RUBRIC = """You are an impartial judge of two answers to the same request. Judge which answer serves the \
request better: correct, complete, on topic, following every instruction and format the request asks for, \
and clear. Length is not quality: prefer the shorter of two equally good answers. If neither is better, say \
tie. Answer with ONE JSON object and nothing else: {"winner": "A" | "B" | "tie", "reason": "one short sentence"}"""

_REQUEST_CHARS = 6000
_ANSWER_CHARS = 6000
_VERDICT_TOKENS = 200
_REASON_CHARS = 300
# What a stored example keeps of the request and of each answer.
_EXCERPT_CHARS = 2000
_HOUR_S = 3600.0
_WINNER = re.compile(r'"winner"\s*:\s*"(A|B|tie)"', re.IGNORECASE)


def _fenced(text: str, limit: int) -> str:
    # No content can forge a delimiter of the prompt.
    return text[:limit].replace("<<<", "<< <")


def request_text(request: Mapping[str, Any]) -> str:
    """The request as the judge reads it: the conversation's text (chat messages, or Responses input)."""
    lines = []
    items = request.get("messages") or request.get("input") or request.get("prompt") or ""
    for item in items if isinstance(items, list) else [{"role": "user", "content": items}]:
        if not isinstance(item, Mapping):
            continue
        content = item.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        lines.append(f"{item.get('role', 'user')}: {content if isinstance(content, str) else ''}")
    return "\n".join(lines)


def judge_messages(rubric: str, request: str, first: str, second: str) -> list[dict[str, Any]]:
    user = (f"<<<request>>>\n{_fenced(request, _REQUEST_CHARS)}\n<<<end request>>>\n\n"
            f"<<<answer A>>>\n{_fenced(first, _ANSWER_CHARS)}\n<<<end answer A>>>\n\n"
            f"<<<answer B>>>\n{_fenced(second, _ANSWER_CHARS)}\n<<<end answer B>>>")
    return [{"role": "system", "content": rubric}, {"role": "user", "content": user}]


def read_verdict(text: str) -> Literal["A", "B", "tie"] | None:
    """The judge's choice from its reply, or None when it cannot be read."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    winner = data.get("winner") if isinstance(data, dict) else None
    if winner is None:
        match = _WINNER.search(text)
        winner = match.group(1) if match else None
    if isinstance(winner, str) and winner.upper() in ("A", "B"):
        return "A" if winner.upper() == "A" else "B"
    return "tie" if isinstance(winner, str) and winner.lower() == "tie" else None


def read_reason(text: str) -> str:
    """The judge's short reason, when its reply is the JSON object the rubric asks for."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ""
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason[:_REASON_CHARS] if isinstance(reason, str) else ""


def combine(first: Preference, second: Preference) -> tuple[Preference, bool]:
    """Two judgements of one pair (one per order) -> the verdict, and whether it flipped with the order.
    Only a preference both orders share counts; a split decision is a tie."""
    if first == second:
        return first, False
    return "tie", {first, second} == {"baseline", "candidate"}


@dataclass
class _Ledger:
    """Judge spend over the last hour, and what calls in flight hold against it."""

    spent: deque[tuple[float, Decimal]]
    held: Decimal = Decimal(0)

    def total(self, now: float) -> Decimal:
        while self.spent and self.spent[0][0] <= now - _HOUR_S:
            self.spent.popleft()
        return sum((cost for _, cost in self.spent), Decimal(0)) + self.held


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A pair let through: what the judge will read, and the worst case held against the hour's cap."""

    rubric: str
    request: str
    noise: bool
    ledger: _Ledger
    hold: Decimal


class JudgeRunner:
    def __init__(
        self, metrics: MigrationMetrics, record: Callable[[Any, QualityCounts], None],
        worst_case: WorstCase | None = None, judge_allowed: Callable[[str], bool] = lambda alias: True,
        clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random,
        keep_example: ExampleSink | None = None, wall: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._record = record
        self._worst_case = worst_case or (lambda alias, prompt, completion: None)
        self._judge_allowed = judge_allowed
        self._clock = clock
        self._rng = rng
        self._keep_example = keep_example
        self._wall = wall
        self._call: JudgeCall | None = None
        self._ledgers: dict[str, _Ledger] = {}
        self._running: dict[str, set[asyncio.Task[None]]] = {}

    def bind(self, call: JudgeCall) -> None:
        self._call = call

    @property
    def bound(self) -> bool:
        return self._call is not None

    def spent_last_hour(self, migration_id: str) -> Decimal:
        ledger = self._ledgers.get(migration_id)
        return Decimal(0) if ledger is None else ledger.total(self._clock())

    def offer(
        self, decision: Any, alias: str, settings: QualityGates, request: Mapping[str, Any],
        baseline: AnswerSummary, candidate: AnswerSummary, second_baseline: SecondAnswer | None = None,
    ) -> bool:
        """Judge this pair if it is sampled and allowed, and the concurrency and the spend cap have room."""
        mid = decision.migration_id
        if not self._judgeable(settings, alias, baseline, candidate) or self._rng() >= settings.sample:
            return False
        if self._excluded(mid, alias, settings, request):
            return False
        running = self._running.setdefault(mid, set())
        if len(running) >= settings.max_concurrency:
            self._metrics.judge_dropped.labels(mid, "busy").inc()
            return False
        admitted = self._admit(mid, settings, request, baseline, candidate, second_baseline is not None)
        if admitted is None:
            return False

        async def judge_and_record() -> None:
            counts = await self._judge(mid, settings, admitted, baseline, candidate, second_baseline, "shadow")
            if counts != QualityCounts():
                self._record(decision, counts)

        task = asyncio.ensure_future(judge_and_record())
        running.add(task)
        task.add_done_callback(running.discard)
        return True

    async def judge_now(
        self, migration_id: str, alias: str, settings: QualityGates, request: Mapping[str, Any],
        baseline: AnswerSummary, candidate: AnswerSummary, second_baseline: SecondAnswer | None = None,
        source: str = "replay",
    ) -> QualityCounts | None:
        """Judge this pair now, unsampled (a pre-flight replay): None when it may not be judged or the
        spend cap has no room. The caller bounds the concurrency."""
        if not self._judgeable(settings, alias, baseline, candidate):
            return None
        if self._excluded(migration_id, alias, settings, request):
            return None
        noise = second_baseline is not None
        admitted = self._admit(migration_id, settings, request, baseline, candidate, noise)
        if admitted is None:
            return None
        return await self._judge(migration_id, settings, admitted, baseline, candidate, second_baseline, source)

    def cancel(self, migration_id: str) -> None:
        for task in list(self._running.get(migration_id, ())):
            task.cancel()

    async def cancel_all(self) -> None:
        tasks = [t for pool in self._running.values() for t in pool]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _judgeable(self, settings: QualityGates, alias: str, baseline: AnswerSummary,
                   candidate: AnswerSummary) -> bool:
        return (settings.judge is not None and settings.judge != alias and self._call is not None
                and baseline.ok and candidate.ok)

    def _excluded(self, mid: str, alias: str, settings: QualityGates, request: Mapping[str, Any]) -> bool:
        if (settings.exclude_tools and request.get("tools")) or not self._judge_allowed(alias):
            self._metrics.judge_dropped.labels(mid, "excluded").inc()
            return True
        return False

    def _admit(
        self, mid: str, settings: QualityGates, request: Mapping[str, Any], baseline: AnswerSummary,
        candidate: AnswerSummary, noise_possible: bool,
    ) -> _Admitted | None:
        """Hold the pair's worst case against the hour's cap; None (counted) when it does not fit."""
        assert settings.judge is not None
        noise = noise_possible and self._rng() < settings.noise_share
        text = request_text(request)
        rubric = settings.rubric or RUBRIC
        prompt = len(orjson.dumps(judge_messages(rubric, text, baseline.text, candidate.text))) + 16
        worst = self._worst_case(settings.judge, prompt, _VERDICT_TOKENS)
        hold = Decimal(0) if worst is None else worst * 2
        if noise and worst is not None:
            # The second baseline answer is unknown yet: held at the longest an answer is shown to the judge.
            longest = prompt - len(orjson.dumps(candidate.text[:_ANSWER_CHARS])) + _ANSWER_CHARS * 6
            hold += 2 * (self._worst_case(settings.judge, longest, _VERDICT_TOKENS) or Decimal(0))
        ledger = self._ledgers.setdefault(mid, _Ledger(deque()))
        if ledger.total(self._clock()) + hold > Decimal(str(settings.max_usd_per_hour)):
            self._metrics.judge_dropped.labels(mid, "budget").inc()
            return None
        ledger.held += hold
        return _Admitted(rubric, text, noise, ledger, hold)

    async def _judge(
        self, mid: str, settings: QualityGates, admitted: _Admitted, baseline: AnswerSummary,
        candidate: AnswerSummary, second_baseline: SecondAnswer | None, source: str,
    ) -> QualityCounts:
        spent = Decimal(0)
        rubric, request = admitted.rubric, admitted.request

        async def ask(first: str, second: str) -> tuple[Literal["A", "B", "tie"], str] | None:
            nonlocal spent
            assert self._call is not None and settings.judge is not None
            try:
                reply, cost = await self._call(settings.judge, judge_messages(rubric, request, first, second),
                                               _VERDICT_TOKENS)
            except Exception as exc:  # a failed judge call costs the verdict, never the migration
                self._metrics.judge_calls.labels(mid, "failed").inc()
                _log.info("judge call failed", extra={"fields": {"migration": mid, "error": type(exc).__name__}})
                return None
            spent += cost
            self._metrics.judge_spend.labels(mid).inc(float(cost))
            verdict = read_verdict(reply)
            self._metrics.judge_calls.labels(mid, "ok" if verdict is not None else "unreadable").inc()
            return None if verdict is None else (verdict, read_reason(reply))

        async def both_orders(a: str, b: str) -> tuple[Preference, bool, tuple[str, str]] | None:
            # a is the "baseline" side, b the "candidate" side of the result.
            straight, swapped = await asyncio.gather(ask(a, b), ask(b, a))
            if straight is None or swapped is None:
                return None
            first = {"A": "baseline", "B": "candidate", "tie": "tie"}[straight[0]]
            second = {"A": "candidate", "B": "baseline", "tie": "tie"}[swapped[0]]
            preference, flipped = combine(first, second)  # type: ignore[arg-type]
            return preference, flipped, (straight[1], swapped[1])

        try:
            judged = await both_orders(baseline.text, candidate.text)
            counts = QualityCounts()
            if judged is not None:
                preference, flipped, reasons = judged
                counts = QualityCounts(judged=1, wins=preference == "candidate", ties=preference == "tie",
                                       losses=preference == "baseline", flips=flipped)
                self._metrics.judge_pairs.labels(mid, "flip" if flipped else {
                    "candidate": "win", "baseline": "loss", "tie": "tie"}[preference]).inc()
                if settings.store_examples and self._keep_example is not None:
                    await self._store_example(mid, settings, example(
                        self._wall(), source, request, baseline.text, candidate.text, preference, flipped, reasons))
            if second_baseline is not None and admitted.noise:
                other = await second_baseline()
                noise = await both_orders(baseline.text, other.text) if other is not None and other.ok else None
                if noise is not None:
                    decisive = noise[0] != "tie"
                    counts = counts.plus(QualityCounts(noise_pairs=1, noise_decisive=decisive))
                    self._metrics.judge_pairs.labels(mid, "noise_decisive" if decisive else "noise_tie").inc()
            return counts
        finally:
            admitted.ledger.held -= admitted.hold
            admitted.ledger.spent.append((self._clock(), spent))

    async def _store_example(self, mid: str, settings: QualityGates, entry: dict[str, Any]) -> None:
        assert self._keep_example is not None
        try:
            await self._keep_example(mid, settings, entry)
        except Exception as exc:  # a lost example costs the report a line, never the verdict
            self._metrics.judge_dropped.labels(mid, "example_not_stored").inc()
            _log.info("judged pair not stored", extra={"fields": {"migration": mid, "error": type(exc).__name__}})


def example(
    at: float, source: str, request: str, baseline: str, candidate: str, preference: Preference, flipped: bool,
    reasons: tuple[str, str],
) -> dict[str, Any]:
    """A judged pair as the report shows it (kept only with `store_examples`)."""
    return {
        "time": datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": source, "verdict": preference, "flipped": flipped,
        "reason": " / ".join(r for r in reasons if r) or "(no reason given)",
        "request_excerpt": request[:_EXCERPT_CHARS], "baseline": baseline[:_EXCERPT_CHARS],
        "candidate": candidate[:_EXCERPT_CHARS],
    }
