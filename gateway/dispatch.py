"""Serve one request from an alias's targets: retries on a target, then fallback.

The decisions (what is retryable, how long to wait, whether a target is cooling
down) live in routing/; this module carries them out against providers and
turns a final failure into the gateway error the client sees.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState

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
from providers.base import (
    Provider,
    ProviderError,
    RunFailed,
    UpstreamConnectError,
    UpstreamReply,
    UpstreamRequest,
    UpstreamStatusError,
    UpstreamStream,
    UpstreamTimeout,
)
from routing.breaker import CircuitBreakers
from routing.retry import build_stop, build_wait, is_retryable
from routing.table import Route, TargetRef
from telemetry.metrics import Metrics

Prepare = Callable[[TargetRef], dict[str, Any]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Served:
    target: TargetRef
    payload: dict[str, Any]
    reply: UpstreamReply | None
    stream: UpstreamStream | None
    # Time spent waiting on upstreams and backoff: everything that is not gateway overhead.
    waited_s: float
    attempts: int


@dataclass(slots=True)
class _TargetOutcome:
    reply: UpstreamReply | None = None
    stream: UpstreamStream | None = None
    error: ProviderError | None = None
    spent_s: float = 0.0
    attempts: int = 0


def _is_client_fault(exc: ProviderError) -> bool:
    return isinstance(exc, UpstreamStatusError) and 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 429)


def final_error(exc: ProviderError | None, alias: str) -> GatewayError:
    """The error the client gets once every target has failed."""
    if isinstance(exc, UpstreamStatusError):
        if exc.status == 429:
            wait = exc.retry_after_s if exc.retry_after_s is not None else 1.0
            seconds = max(1, math.ceil(wait))
            return RateLimited(
                f"The upstream providers for '{alias}' are rate-limiting requests; retry after {seconds} s.",
                headers={"retry-after": str(seconds)},
            )
        if exc.status in (401, 403):
            return BadGateway(f"The upstream provider for '{alias}' rejected the gateway's credentials.")
        if exc.status == 408:
            return GatewayTimeout(f"The upstream provider for '{alias}' timed out.")
        if exc.status == 503:
            return ServiceUnavailable(f"Every upstream provider for '{alias}' is unavailable.")
        return BadGateway(f"The upstream provider for '{alias}' failed with status {exc.status}.")
    if isinstance(exc, RunFailed):
        return ServiceUnavailable(f"'{alias}' could not answer: {exc}")
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(f"The upstream provider for '{alias}' did not answer in time.")
    if isinstance(exc, UpstreamConnectError):
        return ServiceUnavailable(f"No upstream provider for '{alias}' could be reached.")
    return BadGateway(f"The upstream provider for '{alias}' sent an invalid response.")


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        breakers: CircuitBreakers,
        retry: RetryConfig,
        metrics: Metrics,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._providers = providers
        self._breakers = breakers
        self._wait = build_wait(retry)
        self._stop = build_stop(retry)
        self._metrics = metrics
        self._sleep = sleep

    async def serve(
        self,
        route: Route,
        path: str,
        request_id: str,
        stream: bool,
        prepare: Prepare,
        on_failure: Callable[[TargetRef, ProviderError], None] | None = None,
        idempotency_key: str | None = None,
        client: str | None = None,
    ) -> Served:
        last_error: ProviderError | None = None
        overflow: ContextLengthExceeded | None = None
        previous: TargetRef | None = None
        waited = 0.0
        attempts = 0
        for target in route.targets:
            try:
                payload = prepare(target)
            except ContextLengthExceeded as exc:
                overflow = overflow or exc
                continue
            if not self._breakers.allow(target.key):
                continue
            if previous is not None:
                self._metrics.fallbacks.labels(route.alias, previous.provider, previous.model).inc()
            previous = target
            provider = self._providers[target.provider]
            request = UpstreamRequest(path, payload, stream, request_id, idempotency_key, client)

            outcome = await self._on_target(provider, target, request)
            waited += outcome.spent_s
            attempts += outcome.attempts
            if outcome.error is None:
                return Served(target, payload, outcome.reply, outcome.stream, waited, attempts)
            if on_failure is not None:
                on_failure(target, outcome.error)
            if _is_client_fault(outcome.error):
                assert isinstance(outcome.error, UpstreamStatusError)
                raise UpstreamPassthrough(outcome.error.status, outcome.error.body)
            last_error = outcome.error
        if last_error is None:
            if overflow is not None:
                raise overflow
            raise ServiceUnavailable(
                f"Every upstream target for '{route.alias}' is cooling down after repeated failures; retry shortly.",
                headers={"retry-after": "1"},
            )
        raise final_error(last_error, route.alias)

    async def _on_target(self, provider: Provider, target: TargetRef, request: UpstreamRequest) -> _TargetOutcome:
        """Attempts on one target until success, a non-retryable failure, or the retry budget is spent.

        tenacity's strategies decide when to stop and how long to wait, but the
        loop is plain: the first attempt is the hot path, and tenacity's per-call
        set-up costs more than the rest of the dispatch.
        """
        spent = 0.0
        state: RetryCallState | None = None
        attempt = 0
        while True:
            attempt += 1
            start = time.perf_counter()
            try:
                if request.stream:
                    done = _TargetOutcome(stream=await provider.open_stream(request))
                else:
                    done = _TargetOutcome(reply=await provider.send(request))
            except ProviderError as exc:
                elapsed = time.perf_counter() - start
                spent += elapsed
                self._record_failure(target, exc, elapsed)
                if state is None:
                    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
                state.attempt_number = attempt
                state.outcome = None
                state.set_exception((type(exc), exc, exc.__traceback__))
                if not is_retryable(exc) or self._breakers.state(target.key) == "open" or self._stop(state):
                    return _TargetOutcome(error=exc, spent_s=spent, attempts=attempt)
                self._count_retry(target, exc)
                pause = self._wait(state)
                start = time.perf_counter()
                await self._sleep(pause)
                spent += time.perf_counter() - start
                continue
            elapsed = time.perf_counter() - start
            self._breakers.record_success(target.key)
            self._metrics.upstream_ok_latency(target.provider, target.model).observe(elapsed)
            done.spent_s, done.attempts = spent + elapsed, attempt
            return done

    def _record_failure(self, target: TargetRef, exc: ProviderError, elapsed: float) -> None:
        self._metrics.upstream_errors.labels(target.provider, target.model, exc.kind).inc()
        self._metrics.upstream_duration.labels(target.provider, target.model, "error").observe(elapsed)
        if _is_client_fault(exc):
            # The target answered sensibly to a bad request: it is healthy (this also
            # settles a half-open trial instead of leaving it pending).
            self._breakers.record_success(target.key)
        elif self._breakers.record_failure(target.key):
            self._metrics.cooldowns.labels(target.provider, target.model).inc()

    def _count_retry(self, target: TargetRef, exc: ProviderError) -> None:
        self._metrics.retries.labels(target.provider, target.model, exc.kind).inc()
