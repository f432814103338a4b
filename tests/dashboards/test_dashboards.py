"""The shipped dashboards and alert rules, proven against a live gateway and a real Prometheus.

Static checks (always): the Grafana JSON's structure, and that it is what
dashboards/build.py generates. With Prometheus installed (`make test` installs it;
without it these tests skip and say so): promtool on the rules, their unit tests and
the example config; then one live scenario (tests/dashboards/stack.py) in which
`cutover serve --workers 2` serves a migration (its quality judged by an LLM judge, its
alias's requests captured), retries, fallbacks, cool-downs, streams and plan-and-execute
runs, the candidate's answers degrade (invalid JSON) and a quality gate rolls it back, a
pre-flight replay runs on the captured sample, and a real Prometheus
scrapes it every second with the shipped rules loaded. Against that Prometheus: every
template variable resolves, every panel and annotation query is valid and returns data
with the variables set to real values, every metric and label the dashboards and rules
use is one the gateway exports, every exported metric is on a panel, every rule
evaluates cleanly, and the rollback, quality-gate and error-ratio alerts fire.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from telemetry.metrics import Metrics
from tests.dashboards.promql import (
    BOARD_FILES,
    DASHBOARDS,
    DS_REF,
    DS_VARIABLE,
    Query,
    alert_rules,
    all_panels,
    label_names,
    legend_labels,
    load_board,
    metric_names,
    queries,
    regex_value,
    rule_labels,
    substitute,
    variables,
)
from tests.dashboards.stack import BROKEN, POLL_S, PROSE_ONLY, Gateway, Prometheus, Sims, Traffic, running
from tests.gateway.helpers import metric
from tests.support import wait_for

ALERTS = DASHBOARDS / "alerts.yml"
EXPECTED_UIDS = {"gateway.json": "cutover-gateway", "migration.json": "cutover-migration",
                 "plan-and-execute.json": "cutover-plan-and-execute"}
EXPECTED_VARIABLES = {"gateway.json": {"alias", "provider"}, "migration.json": {"migration"},
                      "plan-and-execute.json": {"meta_model"}}
EXPECTED_ALERTS = {"CutoverHighErrorRatio", "CutoverHighLatencyP99", "CutoverCostJump", "CutoverStoreUnreachable",
                   "CutoverMigrationRolledBack", "CutoverMigrationPausedInconclusive",
                   "CutoverMigrationQualityGateFailed"}
# The alerts the degraded scenario must fire (alert name, its alias or migration label); none fires before.
DEGRADED_ALERTS = {("CutoverMigrationRolledBack", "m1"), ("CutoverMigrationQualityGateFailed", "m1"),
                   ("CutoverHighErrorRatio", "chat")}
# Exported metrics that are deliberately on no panel, each with the reason. Empty today: every
# metric in telemetry/metrics.py has a panel. A metric added there must get a panel or an entry here.
UNPANELLED: dict[str, str] = {}
# Defined metrics the live scenario never emits, so no panel of theirs could be checked: each with the reason.
# A metric added to telemetry/ must be emitted by the scenario (and panelled) or get an entry here.
NOT_IN_SCENARIO: dict[str, str] = {}
# Labels Prometheus adds to every scraped series (target labels), usable in rules.
TARGET_LABELS = {"job", "instance"}
# Grafana's interval variables, as the tests substitute them.
RATE_INTERVAL = "30s"
INTERVAL = "15s"

# The live scenario takes ~20-40 s; the first test using it also pays for its set-up.
pytestmark = pytest.mark.timeout(240)

PROMETHEUS_MISSING = shutil.which("prometheus") is None or shutil.which("promtool") is None
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS_MISSING,
    reason="prometheus/promtool not installed: `make test` installs them "
           "(apt-get install -y prometheus); these checks of dashboards/ need a real Prometheus",
)


# -- static checks ------------------------------------------------------------------------------------------
def _datasource_refs(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}.{key}", value
            yield from _datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _datasource_refs(value, f"{path}[{index}]")


def _expected_unit(panel: dict[str, Any]) -> str | None:
    exprs = [t["expr"] for t in panel["targets"]]
    title = panel["title"].lower()
    if all(re.match(r"histogram_quantile\(.*_seconds_bucket", e) for e in exprs):
        return "s"
    if re.search(r"\b(ratio|rate|share|weight|saving)\b", title):
        return "percentunit"
    if re.search(r"\b(cost|spend)\b", title):
        return "currencyUSD"
    return None


@pytest.mark.parametrize("name", BOARD_FILES)
def test_dashboard_json_structure(name: str) -> None:
    board = load_board(name)
    for key in ("uid", "title", "description", "tags", "schemaVersion", "version", "time", "refresh", "panels",
                "templating", "annotations"):
        assert key in board, f"{name}: missing top-level key {key!r}"
    assert board["uid"] == EXPECTED_UIDS[name], "uids are stable: links and provisioning refer to them"
    assert "__inputs" not in board, "the data source is a template variable, not an import-time input"

    # The data source: a template variable, and every reference goes through it.
    templating = {v["name"]: v for v in board["templating"]["list"]}
    ds = templating.get(DS_VARIABLE)
    assert ds is not None and ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    for where, ref in _datasource_refs(board):
        assert ref == DS_REF, f"{name}{where}: {ref!r} is not the ${DS_VARIABLE} variable"

    # Template variables filled by label_values queries.
    assert {v.name for v in variables(board)} == EXPECTED_VARIABLES[name]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            assert var["definition"].startswith("label_values(") and var["refresh"] in (1, 2), var["name"]

    # Panels: unique ids, inside the 24-column grid, no overlaps, grouped by rows, units set.
    panels = list(all_panels(board))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
    assert board["panels"][0]["type"] == "row", f"{name}: the first panel must be a row"
    assert sum(p["type"] == "row" for p in panels) >= 3, f"{name}: panels are grouped in rows"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, f"{name}: {panel['title']} leaves the 24-column grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{name}: {panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), f"{name}: panel {panel['id']} needs a title and text"
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, f"{name}: {panel['title']} has no unit"
        expected = _expected_unit(panel)
        assert expected is None or unit == expected, f"{name}: {panel['title']}: unit {unit}, expected {expected}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), f"{name}: {panel['title']}: targets need unique refIds"
        assert all(t["expr"].strip() for t in panel["targets"]), f"{name}: {panel['title']}: empty query"


def test_dashboards_use_the_units_asked_for() -> None:
    units = {p["fieldConfig"]["defaults"]["unit"] for name in BOARD_FILES for p in all_panels(load_board(name))
             if p["type"] != "row"}
    assert {"s", "currencyUSD", "percentunit"} <= units


def test_migration_dashboard_shows_rollbacks_as_annotations() -> None:
    annotations = load_board("migration.json")["annotations"]["list"]
    rollbacks = [a for a in annotations if "rollback" in a["name"].lower()]
    assert rollbacks and all("cutover_migration_rollbacks_total" in a["expr"] and a["enable"] for a in rollbacks)


def test_dashboard_json_is_generated_from_build_py() -> None:
    result = subprocess.run([sys.executable, str(DASHBOARDS / "build.py"), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- promtool --------------------------------------------------------------------------------------------------
def _promtool(*args: str) -> str:
    result = subprocess.run(["promtool", *args], cwd=DASHBOARDS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@needs_prometheus
def test_promtool_accepts_the_rules_their_unit_tests_and_the_example_config() -> None:
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in _promtool("check", "rules", "alerts.yml")
    _promtool("test", "rules", "alerts_test.yml")
    _promtool("check", "config", "prometheus.yml")
    rules = alert_rules(ALERTS)
    assert {rule.name for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule.annotations.get("summary") and rule.annotations.get("runbook"), rule.name


# -- the live scenario ------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    sims: Sims
    gateway: Gateway
    prometheus: Prometheus
    traffic: Traffic
    started_at: float
    firing_before: set[tuple[str, str]]
    timings: dict[str, float] = field(default_factory=dict)

    def range_(self) -> str:
        return f"{math.ceil(time.time() - self.started_at) + 5}s"


def _candidate_observed(gateway: Gateway) -> bool:
    """The candidate serves live traffic and has answered enough requests, streams included."""
    if gateway.migration_state()["phase"] not in ("canary", "promoted"):
        return False
    text = gateway.metrics()
    served = metric(text, "cutover_migration_requests_total", migration="m1", arm="candidate", status_class="2xx")
    streams = metric(text, "cutover_migration_time_to_first_token_seconds_count", migration="m1", arm="candidate")
    return served >= 15 and streams >= 3


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    if PROMETHEUS_MISSING:
        pytest.skip("prometheus not installed")
    began = time.monotonic()
    with running(tmp_path_factory.mktemp("dashboards"), ALERTS) as (sims, gateway, prometheus, traffic):
        started_at = time.time()
        timings = {"gateway and prometheus up": time.monotonic() - began}
        wait_for(prometheus.target_up, timeout=30, what="prometheus to scrape the gateway", every=POLL_S)
        # Healthy phase: shadow, then canary, until the candidate has its own live samples.
        wait_for(lambda: _candidate_observed(gateway), timeout=90, what="the migration to reach canary",
                 every=POLL_S)
        timings["canary with candidate samples"] = time.monotonic() - began
        firing_before = prometheus.firing()
        # Degraded phase: the candidate answers JSON requests with prose (-> the quality_json gate fails and
        # rolls back); alias chat's targets fail every call.
        sims.degrade("modern", **PROSE_ONLY)
        for name in ("flaky", "backup"):
            sims.degrade(name, **BROKEN)
        # The gate needs a few dozen JSON pairs (some 10-15 s of traffic here) to show the candidate worse.
        wait_for(lambda: gateway.migration_state()["phase"] == "rolled_back", timeout=60,
                 what="the degraded candidate to be rolled back", every=POLL_S)
        timings["rolled back"] = time.monotonic() - began
        wait_for(lambda: DEGRADED_ALERTS <= prometheus.firing(), timeout=60,
                 what=f"alerts {sorted(DEGRADED_ALERTS)} to fire", every=POLL_S)
        timings["alerts firing"] = time.monotonic() - began
        # A pre-flight replay of the captured sample, for its panel (it changes no state).
        replayed = gateway.replay(limit=10)
        assert replayed["replayed"] == 10 and replayed["verdict"]["gates"], replayed
        timings["replayed"] = time.monotonic() - began
        yield Scenario(sims, gateway, prometheus, traffic, started_at, firing_before, timings)
        print(f"\ndashboards scenario timings (s): { {k: round(v, 1) for k, v in timings.items()} }; "
              f"client answers: {dict(traffic.answers)}")
        assert not traffic.failures, traffic.failures[:5]


def _resolve_variables(s: Scenario, name: str, board: dict[str, Any]) -> dict[str, list[str]]:
    """Each template variable's values, read through Prometheus as Grafana's label_values() does."""
    resolved: dict[str, list[str]] = {}
    for var in variables(board):
        selector = substitute(var.selector, {k: regex_value(v) for k, v in resolved.items()},
                              rate_interval=RATE_INTERVAL, interval=INTERVAL, range_=s.range_())
        values = s.prometheus.api(f"label/{var.label}/values", **{"match[]": selector, "start": s.started_at,
                                                                  "end": time.time()})
        assert values, f"{name}: variable {var.name} = label_values({selector}, {var.label}) has no values"
        resolved[var.name] = sorted(values)
    return resolved


def _as_text(s: Scenario, board: dict[str, Any], resolved: dict[str, list[str]]) -> dict[str, str]:
    multi = {v.name for v in variables(board) if v.multi}
    # Multi-value variables get every real value (what "All" selects); single ones the migration under test.
    return {k: regex_value(v) if k in multi else ("m1" if "m1" in v else v[0]) for k, v in resolved.items()}


def _evaluate(s: Scenario, query: Query, text: str) -> list[dict[str, Any]]:
    if query.instant:
        data = s.prometheus.api("query", query=text, time=time.time())
    else:
        data = s.prometheus.api("query_range", query=text, start=s.started_at, end=time.time(), step="1s")
    result: list[dict[str, Any]] = data["result"]
    return result


def _has_data(series: dict[str, Any]) -> bool:
    points = series.get("values") or ([series["value"]] if "value" in series else [])
    return any(math.isfinite(float(value)) for _, value in points)


@needs_prometheus
def test_alerts_fire_in_the_degraded_scenario(scenario: Scenario) -> None:
    # None was firing before the degradation; all fire after it (asserted by the fixture's wait).
    assert not DEGRADED_ALERTS & scenario.firing_before, DEGRADED_ALERTS & scenario.firing_before
    assert DEGRADED_ALERTS <= scenario.prometheus.firing()
    # The quality alert names the gate that failed, the one that rolled the migration back.
    quality = [a["labels"] for a in scenario.prometheus.api("alerts")["alerts"]
               if a["labels"]["alertname"] == "CutoverMigrationQualityGateFailed" and a["state"] == "firing"]
    assert {labels["gate"] for labels in quality} == {"quality_json"}, quality
    text = scenario.gateway.metrics()
    assert metric(text, "cutover_migration_rollbacks_total", migration="m1", reason="quality_json") == 1


@needs_prometheus
def test_every_alert_rule_loads_and_evaluates(scenario: Scenario) -> None:
    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in scenario.prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("20") for r in rules) else []

    rules = wait_for(evaluated, timeout=30, what="every rule to be evaluated", every=POLL_S)
    assert {r["name"] for r in rules} == EXPECTED_ALERTS
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not unhealthy, unhealthy


@needs_prometheus
def test_every_variable_and_panel_query_returns_data(scenario: Scenario) -> None:
    failures: dict[str, str] = {}
    checks = []
    for name in BOARD_FILES:
        board = load_board(name)
        resolved = _resolve_variables(scenario, name, board)
        values = _as_text(scenario, board, resolved)
        checks += [(name, q, values) for q in queries(name, board)]
        # Each value of each multi-value variable alone (the others on every value): valid queries.
        for var in (v for v in variables(board) if v.multi):
            for value in resolved[var.name]:
                one = {**values, var.name: regex_value([value])}
                for q in queries(name, board):
                    _evaluate(scenario, q, substitute(q.expr, one, rate_interval=RATE_INTERVAL,
                                                      interval=INTERVAL, range_=scenario.range_()))
    assert len(checks) >= 50  # the collection itself works

    def all_have_data() -> bool:
        failures.clear()
        for name, q, values in checks:
            text = substitute(q.expr, values, rate_interval=RATE_INTERVAL, interval=INTERVAL,
                              range_=scenario.range_())
            result = _evaluate(scenario, q, text)  # an invalid query fails here, with Prometheus's error
            shown = [series for series in result if _has_data(series)]
            if not shown:
                failures[f"{name}: {q.where}: {text}"] = "no series with data"
                continue
            for series in shown:
                missing = legend_labels(q.legend) - set(series["metric"])
                if missing:
                    failures[f"{name}: {q.where}: {text}"] = f"legend labels {missing} not in {series['metric']}"
        return not failures

    try:
        wait_for(all_have_data, timeout=60, what="every panel to have data", every=1)
    except AssertionError:
        pytest.fail("panels without data:\n" + "\n".join(f"{k}\n    {v}" for k, v in failures.items()))


def _exported(text: str) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Labels of every sample name on /metrics, and the family each sample name belongs to."""
    labels: dict[str, set[str]] = {}
    family_of: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            family_of[sample.name] = family.name
    return labels, family_of


def _defined_families() -> dict[str, str]:
    """Every metric telemetry/metrics.py defines, in all its groups (family name -> type), with samples or not."""
    registry = CollectorRegistry()
    Metrics(registry)
    return {family.name: family.type for family in registry.collect()}


@needs_prometheus
def test_dashboards_and_rules_use_only_exported_metrics_and_labels(scenario: Scenario) -> None:
    labels, _ = _exported(scenario.gateway.metrics())
    problems = []
    used: list[tuple[str, str, set[str]]] = []
    for name in BOARD_FILES:
        board = load_board(name)
        for q in queries(name, board):
            used.append((f"{name}: {q.where}", q.expr, label_names(q.expr) | legend_labels(q.legend)))
        for var in variables(board):
            used.append((f"{name}: variable {var.name}", var.selector, label_names(var.selector) | {var.label}))
    for rule in alert_rules(ALERTS):
        used.append((f"alerts.yml: {rule.name}", rule.expr,
                     (label_names(rule.expr) | rule_labels(rule.templates)) - TARGET_LABELS))
    for where, expr, names in used:
        metrics = metric_names(expr)
        if not metrics:
            problems.append(f"{where}: no cutover_* metric in {expr}")
        unknown = {m for m in metrics if m not in labels}
        if unknown:
            problems.append(f"{where}: not exported: {sorted(unknown)}")
        allowed = set().union(*(labels.get(m, set()) for m in metrics))
        if names - allowed:
            problems.append(f"{where}: labels {sorted(names - allowed)} not on {sorted(metrics)}")
    assert not problems, "\n".join(problems)


@needs_prometheus
def test_every_exported_metric_is_on_a_panel(scenario: Scenario) -> None:
    _, family_of = _exported(scenario.gateway.metrics())
    defined = _defined_families()
    exported = set(family_of.values())
    # The scenario exercises everything: a defined metric that never shows up is never emitted.
    assert len(defined) >= 40 and set(NOT_IN_SCENARIO) <= set(defined)  # the collection itself works
    assert all(reason.strip() for reason in NOT_IN_SCENARIO.values())
    assert not set(NOT_IN_SCENARIO) & exported, f"emitted after all: {sorted(set(NOT_IN_SCENARIO) & exported)}"
    unseen = set(defined) - exported - set(NOT_IN_SCENARIO)
    assert not unseen, f"defined but never exported (or add to NOT_IN_SCENARIO with a reason): {sorted(unseen)}"
    panelled = set()
    for name in BOARD_FILES:
        for q in queries(name, load_board(name)):
            panelled.update(family_of[m] for m in metric_names(q.expr) if m in family_of)
    assert all(reason.strip() for reason in UNPANELLED.values())
    assert not set(UNPANELLED) & panelled, f"on a panel after all: {sorted(set(UNPANELLED) & panelled)}"
    missing = exported - panelled - set(UNPANELLED)
    assert not missing, f"exported but on no panel (add one, or to UNPANELLED with a reason): {sorted(missing)}"
