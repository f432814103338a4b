"""Fixtures of the migration tests: the gateway suite's simulator and gateway factories,
and `make_stack`, which puts a gateway with migrations in front of two simulators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.conftest import make_gateway as make_gateway
from tests.gateway.conftest import make_sim as make_sim
from tests.gateway.helpers import route, routing, upstream
from tests.migration.support import ALIAS, Stack, admin_section, migration_spec

StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(make_sim: SimFactory, make_gateway: GatewayFactory) -> Iterator[StackFactory]:
    """`make_stack(migrations=[spec, ...], baseline={sim settings}, candidate={...}, ...)`.

    Defaults: one migration `m1` on alias `gpt-4` declared in the config (so it is
    created and started at start-up), admin keys configured, the memory store, a
    controller syncing every 0.1 s, retry and breaker settings that keep fallbacks
    fast and breakers out of the way.
    """
    stacks: list[Stack] = []

    def factory(
        *,
        migrations: list[dict[str, Any]] | None = None,
        baseline: dict[str, Any] | None = None,
        candidate: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
        prices: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        controller: dict[str, Any] | None = None,
        store: dict[str, Any] | None = None,
        admin: bool = True,
    ) -> Stack:
        base_sim = make_sim(**{"output_tokens": 4, **(baseline or {})})
        cand_sim = make_sim(**{"output_tokens": 4, **(candidate or {})})
        extra: dict[str, Any] = {
            "migrations": [migration_spec()] if migrations is None else migrations,
            "controller": {"sync_interval_s": 0.1, **(controller or {})},
            "store": store or {"backend": "memory"},
        }
        if admin:
            extra["admin"] = admin_section()
        gw = make_gateway(
            {"legacy": upstream(base_sim), "modern": upstream(cand_sim)},
            models or {ALIAS: route(("legacy", "old"))},
            prices=prices,
            routing=routing(**(retry or {})),
            extra=extra,
        )
        stack = Stack(gw, base_sim, cand_sim)
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.close()
