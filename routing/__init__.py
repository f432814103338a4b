"""Pure routing decisions: alias -> targets, circuit breakers, retry timing, context fitting."""
