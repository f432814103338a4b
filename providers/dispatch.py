"""The one dispatcher: every upstream call goes through here.

Client requests and their fallbacks, shadow copies, and (through the edge) the
plan-and-execute meta-model's calls. A `Call` lists the targets to try in order,
each with the payload fitted for it; the dispatcher makes attempts on each target
until one answers, a failure says the request itself is at fault (no fallback),
or the targets run out:

    Call --dispatch--> Delivered (the answer, or the open stream)
                   \\-> Undelivered (the last failure, or none when no target could be tried)

Every attempt, retries included, leaves an immutable `AttemptRecord`. What is
retryable and how long to wait is the injected `RetryPolicy`'s call, whether a
target may be tried the injected `TargetHealth`'s (routing/ implements both); a
`Policy` says how hard to try. Usage and cost of a non-streamed answer are metered
here; a stream's are known only once it has been read, so its reader completes
the last record (`AttemptRecord.finished`).

The records of a request (these, and the edge's ClientRequest, Answer and RequestRecord) are slotted
dataclasses whose fields are all `Final`: immutable to the type checker, which `make lint` runs, and cheap to
build. A frozen dataclass pays an `object.__setattr__` call per field at construction, which cost the hot path
about 100k instructions per request (bench/hot_path.py, bench/README.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol

from metering.meter import Meter, Metered
from metering.usage import Usage
from providers.base import Provider, UpstreamReply, UpstreamRequest, UpstreamStream
from providers.errors import ProviderError, RequestUnsendable, is_client_fault, status_of
from providers.target import TargetRef
from telemetry.upstream_metrics import UpstreamMetrics

Sleep = Callable[[float], Awaitable[None]]


class TargetHealth(Protocol):
    """Circuit breakers per target key (routing.breaker.CircuitBreakers)."""

    def allow(self, key: str) -> bool: ...

    def is_open(self, key: str) -> bool: ...

    def record_success(self, key: str) -> None: ...

    def record_failure(self, key: str) -> bool: ...

    def release(self, key: str) -> None: ...


class RetryTiming(Protocol):
    """routing.retry.RetryPolicy."""

    def pause_before_retry(self, attempt: int, error: ProviderError) -> float | None: ...


@dataclass(slots=True)
class Outbound:
    """One target of a call and exactly what it is sent."""

    target: Final[TargetRef]
    payload: Final[dict[str, Any]]
    # Oldest messages dropped to fit this target's context window; the client is told.
    dropped_messages: Final[int] = 0
    # Set when the target is sent the client's own dialect (its path) rather than the call's canonical one.
    native_path: Final[str | None] = None


@dataclass(slots=True)
class Call:
    alias: Final[str]
    path: Final[str]
    outbound: Final[tuple[Outbound, ...]]
    stream: Final[bool]
    request_id: Final[str]
    # Only providers that run work of their own read these (the meta-model's idempotent runs).
    idempotency_key: Final[str | None] = None
    client: Final[str | None] = None


@dataclass(frozen=True, slots=True)
class Policy:
    """How hard to try. A client call retries, falls back and keeps each target's health; a shadow
    copy makes one attempt and leaves health and upstream metrics alone, because a copy must never
    change what clients get (its figures go on the migration's shadow ledger instead)."""

    retry: bool = True
    track_health: bool = True


CLIENT = Policy()
SHADOW = Policy(retry=False, track_health=False)


@dataclass(slots=True)
class AttemptRecord:
    target: Final[TargetRef]
    # The upstream's 2xx for an answer; providers.errors.status_of for a failure.
    status: Final[int]
    # Send to full answer; for a stream, to its opening (`finished` adds the rest).
    latency_s: Final[float]
    error: Final[str | None] = None
    ttft_s: Final[float | None] = None
    usage: Final[Usage | None] = None
    cost: Final[Decimal | None] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def finished(self, metered: Metered, ttft_s: float | None, latency_s: float, error: str | None) -> AttemptRecord:
        """A streamed attempt once its stream has been read (or broke, `error` then saying how)."""
        status = 502 if error is not None else self.status
        return AttemptRecord(self.target, status, latency_s, error, ttft_s, metered.usage, metered.cost)


@dataclass(slots=True)
class Delivered:
    outbound: Final[Outbound]
    reply: Final[UpstreamReply | None]
    stream: Final[UpstreamStream | None]
    attempts: Final[tuple[AttemptRecord, ...]]
    # Time spent waiting on upstreams and backoff: everything that is not gateway overhead.
    waited_s: Final[float]

    @property
    def target(self) -> TargetRef:
        return self.outbound.target


@dataclass(slots=True)
class Undelivered:
    attempts: Final[tuple[AttemptRecord, ...]]
    # The last failure; None when every target was skipped (cooling down) before any attempt.
    error: Final[ProviderError | None]
    waited_s: Final[float]

    @property
    def client_fault(self) -> bool:
        return self.error is not None and is_client_fault(self.error)


class Dispatcher:
    __slots__ = ("_health", "_meter", "_metrics", "_providers", "_retry", "_sleep")
    def __init__(
        self,
        providers: Mapping[str, Provider],
        health: TargetHealth,
        retry: RetryTiming,
        meter: Meter,
        metrics: UpstreamMetrics,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._providers = providers
        self._health = health
        self._retry = retry
        self._meter = meter
        self._metrics = metrics
        self._sleep = sleep

    async def dispatch(self, call: Call, policy: Policy = CLIENT) -> Delivered | Undelivered:
        attempts: list[AttemptRecord] = []
        waited = 0.0
        last_error: ProviderError | None = None
        previous: TargetRef | None = None
        for outbound in call.outbound:
            target = outbound.target
            if policy.track_health:
                if not self._health.allow(target.key):
                    continue
                if previous is not None:
                    self._metrics.fallbacks.labels(call.alias, previous.provider, previous.model).inc()
            previous = target
            provider = self._providers[target.provider]
            request = UpstreamRequest(
                outbound.native_path or call.path, outbound.payload, call.stream, call.request_id,
                call.idempotency_key, call.client,
            )
            attempt = 0
            while True:
                attempt += 1
                start = time.perf_counter()
                try:
                    if call.stream:
                        stream, reply = await provider.open_stream(request), None
                    else:
                        stream, reply = None, await provider.send(request)
                except ProviderError as exc:
                    elapsed = time.perf_counter() - start
                    waited += elapsed
                    attempts.append(AttemptRecord(target, status_of(exc), elapsed, exc.kind))
                    if policy.track_health:
                        self._note_failure(target, exc, elapsed)
                    if is_client_fault(exc):
                        return Undelivered(tuple(attempts), exc, waited)
                    pause = self._pause(target, attempt, exc, policy)
                    if pause is None:
                        last_error = exc
                        break
                    start = time.perf_counter()
                    await self._sleep(pause)
                    waited += time.perf_counter() - start
                    continue
                elapsed = time.perf_counter() - start
                waited += elapsed
                if policy.track_health:
                    self._health.record_success(target.key)
                    self._metrics.ok_latency(target.provider, target.model).observe(elapsed)
                if reply is None:
                    record = AttemptRecord(target, 200, elapsed)
                else:
                    metered = self._meter.reply(target.provider, target.model, outbound.payload, reply.data,
                                                reply.known_cost)
                    record = AttemptRecord(target, reply.status, elapsed, None, None, metered.usage, metered.cost)
                attempts.append(record)
                return Delivered(outbound, reply, stream, tuple(attempts), waited)
        return Undelivered(tuple(attempts), last_error, waited)

    def _pause(self, target: TargetRef, attempt: int, error: ProviderError, policy: Policy) -> float | None:
        if not policy.retry or self._health.is_open(target.key):
            return None
        pause = self._retry.pause_before_retry(attempt, error)
        if pause is not None:
            self._metrics.retries.labels(target.provider, target.model, error.kind).inc()
        return pause

    def _note_failure(self, target: TargetRef, error: ProviderError, elapsed: float) -> None:
        self._metrics.errors.labels(target.provider, target.model, error.kind).inc()
        self._metrics.duration.labels(target.provider, target.model, "error").observe(elapsed)
        if isinstance(error, RequestUnsendable):
            # Never sent: the target was not asked, so its health is untouched, but a half-open
            # trial this call reserved must not stay pending.
            self._health.release(target.key)
        elif is_client_fault(error):
            # The target answered sensibly to a bad request: it is healthy (this also
            # settles a half-open trial instead of leaving it pending).
            self._health.record_success(target.key)
        elif self._health.record_failure(target.key):
            self._metrics.cooldowns.labels(target.provider, target.model).inc()
