"""Tests of traffic migration: the runtime, the controller, the admin API and the CLI."""
