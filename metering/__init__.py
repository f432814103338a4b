"""What a call cost.

    usage.py    token usage: as the upstream reported it, or estimated (the one UsageEstimator)
    tokens.py   tiktoken counting, offline
    pricing.py  per-million-token prices from the config, exact Decimal USD
    meter.py    usage and price of one answered call, in one step
"""
