"""Prometheus metrics, one group per subsystem over one registry (metrics.py), and structured JSON logs."""
