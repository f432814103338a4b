"""Reading the shipped dashboards and rules: their queries, variables, metric names and labels.

The PromQL handling is deliberately shallow (regular expressions, not a parser): the
queries are evaluated by a real Prometheus in the tests, which is the syntax check;
this only pulls out the names that must match what the gateway exports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
BOARD_FILES = ("gateway.json", "migration.json", "plan-and-execute.json")
DS_VARIABLE = "DS_PROMETHEUS"
DS_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

_METRIC = re.compile(r"\bcutover_[a-z0-9_]+\b")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_RULE_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Query:
    board: str
    where: str  # panel title / annotation name, for messages
    expr: str
    legend: str  # legendFormat, or an annotation's title/text/tag formats
    instant: bool


@dataclass(frozen=True)
class Variable:
    name: str
    selector: str
    label: str
    multi: bool


def load_board(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return data


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(name: str, board: dict[str, Any]) -> list[Query]:
    found = []
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            found.append(Query(name, panel["title"], target["expr"], target.get("legendFormat", ""),
                               bool(target.get("instant"))))
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            legend = " ".join([annotation.get("titleFormat", ""), annotation.get("textFormat", "")]
                              + ["{{" + key + "}}" for key in annotation.get("tagKeys", "").split(",") if key])
            found.append(Query(name, f"annotation {annotation['name']}", annotation["expr"], legend, False))
    return found


def variables(board: dict[str, Any]) -> list[Variable]:
    found = []
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {var['name']}: not a label_values(...) query: {query}"
        found.append(Variable(var["name"], match["selector"].strip(), match["label"], bool(var.get("multi"))))
    return found


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def label_names(expr: str) -> set[str]:
    names = set(_MATCHER.findall(expr))
    for group in _GROUPING.findall(expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    return names


def legend_labels(legend: str) -> set[str]:
    return set(_LEGEND.findall(legend))


def variable_names(expr: str) -> set[str]:
    return set(_VARIABLE.findall(expr))


def regex_value(values: list[str]) -> str:
    """How Grafana writes several values of a multi-value variable into a Prometheus regex matcher."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: dict[str, str], *, rate_interval: str, interval: str, range_: str) -> str:
    out = (expr.replace("$__rate_interval", rate_interval).replace("$__interval", interval)
           .replace("$__range", range_))
    for name in sorted(values, key=len, reverse=True):
        out = out.replace("${" + name + "}", values[name]).replace(f"${name}", values[name])
    leftover = variable_names(out)
    assert not leftover, f"unsubstituted variables {leftover} in {expr}"
    return out


@dataclass(frozen=True)
class Rule:
    name: str
    expr: str
    annotations: dict[str, str]
    templates: str  # every annotation and label value, joined


def alert_rules(path: Path) -> list[Rule]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = []
    for group in data["groups"]:
        for rule in group["rules"]:
            templates = " ".join([*rule.get("annotations", {}).values(), *rule.get("labels", {}).values()])
            rules.append(Rule(rule["alert"], rule["expr"], dict(rule.get("annotations", {})), templates))
    return rules


def rule_labels(templates: str) -> set[str]:
    return set(_RULE_LABEL.findall(templates))
