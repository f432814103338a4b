"""The plan-and-execute meta-model's pure core: plans, budgets, and the DAG scheduler.

A client asks for model "plan-and-execute". A strong planner model writes a task graph
once; cheap executor models run the tasks, in parallel where the graph allows; a joiner
decides to finish or re-plan; the client gets one chat completion with summed usage.

    plan.py       the plan's JSON schema, pulling JSON out of a reply, validating it into a
                  frozen `Plan` (errors fit to send back for one repair), re-plan loop guards,
                  a cache key for templated goals
    budget.py     hard per-request caps (`Caps`) and the running account (`Budget`) that every
                  LLM call is checked against; the named stop reasons
    scheduler.py  `run_plan`: event-driven asyncio execution of a `Plan` under concurrency,
                  per-key limits, timeouts, retries, the budget and a deadline; `render_inputs`

Nothing here talks to an upstream: the provider that wires these together injects
`run_task`, the clock and `sleep`, so every decision can be tested with fakes.
"""
