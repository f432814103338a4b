"""Values the in-memory migration tests share: the arms as targets, a spec, states, samples, metric reads."""

from __future__ import annotations

from typing import Any

from config.migration import MigrationSpec
from migration.rollout import MigrationState
from migration.window import Sample
from providers.target import TargetRef
from routing.table import Route
from telemetry.metrics import Metrics
from tests.migration.support import ALIAS, fast_plan, migration_spec

BASE = TargetRef("legacy", "old")
CAND = TargetRef("modern", "new")
BACKUP = TargetRef("backup", "spare")
ROUTE = Route(ALIAS, (BASE, BACKUP), "error")
SPEC = MigrationSpec.model_validate(migration_spec(plan=fast_plan(), shadow={"exclude_tools": ["send_email"]}))
OK = Sample("ok", 10.0, None, 100)


def migration_state(
    phase: str, weight_bp: int = 0, shadow: float = 0.0, started: float | None = 100.0, version: int = 1,
    **fields: Any,
) -> MigrationState:
    return MigrationState(phase, 0, weight_bp, shadow, started, version=version, **fields)  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)
