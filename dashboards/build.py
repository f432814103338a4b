"""Source of the Grafana dashboards in this directory.

`python dashboards/build.py` rewrites gateway.json, migration.json and
plan-and-execute.json from the definitions below; `--check` only reports whether
the JSON files are up to date (tests/dashboards runs it). Edit the panels here,
not in the JSON, so ids, grid positions, units and the data source stay
consistent.

Every panel queries the data source chosen in the `DS_PROMETHEUS` template
variable, so a dashboard imports as is, with no fixed data source uid. Queries use
Grafana's `$__rate_interval` / `$__interval` / `$__range`, and the template
variables `$alias`, `$provider`, `$migration` and `$meta_model`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SCHEMA_VERSION = 39
RI = "$__rate_interval"

# Units (Grafana unit ids).
SECONDS = "s"
USD = "currencyUSD"
RATIO = "percentunit"  # a 0..1 ratio shown as a percent
REQ_PER_S = "reqps"
PER_MIN = "opm"
COUNT = "short"
TOKENS_PER_S = "suffix: tok/s"

# The migration gates' defaults (routing/migration_plan.py GateThresholds), drawn as threshold lines.
GATE_ERROR_RATE = 0.02
GATE_P99_S = 0.8


@dataclass(frozen=True)
class Q:
    expr: str
    legend: str = ""
    instant: bool = False


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
        "regex": "", "skipUrlSync": False,
    }


def _query_variable(name: str, label: str, query: str, *, multi: bool, description: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "description": description, "type": "query", "datasource": DS,
        "definition": query, "query": query, "refresh": 2, "sort": 1, "regex": "",
        "multi": multi, "includeAll": multi, "allValue": ".*" if multi else None,
        "current": {}, "options": [], "hide": 0, "skipUrlSync": False,
    }


class Board:
    """Lays panels out left to right in rows of a 24-column grid, numbering them from 1."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str],
                 variables: list[dict[str, Any]], annotations: list[dict[str, Any]] | None = None) -> None:
        self.uid = uid
        self.title = title
        self.description = description
        self.tags = tags
        self.variables = [_datasource_variable(), *variables]
        self.annotations = annotations or []
        self.panels: list[dict[str, Any]] = []
        self._next_id = 1
        self._x = 0
        self._y = 0
        self._row_height = 0

    def _id(self) -> int:
        panel_id = self._next_id
        self._next_id += 1
        return panel_id

    def _newline(self) -> None:
        self._y += self._row_height
        self._x = 0
        self._row_height = 0

    def row(self, title: str) -> None:
        if self._x:
            self._newline()
        self.panels.append({
            "id": self._id(), "type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
        })
        self._y += 1

    def panel(
        self, title: str, description: str, queries: list[Q], unit: str, *, kind: str = "timeseries",
        w: int = 8, h: int = 8, thresholds: list[tuple[float, str]] | None = None, threshold_line: bool = False,
        stack: bool = False, bars: bool = False, min_value: float | None = None, max_value: float | None = None,
        mappings: list[dict[str, Any]] | None = None, decimals: int | None = None,
    ) -> None:
        if self._x + w > 24:
            self._newline()
        steps = [{"color": "green", "value": None}]
        steps += [{"color": color, "value": value} for value, color in thresholds or []]
        defaults: dict[str, Any] = {
            "unit": unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "mappings": mappings or [],
            "color": {"mode": "palette-classic" if kind == "timeseries" else "thresholds"},
        }
        if min_value is not None:
            defaults["min"] = min_value
        if max_value is not None:
            defaults["max"] = max_value
        if decimals is not None:
            defaults["decimals"] = decimals
        options: dict[str, Any]
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
                "showPoints": "never", "spanNulls": False,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "line+area" if threshold_line else "off"},
            }
            options = {
                "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                           "calcs": ["lastNotNull", "max"]},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif kind == "state-timeline":
            defaults["custom"] = {"fillOpacity": 80, "lineWidth": 0}
            options = {"showValue": "never", "mergeValues": True, "rowHeight": 0.8, "alignValue": "left",
                       "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
                       "tooltip": {"mode": "single", "sort": "none"}}
        elif kind == "stat":
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                       "orientation": "auto", "textMode": "value_and_name"}
        elif kind == "bargauge":
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "displayMode": "basic", "orientation": "horizontal", "showUnfilled": True}
        else:
            raise ValueError(f"unknown panel kind {kind}")
        targets = []
        for index, q in enumerate(queries):
            target: dict[str, Any] = {
                "refId": chr(ord("A") + index), "datasource": DS, "expr": q.expr, "legendFormat": q.legend,
                "range": not q.instant, "instant": q.instant, "editorMode": "code",
            }
            targets.append(target)
        self.panels.append({
            "id": self._id(), "type": kind, "title": title, "description": description, "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options, "targets": targets,
        })
        self._x += w
        self._row_height = max(self._row_height, h)
        if self._x >= 24:
            self._newline()

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "links": [{"title": "cutover dashboards", "type": "dashboards", "tags": ["cutover"], "asDropdown": True,
                       "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False,
                       "tooltip": "", "url": ""}],
            "annotations": {"list": self.annotations},
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


def _quantiles(metric: str, selector: str, by: str, quantiles: tuple[float, ...], legend_prefix: str = "") -> list[Q]:
    group = f"{by}, le" if by else "le"
    return [
        Q(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RI}])))",
          f"{legend_prefix}p{round(q * 100)}")
        for q in quantiles
    ]


# ---------------------------------------------------------------------------------------------------------
def gateway() -> Board:
    f = 'alias=~"$alias", provider=~"$provider"'
    board = Board(
        "cutover-gateway", "cutover / Gateway",
        "Client traffic through the cutover gateway: volume, errors, latency, gateway overhead, time to first "
        "token, tokens, cost, and the resilience machinery (retries, fallbacks, cool-downs).",
        ["cutover", "llm-gateway"],
        [
            _query_variable("alias", "Alias", "label_values(cutover_requests_total, alias)", multi=True,
                            description="Model aliases clients ask for (the config's models)."),
            _query_variable("provider", "Provider", 'label_values(cutover_requests_total{alias=~"$alias"}, provider)',
                            multi=True, description="Providers that answered those aliases (meta:* = a meta-model)."),
        ],
    )
    board.row("Traffic")
    board.panel(
        "Requests per second by alias and provider",
        "Client requests answered, per second, by the alias asked for and the provider that served it "
        "(provider 'unknown': rejected before any upstream answered).",
        [Q(f"sum by (alias, provider) (rate(cutover_requests_total{{{f}}}[{RI}]))", "{{alias}} via {{provider}}")],
        REQ_PER_S, w=12, stack=True,
    )
    board.panel(
        "Error ratio by status class",
        "Share of client requests answered with each non-2xx status class (4xx: the client's fault or a "
        "client disconnect; 5xx: the gateway could not get an answer). No data means no errors.",
        [Q(f'sum by (status_class) (rate(cutover_requests_total{{{f}, status_class!="2xx"}}[{RI}])) '
           f"/ ignoring (status_class) group_left sum(rate(cutover_requests_total{{{f}}}[{RI}]))",
           "{{status_class}}")],
        RATIO, w=6, min_value=0,
    )
    board.panel(
        "In-flight requests",
        "Client requests being served right now, summed over workers and replicas.",
        [Q("sum by (endpoint) (cutover_in_flight_requests)", "{{endpoint}}")],
        COUNT, w=6, min_value=0,
    )
    board.panel(
        "5xx ratio by alias",
        "Share of each alias's requests answered 5xx. The dashed line is the 2 % the high-error-ratio alert "
        "and the migration error-rate gate use.",
        [Q(f'(sum by (alias) (rate(cutover_requests_total{{{f}, status_class="5xx"}}[{RI}])) '
           f"or 0 * sum by (alias) (rate(cutover_requests_total{{{f}}}[{RI}]))) "
           f"/ sum by (alias) (rate(cutover_requests_total{{{f}}}[{RI}]))", "{{alias}}")],
        RATIO, w=12, thresholds=[(GATE_ERROR_RATE, "red")], threshold_line=True, min_value=0,
    )
    board.panel(
        "Shared store reachable",
        "1 while every gateway process reaches the shared migration store (SQLite or Redis); 0 means at "
        "least one serves with the last migration state it saw and no migration advances.",
        [Q("min(cutover_store_up)", "store", instant=True)],
        COUNT, kind="stat", w=4, thresholds=[(1, "green")],
        mappings=[{"type": "value", "options": {"0": {"text": "UNREACHABLE", "color": "red"},
                                                "1": {"text": "up", "color": "green"}}}],
    )
    board.panel(
        "Spend in the time range by alias",
        "USD spent at the configured prices over the dashboard's time range. A meta-model's spend includes "
        "its internal calls, which are also counted under their own aliases.",
        [Q(f"sum by (alias) (increase(cutover_cost_usd_total{{{f}}}[$__range]))", "{{alias}}", instant=True)],
        USD, kind="bargauge", w=8,
    )

    board.row("Latency")
    board.panel(
        "Request latency p50 / p95 / p99",
        "Whole request time as the client saw it, to the last byte (streams included), over the selected "
        "aliases and providers.",
        _quantiles("cutover_request_duration_seconds", f, "", (0.5, 0.95, 0.99)),
        SECONDS, w=8,
    )
    board.panel(
        "p99 latency by alias",
        "p99 of the whole request time per alias. The line is 800 ms, the high-p99 alert's and the migration "
        "gate's threshold (meta-model aliases run several calls and are expected above it).",
        [Q(f"histogram_quantile(0.99, sum by (alias, le) (rate(cutover_request_duration_seconds_bucket{{{f}}}[{RI}])))",
           "{{alias}}")],
        SECONDS, w=8, thresholds=[(GATE_P99_S, "red")], threshold_line=True,
    )
    board.panel(
        "Gateway overhead p99 (upstream time excluded)",
        "Time spent in the gateway itself per request (auth, parsing, routing, accounting), upstream waits "
        "and retry back-offs excluded. Sub-millisecond when healthy.",
        [Q(f'histogram_quantile(0.99, sum by (alias, le) (rate(cutover_gateway_overhead_seconds_bucket'
           f'{{alias=~"$alias"}}[{RI}])))', "{{alias}}")],
        SECONDS, w=8,
    )
    board.panel(
        "Time to first token (streams) p50 / p99",
        "Streams only: from the request's arrival to the first event sent to the client, by alias and provider.",
        [Q(f"histogram_quantile(0.5, sum by (alias, provider, le) "
           f"(rate(cutover_time_to_first_token_seconds_bucket{{{f}}}[{RI}])))", "p50 {{alias}} via {{provider}}"),
         Q(f"histogram_quantile(0.99, sum by (alias, provider, le) "
           f"(rate(cutover_time_to_first_token_seconds_bucket{{{f}}}[{RI}])))", "p99 {{alias}} via {{provider}}")],
        SECONDS, w=12,
    )
    board.panel(
        "Upstream attempt latency p99 by provider",
        "One upstream attempt, send to full answer (streams: to the first event), by provider, model and "
        "outcome (ok / error). Compare with the request latency to see retries and fallbacks add up.",
        [Q(f'histogram_quantile(0.99, sum by (provider, model, outcome, le) '
           f'(rate(cutover_upstream_duration_seconds_bucket{{provider=~"$provider"}}[{RI}])))',
           "{{provider}}/{{model}} {{outcome}}")],
        SECONDS, w=12,
    )

    board.row("Tokens and cost")
    board.panel(
        "Tokens per second by kind",
        "Tokens billed per second: prompt, completion, and cached prompt tokens (a subset of prompt).",
        [Q(f"sum by (kind) (rate(cutover_tokens_total{{{f}}}[{RI}]))", "{{kind}}")],
        TOKENS_PER_S, w=8,
    )
    board.panel(
        "Cost per minute by alias and provider",
        "USD per minute at the configured prices.",
        [Q(f"sum by (alias, provider) (rate(cutover_cost_usd_total{{{f}}}[{RI}])) * 60",
           "{{alias}} via {{provider}}")],
        USD, w=8, stack=True,
    )
    board.panel(
        "Cost per request by alias and provider",
        "Mean USD per successful (2xx) request. The cost-jump alert fires when an alias's cost per request "
        "rises more than 5 % over the hour before.",
        [Q(f"sum by (alias, provider) (rate(cutover_cost_usd_total{{{f}}}[{RI}])) "
           f'/ sum by (alias, provider) (rate(cutover_requests_total{{{f}, status_class="2xx"}}[{RI}]))',
           "{{alias}} via {{provider}}")],
        USD, w=8,
    )

    board.row("Resilience")
    board.panel(
        "Retries per minute by provider and reason",
        "Upstream attempts retried on the same target, by failure kind (status, timeout, connection...).",
        [Q(f'sum by (provider, reason) (rate(cutover_upstream_retries_total{{provider=~"$provider"}}[{RI}])) * 60',
           "{{provider}} {{reason}}")],
        PER_MIN, w=8,
    )
    board.panel(
        "Upstream errors per minute by provider and reason",
        "Failed upstream attempts (each retry counts). A failure that a retry or fallback absorbed is here but "
        "not in the client error ratio.",
        [Q(f'sum by (provider, reason) (rate(cutover_upstream_errors_total{{provider=~"$provider"}}[{RI}])) * 60',
           "{{provider}} {{reason}}")],
        PER_MIN, w=8,
    )
    board.panel(
        "Fallbacks per minute",
        "Requests moved past a target to the next one in the alias's list, by alias and the provider left "
        "behind.",
        [Q(f"sum by (alias, provider) (rate(cutover_fallbacks_total{{{f}}}[{RI}])) * 60",
           "{{alias}} past {{provider}}")],
        PER_MIN, w=8,
    )
    board.panel(
        "Cool-downs per minute",
        "Times a target's circuit opened and it was put on cool-down (skipped until the cool-down ends).",
        [Q(f'sum by (provider, model) (rate(cutover_cooldowns_total{{provider=~"$provider"}}[{RI}])) * 60',
           "{{provider}}/{{model}}")],
        PER_MIN, w=8,
    )
    board.panel(
        "Broken streams and context truncations per minute",
        "Streams that broke after their first byte reached the client (the client saw a cut answer), and "
        "requests whose oldest messages were dropped to fit the context window.",
        [Q(f"sum by (alias, provider) (rate(cutover_stream_errors_total{{{f}}}[{RI}])) * 60",
           "broken stream {{alias}} via {{provider}}"),
         Q(f'sum by (alias) (rate(cutover_context_truncations_total{{alias=~"$alias"}}[{RI}])) * 60',
           "truncated {{alias}}")],
        PER_MIN, w=16,
    )
    return board


# ---------------------------------------------------------------------------------------------------------
def migration() -> Board:
    m = 'migration="$migration"'
    rollbacks = f"cutover_migration_rollbacks_total{{{m}}}"
    annotations = [{
        "name": "Rollbacks",
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        # A rollback counter series is born at 1, which increase() cannot see: its first appearance is
        # caught by `unless ... offset`, later rollbacks of the same cause by increase().
        "expr": f"(sum by (migration, reason) ({rollbacks}) unless sum by (migration, reason) "
                f"({rollbacks} offset $__interval)) or (sum by (migration, reason) "
                f"(increase({rollbacks}[$__interval])) > 0)",
        "step": "$__interval",
        "titleFormat": "Rollback of {{migration}}",
        "textFormat": "cause: {{reason}}",
        "tagKeys": "migration,reason",
        "useValueForTime": False,
    }]
    board = Board(
        "cutover-migration", "cutover / Migration",
        "One migration of an alias from its baseline target to a candidate: phase and weights, baseline vs "
        "candidate side by side, gate verdicts, rollbacks (annotations), and the shadow traffic comparison.",
        ["cutover", "llm-gateway", "migration"],
        [_query_variable("migration", "Migration", "label_values(cutover_migration_phase, migration)", multi=False,
                         description="The migration's id from the config or the admin API.")],
        annotations,
    )
    board.row("Rollout")
    board.panel(
        "Phase",
        "The migration's phase over time: pending, shadow, canary, promoted, paused, rolled_back, aborted; "
        "and whether a pause came from the gates (a step inconclusive past max_step_s) rather than an operator.",
        [Q(f"max by (phase) (cutover_migration_phase{{{m}}})", "{{phase}}"),
         Q(f"max(cutover_migration_paused_by_gates{{{m}}})", "paused by the gates (inconclusive)")],
        COUNT, kind="state-timeline", w=12,
        mappings=[{"type": "value", "options": {"0": {"text": " ", "color": "transparent"},
                                                "1": {"text": "current", "color": "blue"}}}],
    )
    board.panel(
        "Candidate weight and shadow share",
        "Share of live traffic the candidate serves, and share copied to the shadow arm (the candidate during "
        "the shadow phase, the old baseline after promotion).",
        [Q(f"max(cutover_migration_candidate_weight_ratio{{{m}}})", "candidate weight"),
         Q(f"max(cutover_migration_shadow_ratio{{{m}}})", "shadow share")],
        RATIO, w=12, min_value=0, max_value=1,
    )
    board.panel(
        "Transitions since the gateway started",
        "State changes by the event that caused them (Start, Tick = an analysis, Pause, Rollback...) and the "
        "phase entered. Counted since the gateway processes started.",
        [Q(f"sum by (event, to_phase) (cutover_migration_transitions_total{{{m}}})", "{{event}} -> {{to_phase}}",
           instant=True)],
        COUNT, kind="bargauge", w=8, decimals=0,
    )
    board.panel(
        "Rollbacks since the gateway started, by cause",
        "Rollbacks by cause: the first failing gate (critical_error_ratio = the critical error guard, "
        "error_rate, latency_p99, ttft_p99, cost) or manual. Each rollback is also an annotation on the time "
        "series.",
        [Q(f"sum by (reason) ({rollbacks})", "{{reason}}", instant=True)],
        COUNT, kind="stat", w=8, thresholds=[(1, "red")], decimals=0,
    )
    board.panel(
        "Controller leader",
        "Gateway processes holding the migration controller lease (the one that runs the analysis). "
        "Should be 1; 0 means no migration is being analysed.",
        [Q("sum(cutover_controller_leader)", "leaders", instant=True)],
        COUNT, kind="stat", w=8, thresholds=[(1, "green"), (2, "orange")], decimals=0,
    )

    board.row("Baseline vs candidate")
    live = f"{m}, status_class!=\"4xx\""
    board.panel(
        "Error rate by arm",
        "5xx share of each arm's requests; client faults and 429s (4xx) are left out as the gate does. The "
        "arm is judged on its own target even when a fallback answered the client. Line: the 2 % gate.",
        [Q(f'(sum by (arm) (rate(cutover_migration_requests_total{{{m}, status_class="5xx"}}[{RI}])) '
           f"or 0 * sum by (arm) (rate(cutover_migration_requests_total{{{live}}}[{RI}]))) "
           f"/ sum by (arm) (rate(cutover_migration_requests_total{{{live}}}[{RI}]))", "{{arm}}")],
        RATIO, w=12, thresholds=[(GATE_ERROR_RATE, "red")], threshold_line=True, min_value=0,
    )
    board.panel(
        "Requests per second by arm and status",
        "Requests per arm: baseline and candidate are live traffic, shadow the copies.",
        [Q(f"sum by (arm, status_class) (rate(cutover_migration_requests_total{{{m}}}[{RI}]))",
           "{{arm}} {{status_class}}")],
        REQ_PER_S, w=12,
    )
    board.panel(
        "p99 latency by arm",
        "p99 of successful requests' latency per arm. Line: the 800 ms gate.",
        [Q(f"histogram_quantile(0.99, sum by (arm, le) "
           f"(rate(cutover_migration_request_duration_seconds_bucket{{{m}}}[{RI}])))", "{{arm}}")],
        SECONDS, w=8, thresholds=[(GATE_P99_S, "red")], threshold_line=True,
    )
    board.panel(
        "Time to first token p99 by arm (streams)",
        "p99 time to first token of successful streams per arm. Line: the 800 ms gate.",
        [Q(f"histogram_quantile(0.99, sum by (arm, le) "
           f"(rate(cutover_migration_time_to_first_token_seconds_bucket{{{m}}}[{RI}])))", "{{arm}}")],
        SECONDS, w=8, thresholds=[(GATE_P99_S, "red")], threshold_line=True,
    )
    board.panel(
        "Cost per request by arm",
        "Mean USD per successful request per arm; the gate fails the candidate above +5 % of the baseline. "
        "The shadow arm is its own ledger.",
        [Q(f"sum by (arm) (rate(cutover_migration_cost_usd_total{{{m}}}[{RI}])) "
           f'/ sum by (arm) (rate(cutover_migration_requests_total{{{m}, status_class="2xx"}}[{RI}]))', "{{arm}}")],
        USD, w=8,
    )

    board.row("Gates")
    board.panel(
        "Gate verdicts",
        "Gate results at each analysis tick: pass, fail, inconclusive (not enough evidence yet) or skipped, "
        "per gate (critical_error_ratio, error_rate, latency_p99, ttft_p99, cost).",
        [Q(f"sum by (gate, result) (increase(cutover_migration_verdicts_total{{{m}}}[{RI}]))",
           "{{gate}} {{result}}")],
        COUNT, w=24, bars=True, stack=True,
    )

    board.row("Shadow traffic")
    board.panel(
        "Shadow copies by outcome",
        "Copies per second: sent, dropped (pool full), excluded (request names an excluded tool), failed, "
        "cancelled (by a rollback), compared (both sides finished and the pair was compared).",
        [Q(f"sum by (outcome) (rate(cutover_shadow_requests_total{{{m}}}[{RI}]))", "{{outcome}}")],
        REQ_PER_S, w=8,
    )
    board.panel(
        "Shadow agreement rate by check",
        "Share of compared pairs that agreed, per check: overall (the headline), status, finish_reason, exact "
        "and normalised text, tools, json.",
        [Q(f"sum by (check) (rate(cutover_shadow_agreements_total{{{m}}}[{RI}])) / ignoring (check) group_left "
           f'sum(rate(cutover_shadow_requests_total{{{m}, outcome="compared"}}[{RI}]))', "{{check}}")],
        RATIO, w=8, min_value=0, max_value=1,
    )
    board.panel(
        "Shadow answer similarity p10 / p50",
        "Text similarity (0..1) of compared pairs where both sides answered.",
        [Q(f"histogram_quantile({q}, sum by (le) (rate(cutover_shadow_similarity_bucket{{{m}}}[{RI}])))",
           f"p{round(q * 100)}") for q in (0.1, 0.5)],
        RATIO, w=8, min_value=0, max_value=1,
    )
    board.panel(
        "Shadow minus primary latency",
        "Latency delta per compared pair (negative: the shadow side was faster): median and p99.",
        _quantiles("cutover_shadow_latency_delta_seconds", m, "", (0.5, 0.99)),
        SECONDS, w=12,
    )
    board.panel(
        "Shadow minus primary cost per pair",
        "Cost delta per compared pair in USD (negative: the shadow side was cheaper): mean and median.",
        [Q(f"sum(rate(cutover_shadow_cost_delta_usd_sum{{{m}}}[{RI}])) "
           f"/ sum(rate(cutover_shadow_cost_delta_usd_count{{{m}}}[{RI}]))", "mean"),
         *_quantiles("cutover_shadow_cost_delta_usd", m, "", (0.5,))],
        USD, w=12,
    )
    return board


# ---------------------------------------------------------------------------------------------------------
def plan_and_execute() -> Board:
    p = 'meta_model=~"$meta_model"'
    board = Board(
        "cutover-plan-and-execute", "cutover / Plan-and-execute",
        "Meta-model runs: a planner writes a task graph, cheap executors run it, a joiner finishes or "
        "re-plans. Outcomes, work per run, cost against running everything on the planner model, latency, "
        "scheduler overhead and the plan cache.",
        ["cutover", "llm-gateway", "plan-and-execute"],
        [_query_variable("meta_model", "Meta-model", "label_values(cutover_pe_runs_total, meta_model)", multi=True,
                         description="Meta-models of the config (meta_models).")],
    )
    board.row("Runs")
    board.panel(
        "Runs per minute by outcome and stop reason",
        "Finished runs by finish reason (stop; length = a cap stopped the run; error) and stop reason (none, "
        "deadline, max_llm_calls, max_total_tokens, max_cost_usd, max_tasks, max_replans, repeated_work...).",
        [Q(f"sum by (meta_model, outcome, stop_reason) (rate(cutover_pe_runs_total{{{p}}}[{RI}])) * 60",
           "{{meta_model}} {{outcome}} / {{stop_reason}}")],
        PER_MIN, w=12, stack=True,
    )
    board.panel(
        "Run duration p50 / p95 / p99",
        "Wall-clock time of a run, planning to answer.",
        _quantiles("cutover_pe_run_duration_seconds", p, "", (0.5, 0.95, 0.99)),
        SECONDS, w=12,
    )
    board.panel(
        "Re-plans",
        "Re-plans the joiner asked for: per minute, and per run.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_replans_total{{{p}}}[{RI}])) * 60", "{{meta_model}} per minute"),
         Q(f"sum by (meta_model) (rate(cutover_pe_replans_total{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_runs_total{{{p}}}[{RI}]))", "{{meta_model}} per run")],
        COUNT, w=8,
    )
    board.panel(
        "Plan cache hit rate",
        "Share of plan-cache lookups that found a reusable plan (planner call skipped). Only meta-models with "
        "cache.enabled look up.",
        [Q(f'(sum by (meta_model) (rate(cutover_pe_plan_cache_total{{{p}, result="hit"}}[{RI}])) '
           f"or 0 * sum by (meta_model) (rate(cutover_pe_plan_cache_total{{{p}}}[{RI}]))) "
           f"/ sum by (meta_model) (rate(cutover_pe_plan_cache_total{{{p}}}[{RI}]))", "{{meta_model}}")],
        RATIO, w=8, min_value=0, max_value=1,
    )
    board.panel(
        "Scheduler overhead p99",
        "The scheduler's own time between a task becoming ready and its model call starting, waits excluded.",
        _quantiles("cutover_pe_scheduler_overhead_seconds", p, "meta_model", (0.99,), "{{meta_model}} "),
        SECONDS, w=8,
    )
    board.panel(
        "Task queue wait p50 / p99",
        "How long ready tasks waited for a concurrency slot (concurrency, per_alias_concurrency) or for room "
        "in the run's budget: the throttling the limits impose, apart from the scheduler's own cost.",
        _quantiles("cutover_pe_task_queue_wait_seconds", p, "meta_model", (0.5, 0.99), "{{meta_model}} "),
        SECONDS, w=8,
    )

    board.row("Work per run")
    board.panel(
        "Tasks per run (mean and p95)",
        "Tasks executed per run.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_tasks_per_run_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_tasks_per_run_count{{{p}}}[{RI}]))", "{{meta_model}} mean"),
         *_quantiles("cutover_pe_tasks_per_run", p, "meta_model", (0.95,), "{{meta_model}} ")],
        COUNT, w=8,
    )
    board.panel(
        "LLM calls per run (mean and p95)",
        "Model calls per run: planner, executors, joiner, repairs.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_llm_calls_per_run_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_llm_calls_per_run_count{{{p}}}[{RI}]))", "{{meta_model}} mean"),
         *_quantiles("cutover_pe_llm_calls_per_run", p, "meta_model", (0.95,), "{{meta_model}} ")],
        COUNT, w=8,
    )
    board.panel(
        "Task duration p95 by executor tier",
        "One task's model call, by executor tier (cheap, strong).",
        [Q(f"histogram_quantile(0.95, sum by (meta_model, tier, le) "
           f"(rate(cutover_pe_task_duration_seconds_bucket{{{p}}}[{RI}])))", "{{meta_model}} {{tier}}")],
        SECONDS, w=8,
    )

    board.row("Cost")
    board.panel(
        "Cost per run vs. the same work on the planner model",
        "Mean USD per run (every internal call summed) against what the same tokens would cost on the "
        "planner model: the price of not planning.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_run_cost_usd_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_run_cost_usd_count{{{p}}}[{RI}]))", "{{meta_model}} actual"),
         Q(f"sum by (meta_model) (rate(cutover_pe_run_planner_equivalent_cost_usd_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_run_planner_equivalent_cost_usd_count{{{p}}}[{RI}]))",
           "{{meta_model}} all on the planner model")],
        USD, w=16,
    )
    board.panel(
        "Saving vs. the planner model",
        "1 - actual cost / planner-equivalent cost over the window (negative: planning cost more).",
        [Q(f"1 - sum by (meta_model) (rate(cutover_pe_run_cost_usd_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_run_planner_equivalent_cost_usd_sum{{{p}}}[{RI}]))",
           "{{meta_model}}")],
        RATIO, w=8,
    )
    return board


BOARDS = {"gateway.json": gateway, "migration.json": migration, "plan-and-execute.json": plan_and_execute}


def render(name: str) -> str:
    return json.dumps(BOARDS[name]().to_json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a JSON file differs from its definition")
    args = parser.parse_args(argv)
    stale = []
    for name in BOARDS:
        path = HERE / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run python dashboards/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
