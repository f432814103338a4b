"""The only code that talks to upstreams.

    dispatch.py       the one dispatcher: attempts over a call's targets, an AttemptRecord for each
    errors.py         how a call fails, and the one mapping from a failure to an HTTP status
    base.py           the provider protocol: the provider dialect adapter seam
    target.py         TargetRef: a provider and the upstream model it serves
    openai_compat.py  any OpenAI-compatible upstream, over http1.py's keep-alive pool
    simulated.py      the bundled simulator behind a loopback socket
    registry.py       the configured providers, started and stopped together
"""
