"""cutover / Migration: one migration's rollout, arms, gates and shadow traffic."""

from __future__ import annotations

from board import (
    COUNT,
    DS,
    GATE_ERROR_RATE,
    GATE_MAX_NOISE_FLOOR,
    GATE_P99_S,
    GATE_WIN_RATE_FLOOR,
    JUDGE_USD_PER_HOUR,
    PER_MIN,
    RATIO,
    REQ_PER_S,
    RI,
    SECONDS,
    USD,
    Board,
    Q,
    quantiles,
    query_variable,
)


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
        [query_variable("migration", "Migration", "label_values(cutover_migration_phase, migration)", multi=False,
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
        "error_rate, latency_p99, ttft_p99, cost, quality_json, quality_tools, quality_win_rate) or manual. Each "
        "rollback is also an annotation on the time series.",
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
        "Error rate by arm: upstream attempts and what clients saw",
        "5xx share of the upstream attempts on each arm's target (first tries, retries, shadow copies): what "
        "the error gate judges. Beside it, the share of the arm's client requests that failed after "
        "retries and fallbacks. Client faults and 429s (4xx) are left out, as the gate does. Line: the 2 % gate.",
        [Q(f'(sum by (arm) (rate(cutover_migration_upstream_attempts_total{{{m}, status_class="5xx"}}[{RI}])) '
           f"or 0 * sum by (arm) (rate(cutover_migration_upstream_attempts_total{{{live}}}[{RI}]))) "
           f"/ sum by (arm) (rate(cutover_migration_upstream_attempts_total{{{live}}}[{RI}]))",
           "{{arm}} attempts"),
         Q(f'(sum by (arm) (rate(cutover_migration_requests_total{{{m}, status_class="5xx"}}[{RI}])) '
           f"or 0 * sum by (arm) (rate(cutover_migration_requests_total{{{live}}}[{RI}]))) "
           f"/ sum by (arm) (rate(cutover_migration_requests_total{{{live}}}[{RI}]))", "{{arm}} clients")],
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
        "per gate (critical_error_ratio, error_rate, latency_p99, ttft_p99, cost, quality_json, quality_tools, "
        "and quality_win_rate when a judge is set); a gate with _recent judged the step's latest block alone.",
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
        quantiles("cutover_shadow_latency_delta_seconds", m, "", (0.5, 0.99)),
        SECONDS, w=12,
    )
    board.panel(
        "Shadow minus primary cost per pair",
        "Cost delta per compared pair in USD (negative: the shadow side was cheaper): mean and median.",
        [Q(f"sum(rate(cutover_shadow_cost_delta_usd_sum{{{m}}}[{RI}])) "
           f"/ sum(rate(cutover_shadow_cost_delta_usd_count{{{m}}}[{RI}]))", "mean"),
         *quantiles("cutover_shadow_cost_delta_usd", m, "", (0.5,))],
        USD, w=12,
    )

    board.row("Quality")
    _quality(board, m)
    return board


# The judge's figures are read over a sliding hour: judged pairs are a small sample of the compared ones.
JUDGE_WINDOW = "1h"


def _quality(board: Board, m: str) -> None:
    """The quality row: the LLM judge's verdicts and costs, and the cheap checks of both arms' answers."""
    pairs = "cutover_judge_pairs_total"
    judged = f'sum(increase({pairs}{{{m}, result=~"win|tie|flip|loss"}}[{JUDGE_WINDOW}]))'
    noise = f'sum(increase({pairs}{{{m}, result=~"noise_decisive|noise_tie"}}[{JUDGE_WINDOW}]))'

    def counted(results: str, whole: str) -> str:
        # A result no pair has had yet has no series: 0, wherever the whole has data.
        return f'(sum(increase({pairs}{{{m}, result=~"{results}"}}[{JUDGE_WINDOW}])) or 0 * {whole})'

    # Each judged pair scores the candidate 1 (win), 1/2 (tie, or a judgement that flipped with the order), 0 (loss).
    win_rate = f"({counted('win', judged)} + 0.5 * {counted('tie|flip', judged)}) / {judged}"
    second_moment = f"({counted('win', judged)} + 0.25 * {counted('tie|flip', judged)}) / {judged}"
    band = f"1.96 * sqrt(clamp_min({second_moment} - ({win_rate}) ^ 2, 0) / {judged})"
    board.panel(
        "Judge win rate of the candidate, with 95 % bounds",
        "Share of judged pairs the candidate won, ties and order flips counting half: (win + (tie + flip) / 2) / "
        "judged, over the last hour, with a normal-approximation 95 % band (1.96 standard errors of the pairs' "
        "scores). Red below 45 %: 0.5 minus the default win_rate_margin. The win-rate gate itself reads the whole "
        "step with an anytime-valid confidence sequence and also needs the judge's noise floor measured, so the "
        "verdict is the gate's (Gates row), not this band.",
        [Q(win_rate, "win rate"),
         Q(f"clamp_min({win_rate} - {band}, 0)", "lower bound"),
         Q(f"clamp_max({win_rate} + {band}, 1)", "upper bound")],
        RATIO, w=12, thresholds=[(GATE_WIN_RATE_FLOOR, "green")], base_color="red", threshold_line=True,
        min_value=0, max_value=1,
    )
    board.panel(
        "Judged pairs per minute by result",
        "Pairs the judge decided, each judged in both orders of the answers: the candidate's win, tie or loss, "
        "flip (the judgement changed with the order: a tie), and the noise-floor pairs (two answers of the "
        "baseline to one request): noise_decisive (the judge preferred one all the same) or noise_tie.",
        [Q(f"sum by (result) (rate({pairs}{{{m}}}[{RI}])) * 60", "{{result}}")],
        PER_MIN, w=12,
    )
    board.panel(
        "Judge noise floor and order flips",
        "Noise floor: share of noise-floor pairs (two baseline answers to one request) on which the judge "
        "preferred one anyway; above the gate's max_noise_floor (line: the default 50 %) the win-rate gate "
        "cannot pass. Order flips: share of judged pairs whose judgement changed with the order of the answers. "
        "Both over the last hour.",
        [Q(f"{counted('noise_decisive', noise)} / {noise}", "noise floor"),
         Q(f"{counted('flip', judged)} / {judged}", "order flips")],
        RATIO, w=8, thresholds=[(GATE_MAX_NOISE_FLOOR, "red")], threshold_line=True, min_value=0, max_value=1,
    )
    board.panel(
        "Judge calls and dropped pairs per minute",
        "Calls of the judge by outcome (ok, unreadable: no verdict in the reply, failed), two per judged pair; "
        "and sampled pairs not judged, by reason: busy (max_concurrency reached), budget (the hourly spend cap), "
        "excluded (the request offered tools and exclude_tools is set, or the alias opted out).",
        [Q(f"sum by (outcome) (rate(cutover_judge_calls_total{{{m}}}[{RI}])) * 60", "calls {{outcome}}"),
         Q(f"sum by (reason) (rate(cutover_judge_dropped_total{{{m}}}[{RI}])) * 60", "dropped {{reason}}")],
        PER_MIN, w=8,
    )
    board.panel(
        "Judge spend over the last hour",
        "USD the judge's calls cost over the last rolling hour: its own ledger, what max_usd_per_hour caps "
        "(line: the default 2 USD). The cap holds each pair's worst case while it is judged, so spend stays "
        "under it; pairs beyond it are dropped (budget).",
        [Q(f"sum(increase(cutover_judge_cost_usd_total{{{m}}}[{JUDGE_WINDOW}]))", "judge spend")],
        USD, w=8, thresholds=[(JUDGE_USD_PER_HOUR, "red")], threshold_line=True, min_value=0,
    )

    checks = "cutover_migration_quality_checks_total"

    def share(part: str, whole: str) -> str:
        """Per arm: answers failing a check over the answers it applies to (0 while none failed)."""
        total = f'sum by (arm) (rate({checks}{{{m}, check="{whole}"}}[{RI}]))'
        return f'(sum by (arm) (rate({checks}{{{m}, check="{part}"}}[{RI}])) or 0 * {total}) / {total}'

    board.panel(
        "Invalid JSON rate by arm",
        "Share of answers to requests asking for JSON (response_format json_object or json_schema) that do not "
        "parse or do not fit the schema, per arm, on compared pairs. The quality_json gate compares the arms "
        "pair by pair: it fails when the candidate's rate is confidently more than 2 points (json_margin) above "
        "the baseline's.",
        [Q(share("json_invalid", "json_expected"), "{{arm}}")],
        RATIO, w=8, min_value=0,
    )
    board.panel(
        "Invalid tool call rate by arm",
        "Share of answers calling tools whose calls name a tool the request did not offer or whose arguments "
        "do not parse or fit the tool's schema, per arm, on compared pairs. The quality_tools gate fails when "
        "the candidate's rate is confidently more than 2 points (tool_call_margin) above the baseline's, pair by "
        "pair.",
        [Q(share("tools_invalid", "tool_answers"), "{{arm}}")],
        RATIO, w=8, min_value=0,
    )
    board.panel(
        "Refusal, empty and cut-off rates by arm",
        "Share of each arm's checked answers (compared pairs) that are refusals (the API's refusal field), "
        "empty (no text and no tool call) or cut off at their token limit (finish reason length). Shown for "
        "diagnosis; no gate reads them.",
        [Q(share("refusals", "checked"), "{{arm}} refusals"),
         Q(share("empty", "checked"), "{{arm}} empty"),
         Q(share("cut_off", "checked"), "{{arm}} cut off")],
        RATIO, w=8, min_value=0, max_value=1,
    )
    board.panel(
        "Pre-flight replay requests over the last hour",
        "Captured requests a pre-flight replay (cutover replay --migration ID) sent to both arms (replayed), "
        "left out because they name a shadow.exclude_tools tool (excluded), or could not be read (unreadable). "
        "The replay's verdict is in the audit trail and the report.",
        [Q(f"sum by (outcome) (increase(cutover_replay_requests_total{{{m}}}[{JUDGE_WINDOW}]))", "{{outcome}}")],
        COUNT, w=8, min_value=0,
    )
