"""The migration report's quality and pre-flight replay sections (see migration.report)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migration import report_figures as figures
from migration.report_charts import esc, number_attr, share_bar
from migration.report_format import (
    GREEN,
    GREY,
    NONE,
    RED,
    Entry,
    badge,
    count,
    data_attrs,
    general,
    pct,
    show,
    signed_pct,
)


def _judge(judge: Entry) -> str:
    i = judge.get("inputs") or {}
    keys = ("judged", "wins", "ties", "losses", "flips", "noise_pairs", "noise_decisive", "max_noise_floor")
    judged, pairs, decisive = (int(i.get(k) or 0) for k in ("judged", "noise_pairs", "noise_decisive"))
    shares = [("candidate wins", int(i.get("wins") or 0), GREEN), ("ties", int(i.get("ties") or 0), GREY),
              ("candidate losses", int(i.get("losses") or 0), RED)]
    flips = f" ({int(i.get('flips') or 0) / judged:.1%} of judged)" if judged else ""
    floor = (f"the judge preferred one of two answers of the baseline model to the same request in {decisive} of "
             f"{pairs} noise pairs ({decisive / pairs:.1%})" if pairs else "unmeasured (no noise pairs yet)")
    return (f'<div id="quality-judge" {data_attrs({k: i.get(k) for k in keys})} '
            f'data-result="{esc(judge.get("result"))}" data-estimate="{number_attr(judge.get("estimate"))}">'
            f'<h3>LLM judge: {badge(judge.get("result"))}</h3>{share_bar("win_tie_loss", shares)}'
            f"<p>{judged} pairs judged, each in both orders; {show(i.get('flips'), count)} judgements flipped with "
            f"the order{esc(flips)} (counted as ties). Score {show(judge.get('estimate'), pct)} against a floor of "
            f"{show(judge.get('threshold'), pct)}.</p><p><b>Noise floor:</b> {esc(floor)}; the gate passes only "
            f"with at least {show(i.get('min_noise_pairs'), count)} noise pairs and a floor of at most "
            f"{show(i.get('max_noise_floor'), pct)}.</p></div>")


def _check_row(g: Entry) -> str:
    i = g.get("inputs") or {}

    def rate(arm: str) -> str:
        invalid, expected = i.get(f"invalid_{arm}"), i.get(f"expected_{arm}")
        if not isinstance(invalid, int) or not isinstance(expected, int) or not expected:
            return NONE
        return f"{invalid}/{expected} ({invalid / expected:.2%})"

    return (f'<tr data-check="{esc(g.get("gate"))}" data-result="{esc(g.get("result"))}" '
            f'{data_attrs({k: i.get(k) for k in ("n", "worse", "better")})} '
            f'{data_attrs({"estimate": g.get("estimate"), "beside": g.get("beside")})}>'
            f'<td>{esc(g.get("gate"))}</td><td>{badge(g.get("result"))}</td><td class="num">{rate("candidate")}</td>'
            f'<td class="num">{rate("baseline")}</td><td class="num">{show(i.get("n"), count)} pairs: '
            f'{show(i.get("worse"), count)} only the candidate failed, {show(i.get("better"), count)} only the '
            f'baseline</td><td class="num">{show(g.get("estimate"), signed_pct)} (margin '
            f'{show(g.get("threshold"), signed_pct)})</td></tr>')


def quality_section(ticks: Sequence[Entry], examples: Sequence[Entry]) -> str:
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


def replay_section(history: Sequence[Entry]) -> str:
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
        f'<td>{badge(g.get("result"))}</td><td class="num">{show(g.get("estimate"), general)}</td>'
        f'<td class="num">{show(g.get("threshold"), general)}</td><td>{esc(g.get("note", ""))}</td></tr>'
        for g in verdict.get("gates", []) if g.get("scope", "step") == "step")
    counts = {k: r.get(k) for k in ("captured", "replayed", "excluded", "compared", "judged")}
    return (f'<section id="replay" data-count="{len(replays)}" data-time="{esc(last.get("time", ""))}" '
            f'data-result="{esc(verdict.get("result"))}" {data_attrs(counts)}><h2>Pre-flight replay '
            f'({esc(last.get("time", ""))}, by {esc(last.get("actor", "?"))}): {badge(verdict.get("result"))}</h2>'
            f"<p>{show(r.get('replayed'), count)} of {show(r.get('captured'), count)} captured requests sent to "
            f"both arms ({show(r.get('excluded'), count)} excluded); {show(r.get('compared'), count)} pairs "
            f"compared, {show(r.get('judged'), count)} judged. {esc(verdict.get('reason', ''))}</p>"
            "<table><tr><th>Gate</th><th>Result</th><th>Estimate</th><th>Threshold</th><th>Note</th></tr>"
            f"{rows}</table></section>")
