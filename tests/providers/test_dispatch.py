"""Dispatcher: retries on a target, fallback across targets, breakers, attempt records; and what the
client is told when no target answered (gateway.failures), driven through the dispatcher.

Providers are in-memory fakes that play a script of outcomes; sleeping is recorded, never done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.schema import RetryConfig
from gateway.errors import (
    BadGateway,
    ContextLengthExceeded,
    GatewayError,
    GatewayTimeout,
    RateLimited,
    ServiceUnavailable,
    UpstreamPassthrough,
)
from gateway.failures import undelivered_error
from metering.meter import Meter
from metering.pricing import PriceBook
from metering.tokens import TokenCounter
from metering.usage import UsageEstimator
from providers.base import UpstreamReply, UpstreamRequest
from providers.dispatch import SHADOW, AttemptRecord, Call, Delivered, Dispatcher, Outbound, Undelivered
from providers.errors import (
    ProviderError,
    RequestUnsendable,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from providers.target import TargetRef
from routing.breaker import CircuitBreakers
from routing.context import Overflow
from routing.retry import RetryPolicy
from telemetry.metrics import Metrics
from tests.support import upstream_status as status

ALIAS = "gpt-4"
A = TargetRef("a", "model-a")
B = TargetRef("b", "model-b")
C = TargetRef("c", "model-c")
RETRY = RetryConfig(
    max_attempts_per_target=3, initial_backoff_s=0.1, max_backoff_s=1.0, jitter_s=0.0, retry_after_cap_s=5.0
)

OK = "ok"


class FakeStream:
    async def events(self) -> AsyncIterator[bytes]:
        yield b"[DONE]"

    def abort(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class FakeProvider:
    """Plays `script` in order, one entry per call: an exception is raised, OK answers."""

    def __init__(self, name: str, script: list[ProviderError | str]) -> None:
        self.name = name
        self.script = list(script)
        self.requests: list[UpstreamRequest] = []
        self.stream = FakeStream()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _next(self, request: UpstreamRequest) -> None:
        self.requests.append(request)
        assert self.script, f"provider {self.name} called more often than scripted"
        outcome = self.script.pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        self._next(request)
        return UpstreamReply(status=200, body=b'{"id": "x"}', content_type="application/json", data={"id": "x"})

    async def open_stream(self, request: UpstreamRequest) -> FakeStream:
        self._next(request)
        return self.stream


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, scripts: dict[str, list[ProviderError | str]], *, threshold: int = 5,
                 retry: RetryConfig = RETRY) -> None:
        self.providers = {name: FakeProvider(name, script) for name, script in scripts.items()}
        self.clock = FakeClock()
        self.breakers = CircuitBreakers(threshold, 30.0, clock=self.clock)
        self.metrics = Metrics()
        self.sleeps: list[float] = []
        meter = Meter(PriceBook({}), UsageEstimator(TokenCounter()))
        self.dispatcher = Dispatcher(
            self.providers, self.breakers, RetryPolicy(retry), meter, self.metrics.upstream, sleep=self.fake_sleep
        )

    async def fake_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def dispatch(self, *targets: TargetRef, stream: bool = False, prepare: Any = None) -> Any:
        """What the pipeline's fit stage and dispatch stage do: `prepare` gives a target's payload, or the
        Overflow that keeps the request off it."""
        prepare = prepare or (lambda t: {"model": t.model})
        outbound, overflow = [], None
        for target in targets:
            prepared = prepare(target)
            if isinstance(prepared, Overflow):
                overflow = overflow or prepared
            else:
                outbound.append(Outbound(target, prepared))
        call = Call(ALIAS, "/chat/completions", tuple(outbound), stream, "req-1")
        return await self.dispatcher.dispatch(call), overflow

    async def serve(self, *targets: TargetRef, stream: bool = False, prepare: Any = None) -> Delivered:
        """Delivered, or the error the client would get raised."""
        result, overflow = await self.dispatch(*targets, stream=stream, prepare=prepare)
        if isinstance(result, Undelivered):
            raise undelivered_error(result, ALIAS, overflow)
        return result

    def calls(self, name: str) -> int:
        return len(self.providers[name].requests)

    def sample(self, metric: str, **labels: str) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(metric, labels)
        return value


async def test_first_target_success() -> None:
    h = Harness({"a": [OK], "b": []})
    served = await h.serve(A, B)
    assert served.target == A
    assert served.outbound.payload == {"model": "model-a"}
    assert served.reply is not None and served.reply.data == {"id": "x"}
    assert served.stream is None
    assert len(served.attempts) == 1
    assert h.sleeps == []
    [request] = h.providers["a"].requests
    assert request.path == "/chat/completions"
    assert request.request_id == "req-1"
    assert request.payload == {"model": "model-a"}
    assert h.sample("cutover_upstream_duration_seconds_count", provider="a", model="model-a", outcome="ok") == 1


async def test_stream_uses_open_stream() -> None:
    h = Harness({"a": [UpstreamStreamBroken("x"), OK]})
    served = await h.serve(A, stream=True)
    assert served.reply is None
    assert served.stream is h.providers["a"].stream
    assert len(served.attempts) == 2
    assert all(r.stream for r in h.providers["a"].requests)


async def test_retries_then_success() -> None:
    h = Harness({"a": [UpstreamTimeout("x"), status(500), OK]})
    served = await h.serve(A)
    assert served.target == A
    assert len(served.attempts) == 3
    assert h.sleeps == pytest.approx([0.1, 0.2])
    assert h.sample("cutover_upstream_retries_total", provider="a", model="model-a", reason="timeout") == 1
    assert h.sample("cutover_upstream_retries_total", provider="a", model="model-a", reason="http_5xx") == 1
    assert h.sample("cutover_upstream_errors_total", provider="a", model="model-a", reason="timeout") == 1
    assert h.sample("cutover_upstream_errors_total", provider="a", model="model-a", reason="http_5xx") == 1
    assert h.sample("cutover_upstream_duration_seconds_count", provider="a", model="model-a", outcome="error") == 2
    assert h.breakers.state(A.key) == "closed"


async def test_retry_after_is_honoured() -> None:
    h = Harness({"a": [status(429, retry_after=2.5), OK]})
    await h.serve(A)
    assert h.sleeps == [2.5]


async def test_fallback_in_order_after_retries_exhausted() -> None:
    h = Harness({"a": [UpstreamConnectError("x")] * 3, "b": [status(502)] * 3, "c": [OK]})
    served = await h.serve(A, B, C)
    assert served.target == C
    assert served.outbound.payload == {"model": "model-c"}
    assert len(served.attempts) == 7
    assert (h.calls("a"), h.calls("b"), h.calls("c")) == (3, 3, 1)
    assert h.sample("cutover_fallbacks_total", alias=ALIAS, provider="a", model="model-a") == 1
    assert h.sample("cutover_fallbacks_total", alias=ALIAS, provider="b", model="model-b") == 1
    assert h.sample("cutover_fallbacks_total", alias=ALIAS, provider="c", model="model-c") is None
    assert h.sample("cutover_upstream_retries_total", provider="a", model="model-a", reason="connect") == 2


async def test_cooling_target_is_skipped() -> None:
    h = Harness({"a": [], "b": [OK]}, threshold=2)
    h.breakers.record_failure(A.key)
    h.breakers.record_failure(A.key)
    served = await h.serve(A, B)
    assert served.target == B
    assert h.calls("a") == 0
    # A target never tried is not something the request "fell back" from.
    assert h.sample("cutover_fallbacks_total", alias=ALIAS, provider="a", model="model-a") is None


async def test_half_open_trial_success_closes() -> None:
    h = Harness({"a": [OK]}, threshold=1)
    h.breakers.record_failure(A.key)
    h.clock.now = 30.0
    served = await h.serve(A, B)
    assert served.target == A
    assert h.breakers.state(A.key) == "closed"


async def test_breaker_opening_stops_retries_on_that_target() -> None:
    h = Harness({"a": [status(500), status(500)], "b": [OK]}, threshold=2)
    served = await h.serve(A, B)
    assert served.target == B
    # The second failure opened the circuit, so the third attempt went elsewhere.
    assert h.calls("a") == 2
    assert h.sleeps == pytest.approx([0.1])
    assert h.breakers.state(A.key) == "open"
    assert h.sample("cutover_cooldowns_total", provider="a", model="model-a") == 1


async def test_a_request_that_cannot_be_encoded_costs_no_target_its_health() -> None:
    h = Harness({"a": [RequestUnsendable("x")] * 3, "b": [RequestUnsendable("x")]}, threshold=1)
    with pytest.raises(GatewayError) as caught:
        await h.serve(A, B)
    assert type(caught.value) is GatewayError and caught.value.status == 500
    assert (h.calls("a"), h.calls("b")) == (1, 1)
    assert h.sleeps == []
    assert h.breakers.state(A.key) == h.breakers.state(B.key) == "closed"
    # A half-open trial that was never sent is handed back for the next call.
    h.breakers.record_failure(A.key)
    h.clock.now = 30.0
    await h.dispatch(A)
    assert h.breakers.state(A.key) == "half_open"
    assert h.breakers.allow(A.key)


async def test_upstream_4xx_passed_through_without_retry_or_fallback() -> None:
    body = b'{"error": {"message": "max_tokens too large", "param": "max_tokens"}}'
    h = Harness({"a": [status(400, body=body)], "b": []}, threshold=1)
    with pytest.raises(UpstreamPassthrough) as caught:
        await h.serve(A, B)
    assert caught.value.status == 400
    assert caught.value.body == body
    assert (h.calls("a"), h.calls("b")) == (1, 0)
    assert h.sleeps == []
    # The client's bad request says nothing about the target's health.
    assert h.breakers.state(A.key) == "closed"
    assert h.sample("cutover_cooldowns_total", provider="a", model="model-a") is None
    assert h.sample("cutover_upstream_errors_total", provider="a", model="model-a", reason="http_4xx") == 1


@pytest.mark.parametrize("code", [404, 413, 422])
async def test_other_client_faults_pass_through(code: int) -> None:
    h = Harness({"a": [status(code)]})
    with pytest.raises(UpstreamPassthrough) as caught:
        await h.serve(A)
    assert caught.value.status == code


@pytest.mark.parametrize("code", [401, 403])
async def test_upstream_auth_failure_falls_back_without_retry(code: int) -> None:
    h = Harness({"a": [status(code)], "b": [OK]})
    served = await h.serve(A, B)
    assert served.target == B
    assert h.calls("a") == 1
    assert h.sleeps == []


@pytest.mark.parametrize("code", [401, 403])
async def test_upstream_auth_failure_is_bad_gateway(code: int) -> None:
    h = Harness({"a": [status(code)]})
    with pytest.raises(BadGateway) as caught:
        await h.serve(A)
    assert "credentials" in caught.value.message


async def test_all_targets_rate_limited_gives_429_with_retry_after() -> None:
    h = Harness({"a": [status(429, retry_after=1.2)] * 3, "b": [status(429)] * 3})
    with pytest.raises(RateLimited) as caught:
        await h.serve(A, B)
    err = caught.value
    assert err.status == 429
    # The last target's answer had no Retry-After: a one-second hint is given anyway.
    assert err.headers == {"retry-after": "1"}
    assert h.sleeps == pytest.approx([1.2, 1.2, 0.1, 0.2])
    assert h.sample("cutover_upstream_retries_total", provider="a", model="model-a", reason="rate_limited") == 2


async def test_retry_after_over_cap_moves_on_at_once() -> None:
    h = Harness({"a": [status(429, retry_after=60.0)]})
    with pytest.raises(RateLimited) as caught:
        await h.serve(A)
    assert h.calls("a") == 1
    assert h.sleeps == []
    assert caught.value.headers == {"retry-after": "60"}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UpstreamTimeout("x"), GatewayTimeout),
        (UpstreamConnectError("x"), ServiceUnavailable),
        (UpstreamProtocolError("x"), BadGateway),
        (UpstreamStreamBroken("x"), BadGateway),
        (status(500), BadGateway),
        (status(503), ServiceUnavailable),
        (status(408), GatewayTimeout),
    ],
)
async def test_final_error_after_retries(error: ProviderError, expected: type[GatewayError]) -> None:
    h = Harness({"a": [error] * 3})
    with pytest.raises(expected):
        await h.serve(A)
    assert h.calls("a") == 3


async def test_final_error_comes_from_last_target() -> None:
    h = Harness({"a": [UpstreamTimeout("x")] * 3, "b": [UpstreamConnectError("x")] * 3})
    with pytest.raises(ServiceUnavailable):
        await h.serve(A, B)


async def test_all_targets_cooling() -> None:
    h = Harness({"a": [], "b": []}, threshold=1)
    h.breakers.record_failure(A.key)
    h.breakers.record_failure(B.key)
    with pytest.raises(ServiceUnavailable) as caught:
        await h.serve(A, B)
    assert caught.value.headers == {"retry-after": "1"}
    assert "cooling down" in caught.value.message
    assert (h.calls("a"), h.calls("b")) == (0, 0)


WINDOW = {A: 100, B: 200}


def overflow(target: TargetRef) -> Overflow:
    return Overflow(WINDOW[target], prompt_tokens=500, max_output_tokens=10)


async def test_context_overflow_on_one_target_uses_the_next() -> None:
    def prepare(target: TargetRef) -> dict[str, Any] | Overflow:
        if target == A:
            return overflow(A)
        return {"model": target.model}

    h = Harness({"a": [], "b": [OK]})
    served = await h.serve(A, B, prepare=prepare)
    assert served.target == B
    assert h.calls("a") == 0


async def test_context_overflow_everywhere_is_reported() -> None:
    h = Harness({"a": [], "b": []})
    with pytest.raises(ContextLengthExceeded) as caught:
        await h.serve(A, B, prepare=overflow)
    # The first target's overflow is the one shown: it is the alias's primary model.
    assert "maximum context length is 100 tokens" in caught.value.message
    assert caught.value.param == "messages"


async def test_upstream_failure_beats_overflow_in_final_error() -> None:
    def prepare(target: TargetRef) -> dict[str, Any] | Overflow:
        if target == B:
            return overflow(B)
        return {"model": target.model}

    h = Harness({"a": [UpstreamTimeout("x")] * 3, "b": []})
    with pytest.raises(GatewayTimeout):
        await h.serve(A, B, prepare=prepare)


async def test_every_attempt_leaves_a_record() -> None:
    h = Harness({"a": [UpstreamTimeout("x"), status(500), status(502)], "b": [status(429), OK]})
    served = await h.serve(A, B)
    assert [(a.target, a.status, a.error) for a in served.attempts] == [
        (A, 504, "timeout"), (A, 500, "http_5xx"), (A, 502, "http_5xx"), (B, 429, "rate_limited"), (B, 200, None),
    ]
    assert all(isinstance(a, AttemptRecord) and a.latency_s >= 0 for a in served.attempts)
    last = served.attempts[-1]
    assert last.ok and last.usage is not None and last.cost is not None


async def test_undelivered_keeps_every_attempt_and_the_last_error() -> None:
    h = Harness({"a": [UpstreamConnectError("x")] * 3})
    result, _ = await h.dispatch(A)
    assert isinstance(result, Undelivered)
    assert [a.status for a in result.attempts] == [503, 503, 503]
    assert isinstance(result.error, UpstreamConnectError) and not result.client_fault


async def test_shadow_policy_makes_one_attempt_and_leaves_health_alone() -> None:
    h = Harness({"a": [status(500)]}, threshold=1)
    result = await h.dispatcher.dispatch(
        Call(ALIAS, "/chat/completions", (Outbound(A, {"model": "model-a"}),), False, "req-1-shadow"), SHADOW
    )
    assert isinstance(result, Undelivered)
    assert h.calls("a") == 1 and h.sleeps == []
    assert h.breakers.state(A.key) == "closed"
    assert h.sample("cutover_upstream_errors_total", provider="a", model="model-a", reason="http_5xx") is None
