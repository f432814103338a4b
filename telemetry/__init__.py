"""Prometheus metrics and structured request logs."""
