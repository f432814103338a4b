"""cutover / Gateway: client traffic, errors, latency, overhead, tokens, cost and resilience."""

from __future__ import annotations

from board import (
    COUNT,
    GATE_ERROR_RATE,
    GATE_P99_S,
    PER_MIN,
    RATIO,
    REQ_PER_S,
    RI,
    SECONDS,
    TOKENS_PER_S,
    USD,
    Board,
    Q,
    quantiles,
    query_variable,
)


def gateway() -> Board:
    f = 'alias=~"$alias", provider=~"$provider"'
    board = Board(
        "cutover-gateway", "cutover / Gateway",
        "Client traffic through the cutover gateway: volume, errors, latency, gateway overhead, time to first "
        "token, tokens, cost, and the resilience machinery (retries, fallbacks, cool-downs).",
        ["cutover", "llm-gateway"],
        [
            query_variable("alias", "Alias", "label_values(cutover_requests_total, alias)", multi=True,
                            description="Model aliases clients ask for (the config's models)."),
            query_variable("provider", "Provider", 'label_values(cutover_requests_total{alias=~"$alias"}, provider)',
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
        quantiles("cutover_request_duration_seconds", f, "", (0.5, 0.95, 0.99)),
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
    board.panel(
        "Requests captured for replay per minute",
        "Aliases with `capture` keep a sampled share of their requests for a pre-flight replay: captured, "
        "excluded (offered tools, with exclude_tools), dropped (too many store writes in flight), failed (the "
        "store refused the write).",
        [Q(f'sum by (alias, outcome) (rate(cutover_capture_requests_total{{alias=~"$alias"}}[{RI}])) * 60',
           "{{alias}} {{outcome}}")],
        PER_MIN, w=8,
    )
    return board
