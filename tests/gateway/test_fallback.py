"""Retries on one target, Retry-After, fallback to the next target, and circuit-breaker cool-downs."""

from __future__ import annotations

import time

import openai
import pytest

from simulator import SimulationSettings
from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import (
    HELLO,
    always,
    metric,
    recorded_outcomes,
    route,
    routing,
    scrape,
    sdk,
    upstream,
)
from tests.support import BackgroundGateway, wait_for


def served_by(gw: BackgroundGateway, *, stream: bool = False) -> str:
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO, stream=stream)
        if stream:
            chunks = list(raw.parse())
            assert chunks and chunks[-1].choices[0].finish_reason == "stop"
        else:
            assert raw.parse().choices[0].message.content
    return raw.headers["x-cutover-provider"]


def test_server_error_then_ok_succeeds_after_one_retry(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["server_error", "ok"])
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))

    assert served_by(gw) == "sim"
    assert recorded_outcomes(sim) == ["server_error", "ok"]
    # Both attempts carry the same request id, so upstream logs can tie them together.
    assert sim.requests[0].request_id == sim.requests[1].request_id
    text = scrape(gw.root_url)
    assert metric(text, "cutover_upstream_retries_total", provider="sim", model="m", reason="http_5xx") == 1
    assert metric(text, "cutover_fallbacks_total") == 0


def test_retry_on_same_target_also_covers_streams(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["unavailable", "ok"])
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))
    assert served_by(gw, stream=True) == "sim"
    assert recorded_outcomes(sim) == ["unavailable", "ok"]


def test_retry_after_is_honoured(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["rate_limit", "ok"], retry_after_s=0.3)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))

    started = time.perf_counter()
    assert served_by(gw) == "sim"
    elapsed = time.perf_counter() - started

    assert recorded_outcomes(sim) == ["rate_limit", "ok"]
    # The configured backoff is 0.01 s; only the upstream's Retry-After explains a 0.3 s wait.
    assert elapsed >= 0.3
    first, second = sim.requests
    assert second.started_at - first.started_at >= 0.29  # wall clock vs monotonic sleep: allow clock granularity


def test_retry_after_beyond_cap_moves_to_next_target(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    slow = make_sim(**always("rate_limit", retry_after_s=30))
    spare = make_sim()
    gw = make_gateway(
        {"slow": upstream(slow), "spare": upstream(spare)},
        {"chat": route(("slow", "m"), ("spare", "m"))},
        routing=routing(attempts=3, retry_after_cap_s=1.0),
    )
    started = time.perf_counter()
    assert served_by(gw) == "spare"
    # Not held for the 30 s the first upstream asked for, and not retried there either.
    assert time.perf_counter() - started < 10
    assert recorded_outcomes(slow) == ["rate_limit"]
    assert recorded_outcomes(spare) == ["ok"]


def test_failing_first_target_falls_back_to_second(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    primary = make_sim(**always("server_error"))
    backup = make_sim()
    gw = make_gateway(
        {"primary": upstream(primary), "backup": upstream(backup)},
        {"chat": route(("primary", "big-model"), ("backup", "other-model"))},
        routing=routing(attempts=2),
    )
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    assert raw.headers["x-cutover-provider"] == "backup"
    assert raw.headers["x-cutover-model"] == "other-model"
    assert recorded_outcomes(primary) == ["server_error", "server_error"]
    assert recorded_outcomes(backup) == ["ok"]
    assert backup.requests[0].body["model"] == "other-model"

    text = scrape(gw.root_url)
    assert metric(text, "cutover_fallbacks_total", alias="chat", provider="primary", model="big-model") == 1
    wait_for(
        lambda: metric(scrape(gw.root_url), "cutover_requests_total", provider="backup", status_class="2xx") == 1,
        timeout=10, what="the request to be counted against the backup",
    )


def test_stream_falls_back_when_first_target_fails(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    primary = make_sim(**always("unavailable"))
    backup = make_sim()
    gw = make_gateway(
        {"primary": upstream(primary), "backup": upstream(backup)},
        {"chat": route(("primary", "m"), ("backup", "m"))},
        routing=routing(attempts=1),
    )
    assert served_by(gw, stream=True) == "backup"
    assert recorded_outcomes(primary) == ["unavailable"]


def test_cool_down_skips_failing_target_then_tries_it_again(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    primary = make_sim(**always("server_error"))
    backup = make_sim()
    gw = make_gateway(
        {"primary": upstream(primary), "backup": upstream(backup)},
        {"chat": route(("primary", "m"), ("backup", "m"))},
        # 2 s is far longer than a handful of loopback requests, even on a loaded machine.
        routing=routing(attempts=3, failure_threshold=2, cooldown_s=2.0),
    )
    assert gw.app is not None
    breakers = gw.app.parts.breakers

    def cooldowns() -> float:
        return metric(scrape(gw.root_url), "cutover_cooldowns_total", provider="primary", model="m")

    # Two consecutive failures reach the threshold: the circuit opens and the
    # remaining retry budget on that target is abandoned.
    assert served_by(gw) == "backup"
    assert len(primary.requests) == 2
    assert breakers.state("primary/m") == "open"
    assert cooldowns() == 1

    for _ in range(3):
        assert served_by(gw) == "backup"
    assert breakers.state("primary/m") == "open", "machine too slow: cool-down ended before the checks"
    assert len(primary.requests) == 2, "a cooling target must receive no requests"
    assert len(backup.requests) == 4

    # After the cool-down one trial request goes to the target; it fails again and re-opens.
    wait_for(lambda: breakers.state("primary/m") == "half_open", timeout=15, what="cool-down to end")
    assert served_by(gw) == "backup"
    assert len(primary.requests) == 3
    assert cooldowns() == 2

    # Once the target recovers, the next trial succeeds and it serves again.
    primary.set_settings(SimulationSettings())
    wait_for(lambda: breakers.state("primary/m") == "half_open", timeout=15, what="second cool-down to end")
    assert served_by(gw) == "primary"
    assert breakers.state("primary/m") == "closed"
    assert served_by(gw) == "primary"
    assert recorded_outcomes(primary)[-2:] == ["ok", "ok"]


def test_non_retryable_upstream_error_is_not_retried_or_fallen_back(
    make_sim: SimFactory, make_gateway: GatewayFactory
) -> None:
    first = make_sim()
    second = make_sim()
    gw = make_gateway(
        {"first": upstream(first), "second": upstream(second)},
        {"embed": route(("first", "e"), ("second", "e"))},
        routing=routing(attempts=3),
    )
    with sdk(gw) as client, pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="embed", input="hi", encoding_format="hex")  # type: ignore[arg-type]
    assert caught.value.param == "encoding_format"
    # The client's own mistake would fail the same way anywhere: one call, no fallback.
    assert recorded_outcomes(first) == ["invalid_request"]
    assert second.requests == []
