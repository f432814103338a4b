"""A migration's report: its audit trail and state -> one self-contained HTML page a person reads at a glance.

    render_report(migration, history, examples) -> str

`migration` is what GET /admin/migrations/{id} answers, `history` the entries of its
audit trail, `examples` the judged pairs kept with `store_examples`. The page holds the
phase timeline, the last verdict's gates with their confidence bounds, the gates' figures
over time as charts, the quality gates' results and the most divergent judged pairs, the
last pre-flight replay, and the current step's per-arm figures. Every number on it comes
from those inputs (migration.report_figures says where each
one is read); nothing is fetched: CSS and SVG are inline, there is no script, and a
Content-Security-Policy forbids loading anything. All text is escaped: an audit
reason may carry what a user typed. The figures a test checks are in data attributes
(`data-gate`, `data-scope`, `data-estimate`...), exactly as the audit holds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migration import report_figures as figures
from migration.report_charts import Axis, Band, Series, elapsed, esc, line_chart, number_attr, timeline
from migration.report_format import (
    BLUE,
    GREY,
    NONE,
    ORANGE,
    Entry,
    Format,
    badge,
    count,
    data_attrs,
    general,
    ms,
    number,
    pct,
    show,
    signed_pct,
    usd,
)
from migration.report_quality import quality_section, replay_section
from migration.verify import verify

BAND_POINTS = 200
KNOWN_GATES = ("critical_error_ratio", "error_rate", "latency_p99", "ttft_p99", "cost")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:0 20px 40px}header{background:#1f2328;color:#fff;padding:18px 20px}
header h1{margin:0 0 4px;font-size:22px}header p{margin:0;color:#c9d1d9}section{background:#fff;
border:1px solid #d0d7de;border-radius:6px;margin:16px 0;padding:12px 16px}h2{font-size:17px;margin:4px 0 10px}
h3{font-size:14px;margin:14px 0 6px}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}th{background:#f6f8fa}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}.badge{display:inline-block;padding:1px 8px;
border-radius:10px;font-weight:600;font-size:12px;background:#eaeef2}.pass{background:#d2f4dc;color:#116329}
.fail{background:#ffd8d3;color:#a40e26}.inconclusive{background:#fff1c2;color:#7d4e00}.skipped{color:#57606a}
.chart{width:100%;height:auto;display:block}.chart text{font-size:11px;fill:#57606a}.chart .inbar{fill:#fff}
.grid{stroke:#eaeef2}.mark{stroke:#8a8f98;stroke-dasharray:3 3}.threshold{stroke:#c8453b;stroke-width:1.4}
.legend{list-style:none;padding:0;margin:4px 0 8px;display:flex;flex-wrap:wrap;gap:14px;font-size:12px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
.faint{opacity:.3}.note,.empty{color:#57606a;font-size:12.5px}.kv{display:flex;flex-wrap:wrap;gap:6px 24px}
.kv div b{display:block;font-size:12px;color:#57606a;font-weight:500}pre{white-space:pre-wrap;word-break:break-word;
background:#f6f8fa;padding:6px 8px;margin:4px 0;font-size:12px}.pair{border-top:1px solid #eaeef2;padding:8px 0}
"""


def _limit(gates: Mapping[str, Any], key: str) -> str:
    value = gates.get(key)
    return f"{value:g} ms" if isinstance(value, int | float) else "its threshold"


def _gate_formats(name: str, gates: Mapping[str, Any]) -> tuple[str, Format, str, Format]:
    """(what the estimate is, its format, what `beside` is, its format) of a gate."""
    known: dict[str, tuple[str, Format, str, Format]] = {
        "critical_error_ratio": ("candidate upstream attempts failed", pct, "clients saw", pct),
        "error_rate": ("candidate upstream attempts failed", pct, "clients saw", pct),
        "latency_p99": (f"candidate answers slower than {_limit(gates, 'p99_ms')}", pct, "baseline p99", ms),
        "ttft_p99": (f"candidate first tokens slower than {_limit(gates, 'ttft_p99_ms')}", pct,
                     "baseline p99", ms),
        "cost": ("candidate cost per request over the baseline's", signed_pct, "baseline mean", usd),
        "quality_json": ("candidate's invalid-JSON rate over the baseline's, pair by pair", signed_pct,
                         "baseline invalid", pct),
        "quality_tools": ("candidate's invalid tool-call rate over the baseline's, pair by pair", signed_pct,
                          "baseline invalid", pct),
        "quality_win_rate": ("candidate's judged score (win 1, tie 0.5, loss 0)", pct, "noise floor", pct),
    }
    if name in known:
        return known[name]
    return (name.replace("_", " "), pct if name.startswith("quality") else general, "beside", general)


def _phase_label(entry: Entry) -> str:
    phase = str(entry.get("to_phase", "?"))
    if phase == "canary":
        return f"canary {float(entry.get('candidate_weight_bp', 0)) / 100:g}%"
    if phase == "shadow":
        return f"shadow {float(entry.get('shadow_percent', 0)):g}%"
    if phase == "promoted" and float(entry.get("shadow_percent", 0) or 0) > 0:
        return "promoted (safety window)"
    return phase


def _axis(history: Sequence[Entry]) -> tuple[Axis, list[tuple[float, float, str, str]]]:
    times = [t for t in map(figures.epoch, history) if t is not None]
    start, end = (min(times), max(times)) if times else (0.0, 1.0)
    moves = [(t, e) for e in history if e.get("kind") == "transition" and (t := figures.epoch(e)) is not None]
    spans = [(t, moves[i + 1][0] if i + 1 < len(moves) else end, str(e.get("to_phase")), _phase_label(e))
             for i, (t, e) in enumerate(moves)]
    marks = tuple((t, f"{e.get('action')}: {_phase_label(e)}") for t, e in moves[1:])
    return Axis(start, end if end > start else start + 1.0, marks), spans


def _header(migration: Entry, spec: Entry, state: Entry) -> str:
    def arm(name: str) -> str:
        target = spec.get(name) or {}
        return f"{target.get('provider', '?')}/{target.get('model', '?')}"

    kill = " · kill switch on" if migration.get("kill_switch") else ""
    return (f"<header><h1>Migration {esc(migration.get('id', '?'))}</h1><p>alias {esc(spec.get('alias', '?'))}: "
            f"{esc(arm('baseline'))} → {esc(arm('candidate'))} · phase {esc(state.get('phase', '?'))}"
            f"{esc(kill)}</p></header>")


def _summary(migration: Entry, state: Entry, history: Sequence[Entry], ticks: Sequence[Entry]) -> str:
    last = ticks[-1]["verdict"] if ticks else {}
    counts = {r: sum(1 for t in ticks if t["verdict"].get("result") == r) for r in ("pass", "fail", "inconclusive")}
    checked = verify(history)
    items = [
        ("Phase", esc(state.get("phase", "?")) + (f" (step {esc(state.get('step_index'))})"
                                                 if state.get("phase") == "canary" else "")),
        ("Candidate share", show(state.get("candidate_weight_bp", 0) / 10000, pct)),
        ("Shadow", esc(f"{float(state.get('shadow_percent', 0) or 0):g}%")),
        ("Version", esc(migration.get("version", state.get("version", "?")))),
        ("Analysis ticks", f"{len(ticks)}: {counts['pass']} pass, {counts['fail']} fail, "
                           f"{counts['inconclusive']} inconclusive"),
        ("Last verdict", badge(last.get("result", "none")) if last else "no analysis yet"),
        ("Requests in the last verdict", f"baseline {show(last.get('requests_baseline'), count)}, candidate "
                                         f"{show(last.get('requests_candidate'), count)}"),
    ]
    cells = "".join(f"<div><b>{name}</b>{value}</div>" for name, value in items)
    return (f'<section id="summary" data-migration="{esc(migration.get("id", ""))}" '
            f'data-phase="{esc(state.get("phase", ""))}" data-version="{number_attr(migration.get("version"))}" '
            f'data-entries="{len(history)}" data-ticks="{len(ticks)}" '
            f'data-result="{esc(last.get("result", ""))}" data-verified="{str(checked.ok).lower()}">'
            f'<h2>At a glance</h2><div class="kv">{cells}</div>'
            f'<p><b>State:</b> {esc(state.get("reason", ""))}</p>'
            f'<p><b>Last verdict:</b> {esc(last.get("reason", "")) or NONE}</p>'
            f'<p class="note">{esc(str(checked).splitlines()[0])}</p></section>')


def _timeline(history: Sequence[Entry], axis: Axis, spans: Sequence[tuple[float, float, str, str]]) -> str:
    rows = []
    for e in history:
        if e.get("kind") == "tick":
            continue
        move = e.get("from_phase") if e.get("from_phase") == e.get("to_phase") else \
            f"{e.get('from_phase')} → {e.get('to_phase')}"
        t = figures.epoch(e)
        rows.append(f'<tr data-action="{esc(e.get("action", ""))}"><td class="num">{esc(e.get("time", ""))}'
                    f'{"" if t is None else " (+" + esc(elapsed(t - axis.start)) + ")"}</td>'
                    f'<td>{esc(e.get("actor", ""))}</td><td>{esc(e.get("action", ""))}</td><td>{esc(move)}</td>'
                    f'<td class="num">{esc(_phase_label(e))}</td><td>{esc(e.get("reason", ""))}</td></tr>')
    return (f'<section id="timeline"><h2>Phase timeline</h2>{timeline(spans, axis)}<table><tr><th>Time</th>'
            f'<th>Actor</th><th>Action</th><th>Phase</th><th>Traffic</th><th>Reason</th></tr>{"".join(rows)}'
            f"</table></section>")


def _gate_row(gate: Entry, gates: Mapping[str, Any]) -> str:
    name = str(gate.get("gate", "?"))
    what, fmt, beside_label, beside_fmt = _gate_formats(name, gates)
    bounds = figures.confidence_bounds(gate)
    lower, upper = bounds if bounds is not None else (None, None)
    shown = NONE if bounds is None else f"{show(lower, fmt)} to {show(upper, fmt)}"
    inputs = {k: v for k, v in (gate.get("inputs") or {}).items() if k != "test"}
    counts = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in inputs.items())
    return (f'<tr data-gate="{esc(name)}" data-scope="{esc(gate.get("scope", "step"))}" '
            f'data-result="{esc(gate.get("result", ""))}" data-estimate="{number_attr(gate.get("estimate"))}" '
            f'data-threshold="{number_attr(gate.get("threshold"))}" data-alpha="{number_attr(gate.get("alpha"))}" '
            f'data-beside="{number_attr(gate.get("beside"))}" data-lower="{number_attr(lower)}" '
            f'data-upper="{number_attr(upper)}" data-inputs="{esc(json.dumps(gate.get("inputs"), default=str))}">'
            f'<td><b>{esc(name)}</b><br><span class="note">{esc(what)}</span></td><td>{esc(gate.get("scope"))}</td>'
            f'<td>{badge(gate.get("result"))}</td><td class="num">{show(gate.get("estimate"), fmt)}</td>'
            f'<td class="num">{shown}</td><td class="num">{show(gate.get("threshold"), fmt)}</td>'
            f'<td class="num">{show(gate.get("alpha"), general)}</td><td class="num">{esc(beside_label)} '
            f'{show(gate.get("beside"), beside_fmt)}</td><td>{esc(counts)}<br><span class="note">'
            f'{esc(gate.get("note", ""))}</span></td></tr>')


def _gates(ticks: Sequence[Entry], gates: Mapping[str, Any]) -> str:
    if not ticks:
        return '<section id="gates"><h2>Gates</h2><p class="empty">No analysis tick yet.</p></section>'
    last = ticks[-1]
    verdict = last["verdict"]
    ordered = sorted(verdict.get("gates", []), key=lambda g: g.get("scope", "step") != "step")
    rows = "".join(_gate_row(g, gates) for g in ordered)
    return (f'<section id="gates" data-time="{esc(last.get("time", ""))}"><h2>Gates at the last analysis '
            f'({esc(last.get("time", ""))}): {badge(verdict.get("result"))}</h2>'
            f'<p class="note">Bounds: the values the gate\'s own anytime-valid test has not ruled out at its level '
            f"&alpha;. A gate fails only when they lie wholly on the wrong side of its threshold (above it; below it "
            f"for the win rate, where higher is better) and passes only when they lie wholly on the right side (some "
            f"gates need more to pass: enough samples, a measured noise "
            f"floor). Scope “block” is the step's latest block of recent_window_s, judged on its own "
            f"(block {esc(verdict.get('block', 1))}).</p><table><tr><th>Gate</th><th>Scope</th><th>Result</th>"
            f"<th>Estimate</th><th>Bounds</th><th>Threshold</th><th>&alpha;</th><th>Beside</th>"
            f"<th>Counts the test read</th></tr>{rows}</table></section>")


def _over_time(ticks: Sequence[Entry], axis: Axis, gates: Mapping[str, Any]) -> str:
    thin = figures.thin(ticks)
    coarse = figures.thin(ticks, BAND_POINTS)  # a band needs fewer points than a line, and each costs two searches
    last = ticks[-1]["verdict"] if ticks else {}

    def threshold(name: str, fallback: Any) -> float | None:
        gate = figures.gate_of(last, name)
        return number(gate.get("threshold") if gate is not None else fallback)

    def s(key: str, label: str, colour: str, gate: str, read: Callable[[Entry], float | None],
          scope: str = "step", dashed: bool = False) -> Series:
        return Series(key, label, colour, figures.series(thin, gate, scope, read), dashed)

    thinned = f" Thinned to {len(thin)} of {len(ticks)} ticks." if len(thin) < len(ticks) else ""
    parts = ['<section id="charts"><h2>Over time</h2><p class="note">Each point is one analysis tick (dashed '
             f"verticals: transitions). A step's figures count from the step's start, so each line restarts with "
             f"the step.{thinned}</p>",
             "<h3>Error rate (candidate)</h3>", line_chart("error_rate", [  # the gate's own figure drawn last, on top
                 s("error_rate.beside", "as its clients saw it, after retries and fallbacks", ORANGE, "error_rate",
                   figures.beside),
                 s("error_rate.block", "the same, latest block", BLUE, "error_rate", figures.estimate, "block", True),
                 s("error_rate.estimate", "upstream attempts failed (error_rate gate, step)", BLUE, "error_rate",
                   figures.estimate)], axis, pct, threshold=threshold("error_rate", gates.get("error_rate")),
                 band=Band("confidence bounds (step)", BLUE, figures.band(coarse, "error_rate"))),
             '<p class="note">The baseline\'s error rate is not in the verdicts; the current step\'s, per arm, is '
             "in the last section.</p>"]
    for gate, title, limit in (("latency_p99", "Latency p99", "p99_ms"), ("ttft_p99", "Time to first token p99",
                                                                          "ttft_p99_ms")):
        parts += [f"<h3>{title} per arm</h3>", line_chart(gate, [
            s(f"{gate}.baseline", "baseline p99 (the gate's beside)", GREY, gate, figures.beside),
            s(f"{gate}.candidate", "candidate p99 (as the gate recorded it)", BLUE, gate, figures.noted_p99)],
            axis, ms, threshold=number(gates.get(limit)), threshold_label=limit,
            empty="No answers of this kind recorded.")]
    parts.append('<p class="note">The verdicts record p99 only (the gates test the share of answers slower than '
                 "the threshold; that share, with its bounds, is in the gates table). p50 is in no audit record: "
                 "see the current step's figures per arm below.</p>")
    parts += ["<h3>Cost</h3>", line_chart("cost", [
        s("cost.estimate", "candidate cost per request over the baseline's (cost gate)", BLUE, "cost",
          figures.estimate)], axis, signed_pct, threshold=threshold("cost", gates.get("cost_increase")),
        band=Band("confidence bounds (step)", BLUE, figures.band(coarse, "cost"))),
        "<h3>Mean cost per request, per arm</h3>", line_chart("cost_per_arm", [
            s("cost.mean_baseline", "baseline mean cost per request", GREY, "cost",
              figures.input_number("mean_baseline")),
            s("cost.mean_candidate", "candidate mean cost per request", BLUE, "cost",
              figures.input_number("mean_candidate"))], axis, usd,
            empty="Per-arm mean costs are recorded only when the cost gate compares the arms' means; with "
                  "shadowed pairs it compares prompt by prompt (the increase above).")]
    names = {str(g.get("gate")) for g in last.get("gates", [])} - set(KNOWN_GATES) if last else set()
    for name in sorted(names):
        _, fmt, _, _ = _gate_formats(name, gates)
        parts += [f"<h3>{esc(name)}</h3>", line_chart(name, [
            s(f"{name}.estimate", f"{name} estimate (step)", BLUE, name, figures.estimate)], axis, fmt,
            threshold=threshold(name, None), band=Band("confidence bounds (step)", BLUE, figures.band(coarse, name)))]
    return "".join(parts) + "</section>"


def _arms(migration: Entry) -> str:
    arms = figures.arm_figures(migration.get("local_window"))
    if arms is None:
        return '<section id="arms"><h2>This step per arm</h2><p class="empty">No window for this step.</p></section>'
    rows = "".join(
        f'<tr data-arm="{name}" {data_attrs(f)}>'
        f'<td>{name}</td><td class="num">{f["requests"]}</td><td class="num">{f["errors"]} '
        f'({show(f["error_rate"], pct)})</td><td class="num">{f["attempts"]} ({show(f["attempt_error_rate"], pct)} '
        f'failed)</td><td class="num">{show(f["p50_ms"], ms)}</td><td class="num">{show(f["p99_ms"], ms)}</td>'
        f'<td class="num">{show(f["ttft_p50_ms"], ms)} / {show(f["ttft_p99_ms"], ms)}</td>'
        f'<td class="num">{show(f["mean_cost_micros"], usd)}</td></tr>' for name, f in arms.items())
    return ('<section id="arms"><h2>This step per arm</h2><p class="note">As counted by the gateway process that '
            "served this page, since the current step began (not pooled across replicas: the verdicts above use "
            "the pooled counts). Quantiles to the histogram's 5 % buckets.</p><table><tr><th>Arm</th>"
            "<th>Requests</th><th>Errors (clients)</th><th>Upstream attempts</th><th>p50</th><th>p99</th>"
            f"<th>TTFT p50 / p99</th><th>Mean cost</th></tr>{rows}</table></section>")


def render_report(
    migration: Mapping[str, Any], history: Sequence[Mapping[str, Any]], examples: Sequence[Mapping[str, Any]] = (),
) -> str:
    spec, state = migration.get("spec") or {}, migration.get("state") or {}
    gates = spec.get("gates") or {}
    ticks = figures.ticks_of(history)
    axis, spans = _axis(history)
    as_of = history[-1].get("time", "?") if history else "?"
    title = f"Migration {migration.get('id', '?')}: {state.get('phase', '?')}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>{_header(migration, spec, state)}<main>"
        f"{_summary(migration, state, history, ticks)}{_timeline(history, axis, spans)}{_gates(ticks, gates)}"
        f"{_over_time(ticks, axis, gates)}{quality_section(ticks, examples)}{replay_section(history)}{_arms(migration)}"
        f'<p class="note">From {len(history)} audit entries up to {esc(as_of)} '
        f"({len(ticks)} analysis ticks) and the migration's state at version {esc(migration.get('version', '?'))}."
        "</p></main></body></html>\n"
    )
