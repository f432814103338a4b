"""Alias routing: which targets serve an alias, in which order, and how hard each is tried.

    table.py    alias -> route (ordered targets; the first healthy one serves, the rest are fallbacks)
    context.py  each target's payload, fitted to its context window
    retry.py    when an attempt is retried on the same target, and after how long (RetryPolicy)
    breaker.py  per-target circuit breakers (cool-downs)
Decisions only: providers.dispatch carries them out, with the policy and breakers injected.
"""
