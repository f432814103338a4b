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
from migration.report_charts import Axis, Band, Series, elapsed, esc, line_chart, number_attr, share_bar, timeline
from migration.verify import verify

Entry = Mapping[str, Any]
Format = Callable[[float], str]
BLUE, ORANGE, GREY, GREEN, RED = "#2f7fd1", "#e07b00", "#8a8f98", "#2e9d5b", "#c8453b"
NONE = "&ndash;"
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


def _pct(v: float) -> str:
    return f"{v:.2%}"


def _signed_pct(v: float) -> str:
    return "∞" if v == float("inf") else f"{v:+.2%}"


def _ms(v: float) -> str:
    return f"{v:.0f} ms"


def _usd(micros: float) -> str:
    return f"${micros / 1_000_000:.6f}"


def _count(v: float) -> str:
    return f"{v:.0f}"


def _general(v: float) -> str:
    return f"{v:.4g}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _show(value: Any, fmt: Format) -> str:
    return esc(fmt(float(value))) if isinstance(value, int | float) and not isinstance(value, bool) else NONE


def _limit(gates: Mapping[str, Any], key: str) -> str:
    value = gates.get(key)
    return f"{value:g} ms" if isinstance(value, int | float) else "its threshold"


def _gate_formats(name: str, gates: Mapping[str, Any]) -> tuple[str, Format, str, Format]:
    """(what the estimate is, its format, what `beside` is, its format) of a gate."""
    known: dict[str, tuple[str, Format, str, Format]] = {
        "critical_error_ratio": ("candidate upstream attempts failed", _pct, "clients saw", _pct),
        "error_rate": ("candidate upstream attempts failed", _pct, "clients saw", _pct),
        "latency_p99": (f"candidate answers slower than {_limit(gates, 'p99_ms')}", _pct, "baseline p99", _ms),
        "ttft_p99": (f"candidate first tokens slower than {_limit(gates, 'ttft_p99_ms')}", _pct,
                     "baseline p99", _ms),
        "cost": ("candidate cost per request over the baseline's", _signed_pct, "baseline mean", _usd),
        "quality_json": ("candidate's invalid-JSON rate over the baseline's, pair by pair", _signed_pct,
                         "baseline invalid", _pct),
        "quality_tools": ("candidate's invalid tool-call rate over the baseline's, pair by pair", _signed_pct,
                          "baseline invalid", _pct),
        "quality_win_rate": ("candidate's judged score (win 1, tie 0.5, loss 0)", _pct, "noise floor", _pct),
    }
    if name in known:
        return known[name]
    return (name.replace("_", " "), _pct if name.startswith("quality") else _general, "beside", _general)


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


def _data_attrs(values: Mapping[str, Any]) -> str:
    return " ".join(f'data-{key.replace("_", "-")}="{number_attr(value)}"' for key, value in values.items())


def _badge(result: object) -> str:
    return f'<span class="badge {esc(result)}">{esc(result)}</span>'


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
        ("Candidate share", _show(state.get("candidate_weight_bp", 0) / 10000, _pct)),
        ("Shadow", esc(f"{float(state.get('shadow_percent', 0) or 0):g}%")),
        ("Version", esc(migration.get("version", state.get("version", "?")))),
        ("Analysis ticks", f"{len(ticks)}: {counts['pass']} pass, {counts['fail']} fail, "
                           f"{counts['inconclusive']} inconclusive"),
        ("Last verdict", _badge(last.get("result", "none")) if last else "no analysis yet"),
        ("Requests in the last verdict", f"baseline {_show(last.get('requests_baseline'), _count)}, candidate "
                                         f"{_show(last.get('requests_candidate'), _count)}"),
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
    shown = NONE if bounds is None else f"{_show(lower, fmt)} to {_show(upper, fmt)}"
    inputs = {k: v for k, v in (gate.get("inputs") or {}).items() if k != "test"}
    counts = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in inputs.items())
    return (f'<tr data-gate="{esc(name)}" data-scope="{esc(gate.get("scope", "step"))}" '
            f'data-result="{esc(gate.get("result", ""))}" data-estimate="{number_attr(gate.get("estimate"))}" '
            f'data-threshold="{number_attr(gate.get("threshold"))}" data-alpha="{number_attr(gate.get("alpha"))}" '
            f'data-beside="{number_attr(gate.get("beside"))}" data-lower="{number_attr(lower)}" '
            f'data-upper="{number_attr(upper)}" data-inputs="{esc(json.dumps(gate.get("inputs"), default=str))}">'
            f'<td><b>{esc(name)}</b><br><span class="note">{esc(what)}</span></td><td>{esc(gate.get("scope"))}</td>'
            f'<td>{_badge(gate.get("result"))}</td><td class="num">{_show(gate.get("estimate"), fmt)}</td>'
            f'<td class="num">{shown}</td><td class="num">{_show(gate.get("threshold"), fmt)}</td>'
            f'<td class="num">{_show(gate.get("alpha"), _general)}</td><td class="num">{esc(beside_label)} '
            f'{_show(gate.get("beside"), beside_fmt)}</td><td>{esc(counts)}<br><span class="note">'
            f'{esc(gate.get("note", ""))}</span></td></tr>')


def _gates(ticks: Sequence[Entry], gates: Mapping[str, Any]) -> str:
    if not ticks:
        return '<section id="gates"><h2>Gates</h2><p class="empty">No analysis tick yet.</p></section>'
    last = ticks[-1]
    verdict = last["verdict"]
    ordered = sorted(verdict.get("gates", []), key=lambda g: g.get("scope", "step") != "step")
    rows = "".join(_gate_row(g, gates) for g in ordered)
    return (f'<section id="gates" data-time="{esc(last.get("time", ""))}"><h2>Gates at the last analysis '
            f'({esc(last.get("time", ""))}): {_badge(verdict.get("result"))}</h2>'
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
        return _number(gate.get("threshold") if gate is not None else fallback)

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
                   figures.estimate)], axis, _pct, threshold=threshold("error_rate", gates.get("error_rate")),
                 band=Band("confidence bounds (step)", BLUE, figures.band(coarse, "error_rate"))),
             '<p class="note">The baseline\'s error rate is not in the verdicts; the current step\'s, per arm, is '
             "in the last section.</p>"]
    for gate, title, limit in (("latency_p99", "Latency p99", "p99_ms"), ("ttft_p99", "Time to first token p99",
                                                                          "ttft_p99_ms")):
        parts += [f"<h3>{title} per arm</h3>", line_chart(gate, [
            s(f"{gate}.baseline", "baseline p99 (the gate's beside)", GREY, gate, figures.beside),
            s(f"{gate}.candidate", "candidate p99 (as the gate recorded it)", BLUE, gate, figures.noted_p99)],
            axis, _ms, threshold=_number(gates.get(limit)), threshold_label=limit,
            empty="No answers of this kind recorded.")]
    parts.append('<p class="note">The verdicts record p99 only (the gates test the share of answers slower than '
                 "the threshold; that share, with its bounds, is in the gates table). p50 is in no audit record: "
                 "see the current step's figures per arm below.</p>")
    parts += ["<h3>Cost</h3>", line_chart("cost", [
        s("cost.estimate", "candidate cost per request over the baseline's (cost gate)", BLUE, "cost",
          figures.estimate)], axis, _signed_pct, threshold=threshold("cost", gates.get("cost_increase")),
        band=Band("confidence bounds (step)", BLUE, figures.band(coarse, "cost"))),
        "<h3>Mean cost per request, per arm</h3>", line_chart("cost_per_arm", [
            s("cost.mean_baseline", "baseline mean cost per request", GREY, "cost",
              figures.input_number("mean_baseline")),
            s("cost.mean_candidate", "candidate mean cost per request", BLUE, "cost",
              figures.input_number("mean_candidate"))], axis, _usd,
            empty="Per-arm mean costs are recorded only when the cost gate compares the arms' means; with "
                  "shadowed pairs it compares prompt by prompt (the increase above).")]
    names = {str(g.get("gate")) for g in last.get("gates", [])} - set(KNOWN_GATES) if last else set()
    for name in sorted(names):
        _, fmt, _, _ = _gate_formats(name, gates)
        parts += [f"<h3>{esc(name)}</h3>", line_chart(name, [
            s(f"{name}.estimate", f"{name} estimate (step)", BLUE, name, figures.estimate)], axis, fmt,
            threshold=threshold(name, None), band=Band("confidence bounds (step)", BLUE, figures.band(coarse, name)))]
    return "".join(parts) + "</section>"


def _judge(judge: Entry) -> str:
    i = judge.get("inputs") or {}
    keys = ("judged", "wins", "ties", "losses", "flips", "noise_pairs", "noise_decisive", "max_noise_floor")
    judged, pairs, decisive = (int(i.get(k) or 0) for k in ("judged", "noise_pairs", "noise_decisive"))
    shares = [("candidate wins", int(i.get("wins") or 0), GREEN), ("ties", int(i.get("ties") or 0), GREY),
              ("candidate losses", int(i.get("losses") or 0), RED)]
    flips = f" ({int(i.get('flips') or 0) / judged:.1%} of judged)" if judged else ""
    floor = (f"the judge preferred one of two answers of the baseline model to the same request in {decisive} of "
             f"{pairs} noise pairs ({decisive / pairs:.1%})" if pairs else "unmeasured (no noise pairs yet)")
    return (f'<div id="quality-judge" {_data_attrs({k: i.get(k) for k in keys})} '
            f'data-result="{esc(judge.get("result"))}" data-estimate="{number_attr(judge.get("estimate"))}">'
            f'<h3>LLM judge: {_badge(judge.get("result"))}</h3>{share_bar("win_tie_loss", shares)}'
            f"<p>{judged} pairs judged, each in both orders; {_show(i.get('flips'), _count)} judgements flipped with "
            f"the order{esc(flips)} (counted as ties). Score {_show(judge.get('estimate'), _pct)} against a floor of "
            f"{_show(judge.get('threshold'), _pct)}.</p><p><b>Noise floor:</b> {esc(floor)}; the gate passes only "
            f"with at least {_show(i.get('min_noise_pairs'), _count)} noise pairs and a floor of at most "
            f"{_show(i.get('max_noise_floor'), _pct)}.</p></div>")


def _check_row(g: Entry) -> str:
    i = g.get("inputs") or {}

    def rate(arm: str) -> str:
        invalid, expected = i.get(f"invalid_{arm}"), i.get(f"expected_{arm}")
        if not isinstance(invalid, int) or not isinstance(expected, int) or not expected:
            return NONE
        return f"{invalid}/{expected} ({invalid / expected:.2%})"

    return (f'<tr data-check="{esc(g.get("gate"))}" data-result="{esc(g.get("result"))}" '
            f'{_data_attrs({k: i.get(k) for k in ("n", "worse", "better")})} '
            f'{_data_attrs({"estimate": g.get("estimate"), "beside": g.get("beside")})}>'
            f'<td>{esc(g.get("gate"))}</td><td>{_badge(g.get("result"))}</td><td class="num">{rate("candidate")}</td>'
            f'<td class="num">{rate("baseline")}</td><td class="num">{_show(i.get("n"), _count)} pairs: '
            f'{_show(i.get("worse"), _count)} only the candidate failed, {_show(i.get("better"), _count)} only the '
            f'baseline</td><td class="num">{_show(g.get("estimate"), _signed_pct)} (margin '
            f'{_show(g.get("threshold"), _signed_pct)})</td></tr>')


def _quality(ticks: Sequence[Entry], examples: Sequence[Entry]) -> str:
    last = ticks[-1]["verdict"] if ticks else {}
    parts = ['<section id="quality"><h2>Quality</h2>']
    judge = figures.gate_of(last, "quality_win_rate")
    parts.append(_judge(judge) if judge is not None else '<p class="empty" id="quality-judge" data-judged="none">'
                 "Not judged: the verdicts carry no quality_win_rate gate (no judge configured).</p>")
    checks = [g for g in (last or {}).get("gates", []) if str(g.get("gate", "")).startswith("quality_")
              and g.get("gate") != "quality_win_rate" and g.get("scope", "step") == "step"]
    if checks:
        parts.append('<h3>Deterministic checks (whole step)</h3><table id="quality-checks"><tr><th>Check</th>'
                     "<th>Result</th><th>Candidate invalid</th><th>Baseline invalid</th><th>Compared pairs</th>"
                     f"<th>Difference</th></tr>{''.join(_check_row(g) for g in checks)}</table>")
    else:
        parts.append('<p class="empty" id="quality-checks">No deterministic checks in the verdicts.</p>')
    found = figures.divergent_pairs(examples)
    if not found:
        parts.append('<p class="empty" id="judged-pairs" data-count="0">No examples stored (they are kept only '
                     "with gates.quality.store_examples, for its retention).</p>")
    else:
        items = [f'<div class="pair" data-verdict="{esc(e.get("verdict"))}"><b>{esc(e.get("verdict"))}</b> · '
                 f'{esc(e.get("time", ""))} · text similarity {similarity:.2f}<br>{esc(e.get("reason", ""))}'
                 f'<pre>{esc(str(e.get("request_excerpt", ""))[:600])}</pre><b>baseline</b>'
                 f'<pre>{esc(str(e.get("baseline", ""))[:800])}</pre><b>candidate</b>'
                 f'<pre>{esc(str(e.get("candidate", ""))[:800])}</pre></div>' for e, similarity in found]
        parts.append(f'<h3>Most divergent judged pairs</h3><div id="judged-pairs" data-count="{len(items)}">'
                     '<p class="note">Candidate losses first, then wins, then ties; least similar answers first.</p>'
                     f'{"".join(items)}</div>')
    return "".join(parts) + "</section>"


def _replay(history: Sequence[Entry]) -> str:
    """The last pre-flight replay (migration.replay): what was replayed and its gates' verdict."""
    replays = [e for e in history if e.get("kind") == "replay" and isinstance(e.get("verdict"), Mapping)]
    if not replays:
        return ('<section id="replay" data-count="0"><h2>Pre-flight replay</h2><p class="empty">None run '
                "(<code>cutover replay --migration ID</code>, with the alias's requests captured).</p></section>")
    last = replays[-1]
    r, verdict = last.get("replay") or {}, last["verdict"]
    rows = "".join(
        f'<tr data-replay-gate="{esc(g.get("gate"))}" data-result="{esc(g.get("result"))}" '
        f'data-estimate="{number_attr(g.get("estimate"))}"><td>{esc(g.get("gate"))}</td>'
        f'<td>{_badge(g.get("result"))}</td><td class="num">{_show(g.get("estimate"), _general)}</td>'
        f'<td class="num">{_show(g.get("threshold"), _general)}</td><td>{esc(g.get("note", ""))}</td></tr>'
        for g in verdict.get("gates", []) if g.get("scope", "step") == "step")
    counts = {k: r.get(k) for k in ("captured", "replayed", "excluded", "compared", "judged")}
    return (f'<section id="replay" data-count="{len(replays)}" data-time="{esc(last.get("time", ""))}" '
            f'data-result="{esc(verdict.get("result"))}" {_data_attrs(counts)}><h2>Pre-flight replay '
            f'({esc(last.get("time", ""))}, by {esc(last.get("actor", "?"))}): {_badge(verdict.get("result"))}</h2>'
            f"<p>{_show(r.get('replayed'), _count)} of {_show(r.get('captured'), _count)} captured requests sent to "
            f"both arms ({_show(r.get('excluded'), _count)} excluded); {_show(r.get('compared'), _count)} pairs "
            f"compared, {_show(r.get('judged'), _count)} judged. {esc(verdict.get('reason', ''))}</p>"
            "<table><tr><th>Gate</th><th>Result</th><th>Estimate</th><th>Threshold</th><th>Note</th></tr>"
            f"{rows}</table></section>")


def _arms(migration: Entry) -> str:
    arms = figures.arm_figures(migration.get("local_window"))
    if arms is None:
        return '<section id="arms"><h2>This step per arm</h2><p class="empty">No window for this step.</p></section>'
    rows = "".join(
        f'<tr data-arm="{name}" {_data_attrs(f)}>'
        f'<td>{name}</td><td class="num">{f["requests"]}</td><td class="num">{f["errors"]} '
        f'({_show(f["error_rate"], _pct)})</td><td class="num">{f["attempts"]} ({_show(f["attempt_error_rate"], _pct)} '
        f'failed)</td><td class="num">{_show(f["p50_ms"], _ms)}</td><td class="num">{_show(f["p99_ms"], _ms)}</td>'
        f'<td class="num">{_show(f["ttft_p50_ms"], _ms)} / {_show(f["ttft_p99_ms"], _ms)}</td>'
        f'<td class="num">{_show(f["mean_cost_micros"], _usd)}</td></tr>' for name, f in arms.items())
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
        f"{_over_time(ticks, axis, gates)}{_quality(ticks, examples)}{_replay(history)}{_arms(migration)}"
        f'<p class="note">From {len(history)} audit entries up to {esc(as_of)} '
        f"({len(ticks)} analysis ticks) and the migration's state at version {esc(migration.get('version', '?'))}."
        "</p></main></body></html>\n"
    )
