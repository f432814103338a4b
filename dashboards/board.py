"""The dashboard kit: a Board that lays out panels on Grafana's grid, query and variable helpers,
units, and the gates' default thresholds. The boards themselves are in *_board.py; build.py writes them.
"""

from __future__ import annotations

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

# The migration gates' defaults (config/migration.py GateThresholds), drawn as threshold lines.
GATE_ERROR_RATE = 0.02
GATE_P99_S = 0.8
# The quality gates' defaults (config/migration.py QualityGates): the win-rate floor (0.5 - win_rate_margin),
# the judge's noise floor above which the win-rate gate cannot pass, and the judge's spend cap per rolling hour.
GATE_WIN_RATE_FLOOR = 0.45
GATE_MAX_NOISE_FLOOR = 0.5
JUDGE_USD_PER_HOUR = 2.0


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


def query_variable(name: str, label: str, query: str, *, multi: bool, description: str) -> dict[str, Any]:
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
        mappings: list[dict[str, Any]] | None = None, decimals: int | None = None, base_color: str = "green",
    ) -> None:
        """`thresholds`: (value, colour) steps above `base_color`, the colour below the first of them."""
        if self._x + w > 24:
            self._newline()
        steps: list[dict[str, Any]] = [{"color": base_color, "value": None}]
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


def quantiles(metric: str, selector: str, by: str, quantiles: tuple[float, ...], legend_prefix: str = "") -> list[Q]:
    group = f"{by}, le" if by else "le"
    return [
        Q(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RI}])))",
          f"{legend_prefix}p{round(q * 100)}")
        for q in quantiles
    ]
