"""What a migration is: the validated, immutable description an operator writes.

A migration moves one alias from a baseline target (what serves today) to a
candidate target through a step plan:

    pending -> shadow (copy `shadow_percent` of traffic to the candidate)
            -> canary steps (`weights`, percent of live traffic, last is 100)
            -> promoted (the candidate serves everything; `post_promotion_shadow_percent`
               is copied back to the old baseline for `safety_window_s`)

Each step is held for at least `min_step_s` and until both arms have `min_samples`
requests; `GateThresholds` say what the candidate must not exceed. How the steps
are driven lives in `migration.rollout`, how gates are judged in `migration.gates`.

It is part of the config file (`migrations:`) and of the admin API's create call,
so it lives with the rest of the config; the migration core reads it.
"""

from __future__ import annotations

from itertools import pairwise
from statistics import NormalDist
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from config.base import NonNegFloat, PosFloat, Strict, Target

Percent = Annotated[float, Field(ge=0, le=100)]
OpenUnit = Annotated[float, Field(gt=0, lt=1)]

BASIS_POINTS = 10_000


def percent_to_bp(percent: float) -> int:
    """Percent of traffic -> basis points (1 bp = 0.01 %), the unit the splitter works in."""
    return round(percent * 100)


class QualityGates(Strict):
    """Answer quality as gates (migration.quality, migration.judge); judged on compared pairs only."""

    # The candidate's invalid-JSON rate (requests that asked for JSON) and invalid-tool-call rate (answers
    # calling tools: unknown names, arguments that do not parse or fit the schema) may exceed the
    # baseline's, pair by pair, by at most this much.
    json_margin: Annotated[float, Field(ge=0, lt=1)] = 0.02
    tool_call_margin: Annotated[float, Field(ge=0, lt=1)] = 0.02
    # An alias of this config that judges sampled pairs; unset: no LLM judge.
    judge: str | None = None
    # Share of compared pairs sent to the judge (each judged twice, in both orders).
    sample: Annotated[float, Field(ge=0, le=1)] = 0.05
    # The judge's spend per rolling hour, a hard cap: pairs beyond it are not judged.
    max_usd_per_hour: Annotated[float, Field(ge=0)] = 2.0
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    # The candidate's win rate ((wins + ties / 2) / judged) must not be confidently below 0.5 - margin.
    win_rate_margin: Annotated[float, Field(ge=0, lt=0.5)] = 0.05
    # Judged pairs before the win-rate gate may pass (it may fail earlier on clear evidence).
    min_judged: Annotated[int, Field(ge=2)] = 30
    # Share of judged requests that also compare the baseline with a second baseline answer (the
    # noise floor), and the floor above which the judge is too noisy to let the gate pass.
    noise_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    min_noise_pairs: Annotated[int, Field(ge=1)] = 10
    max_noise_floor: Annotated[float, Field(gt=0, le=1)] = 0.5
    # The rubric the judge reads; unset: the built-in one (migration.judge).
    rubric: str | None = None
    # During canary steps each request goes to one arm: this share of candidate-served requests is also
    # sent to the baseline (fire and forget, on the shadow ledger) so pairs keep flowing.
    canary_pair_share: Annotated[float, Field(ge=0, le=1)] = 0.05
    # Requests offering tools are not sent to the judge (their prompts may hold private data).
    exclude_tools: bool = False
    # Keep judged pairs (an excerpt of the request, both answers, the verdict and the judge's reason) in the
    # store for the report; off: prompts and answers are never stored.
    store_examples: bool = False
    examples_retention_s: PosFloat = 7 * 24 * 3600.0
    max_examples: Annotated[int, Field(ge=1, le=10_000)] = 200


class GateThresholds(Strict):
    """Limits the candidate arm must stay under; see `migration.gates` for how each is judged."""

    # Errors per upstream attempt on the candidate's target, retries and shadow copies included; 429s apart.
    error_rate: OpenUnit = 0.02
    p99_ms: PosFloat = 800.0
    # Time to first token, streams only.
    ttft_p99_ms: PosFloat = 800.0
    # Relative increase of mean cost per request over the baseline arm (0.05 = +5 %).
    # Negative values demand a saving.
    cost_increase: Annotated[float, Field(gt=-1)] = 0.05
    # Each gate's test says "over" or "under" its threshold wrongly with probability at most alpha, however
    # often it is looked at (migration.sequential). Configs that still give `wilson_z` (the fixed-sample
    # bound this replaced) get the one-sided alpha of that z.
    alpha: OpenUnit = 0.005
    # The critical guard ignores sample minimums: a candidate this broken is rolled back at once.
    critical_error_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    critical_min_requests: Annotated[int, Field(ge=1)] = 20
    quality: QualityGates = QualityGates()

    @model_validator(mode="before")
    @classmethod
    def _wilson_z(cls, data: Any) -> Any:
        if isinstance(data, dict) and "wilson_z" in data:
            data = dict(data)
            z = data.pop("wilson_z")
            if not isinstance(z, int | float) or isinstance(z, bool) or z <= 0:
                raise ValueError("wilson_z must be a positive number (prefer alpha)")
            data.setdefault("alpha", 1 - NormalDist().cdf(z))
        return data


class StepPlan(Strict):
    """How traffic moves, and how long each step must be watched."""

    # 0 skips the shadow phase and starts at the first canary weight.
    shadow_percent: Percent = 10.0
    # Percent of live traffic per canary step: strictly increasing, last is 100.
    weights: Annotated[list[float], Field(min_length=1)] = [25.0, 50.0, 75.0, 100.0]
    min_step_s: PosFloat = 3600.0
    # A step still inconclusive after this long pauses the migration for a human.
    max_step_s: PosFloat = 86400.0
    min_samples: Annotated[int, Field(ge=1)] = 200
    # How often the controller evaluates the gates (and ticks the state machine).
    interval_s: PosFloat = 10.0
    # Failed checks in a row that roll back: a check that passes or is inconclusive starts the count again.
    consecutive_failures: Annotated[int, Field(ge=1)] = 3
    # The gates also test the step's latest block of this length on its own, so a regression that starts
    # late in a long step is judged on its own samples, not averaged away by the step's earlier ones.
    recent_window_s: PosFloat = 600.0
    # Must be > 0: while the candidate serves 100 % (last canary step and the safety
    # window) this copy is the only traffic the baseline arm sees, so without it
    # that arm never reaches min_samples and the last step could never pass.
    post_promotion_shadow_percent: Annotated[float, Field(gt=0, le=100)] = 5.0
    safety_window_s: NonNegFloat = 86400.0

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: list[float]) -> list[float]:
        bps = [percent_to_bp(w) for w in value]
        if any(not 0 < w <= 100 for w in value):
            raise ValueError("each weight must be a percent in (0, 100]")
        if any(b <= a for a, b in pairwise(bps)):
            raise ValueError("weights must be strictly increasing (at 0.01 % resolution)")
        if bps[-1] != BASIS_POINTS:
            raise ValueError("the last weight must be 100")
        return value

    @model_validator(mode="after")
    def _durations(self) -> StepPlan:
        if self.max_step_s <= self.min_step_s:
            raise ValueError("max_step_s must be greater than min_step_s")
        return self

    @property
    def weights_bp(self) -> tuple[int, ...]:
        return tuple(percent_to_bp(w) for w in self.weights)


class StickyRule(Strict):
    """Where a request's sticky key comes from, and the salt its bucket is hashed with.

    Changing the salt reshuffles every client into new buckets.
    """

    header: str = "x-cutover-sticky-key"
    # Unset: the migration's id (MigrationSpec fills it in), so each migration buckets clients its own way.
    salt: str = Field(min_length=1)


class ShadowSettings(Strict):
    timeout_s: PosFloat = 30.0
    max_concurrency: Annotated[int, Field(ge=1)] = 16
    # Tools with side effects (send_email, charge_card): a request naming one is never
    # duplicated, because the shadow copy could perform the action a second time.
    exclude_tools: list[str] = []


class MigrationSpec(Strict):
    # Used in hashes, metric labels and audit records: keep it short and plain.
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    alias: str = Field(min_length=1)
    baseline: Target
    candidate: Target
    plan: StepPlan = StepPlan()
    gates: GateThresholds = GateThresholds()
    sticky: StickyRule
    shadow: ShadowSettings = ShadowSettings()

    @model_validator(mode="before")
    @classmethod
    def _default_salt(cls, data: Any) -> Any:
        # What is stored is the filled-in spec, so the buckets stay put whatever later defaults say.
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            sticky = data.get("sticky", {})
            if isinstance(sticky, dict) and "salt" not in sticky:
                data = {**data, "sticky": {**sticky, "salt": data["id"]}}
        return data

    @model_validator(mode="after")
    def _distinct(self) -> MigrationSpec:
        if self.baseline == self.candidate:
            raise ValueError("candidate must differ from baseline")
        return self
