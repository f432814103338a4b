"""Safe migration of an alias from a baseline target to a candidate target.

The core is pure and driven by tests without a network or a clock:
    types.py     Arm, Phase            rollout.py   the state machine: transition(state, event, plan)
    gates.py     verdicts on windows    window.py    per-arm samples of a step, mergeable across replicas
    split.py     sticky buckets         compare.py   a primary answer against its shadow copy

Beside it, the runtime of one gateway process:
    live.py      what this process knows: states, arm choice per request, samples noted (no I/O)
    sync.py      this replica and the store: windows pushed, states and kill switches pulled
    shadow.py    fire-and-forget copies through the one dispatcher
    accounting.py  how a finished request (its frozen record) counts for its arm
    service.py   every change: state machine, compare-and-set, audit
    controller.py  the background loop: sync, lease, analysis ticks
    wiring.py    builds the above from the config
The plan itself (MigrationSpec) is part of the config: config/migration.py.
"""
