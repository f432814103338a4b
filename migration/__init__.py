"""Safe migration of an alias from a baseline target to a candidate target.

The core is pure and driven by tests without a network or a clock:
    types.py     Arm, Phase            rollout.py   the state machine: transition(state, event, plan)
    gates.py     verdicts on windows    window.py    per-arm samples of a step, mergeable across replicas
    split.py     sticky buckets         compare.py   a primary answer against its shadow copy
    quality.py   cheap checks of answers (JSON, tool calls, refusals...), quality_gates.py their tests
    sequential.py  the anytime-valid tests   verify.py    every verdict recomputed from the audit alone
    blocks.py    the recent block of a step, judged beside the whole step
    report.py    the audit -> one HTML page (report_quality, report_figures, report_charts, report_format)

Beside it, the runtime of one gateway process:
    live.py      what this process knows: states, arm choice per request, samples noted (no I/O)
    sync.py      this replica and the store: windows pushed, states and kill switches pulled
    answers.py   one answer from one target (shadow copies, noise-floor answers, replays)
    shadow.py    fire-and-forget copies through the one dispatcher
    judge.py     the LLM judge on sampled pairs: both orders, noise floor, hourly spend cap
    capture.py   a sample of an opted-in alias's requests, kept for replay
    replay.py    pre-flight: captured requests to both arms, judged by the gates, into the audit
    accounting.py  how a finished request (its frozen record) counts for its arm
    service.py   every change: state machine, compare-and-set, audit
    controller.py  the background loop: sync, lease, analysis ticks
    wiring.py    builds the above from the config
The plan itself (MigrationSpec) is part of the config: config/migration.py.
"""
