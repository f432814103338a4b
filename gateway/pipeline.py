"""One POST endpoint of the proxy, stage by stage, as raw ASGI.

    authenticate   the client's key, compared in constant time           gateway.auth
    read           the body, under the size limit                        gateway.http
    parse          the endpoint's dialect -> a canonical ClientRequest   gateway.dialects
    resume         a Responses turn after the conversation it continues  gateway.conversations
    resolve alias  the model name -> a route (ordered targets)           gateway.aliases, routing.table
    capture        a sample of an opted-in alias's requests, for replay   migration.capture
    decide arm     a migrated alias: which arm serves, any shadow copy   migration.live, migration.shadow
    fit context    each target's payload, fitted to its context window   routing.context
    choose wire    the client's own dialect where a target speaks it       routing.wire
    dispatch       attempts over the targets: retries, fallback          providers.dispatch
    relay          the answer back in the client's dialect               gateway.relay
    record         one immutable RequestRecord: metrics, log, migration gateway.record

Each stage takes what the ones before it returned and returns its own result;
none calls back into another. A failure at any stage is one `GatewayError` (or an
upstream's own 4xx about the request), answered in the client's dialect; the
record stage runs whatever happened. FastAPI stays off this path: its
per-request machinery costs more than everything else the gateway does here
(bench/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.aliases import resolve
from gateway.auth import KeyRing
from gateway.conversations import Conversations
from gateway.dialects.base import ClientRequest, InboundDialect
from gateway.errors import GatewayError, ServiceUnavailable, UpstreamPassthrough
from gateway.failures import undelivered_error, unhonoured_error
from gateway.http import (
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    header,
    new_request_id,
    read_body,
    send_response,
)
from gateway.record import ArmChoice, Recorder, RequestRecord
from gateway.relay import Answer, relay_stream, respond
from metering.meter import Meter
from metering.pricing import ZERO
from migration.capture import Capture
from migration.live import LiveMigrations
from migration.shadow import ShadowRunner
from providers.dispatch import Call, Delivered, Dispatcher, Undelivered
from routing.context import ContextFitter, Fitted
from routing.table import Route, RouteTable
from routing.wire import choose_wire
from telemetry.metrics import UNKNOWN
from telemetry.request_metrics import RequestMetrics

_log = logging.getLogger("cutover.gateway")


# Above this, an exact token count (about 1.5 ms) runs on a worker thread; below, the hop would cost more.
COUNT_OFF_LOOP_BYTES = 32 * 1024


class Pipeline:
    __slots__ = (
        "_capture",
        "_conversations",
        "_dispatcher",
        "_fitter",
        "_in_flight",
        "_keys",
        "_max_body_bytes",
        "_meter",
        "_migrations",
        "_recorder",
        "_routes",
        "_shadow",
        "_speaks",
        "_state_wait_s",
        "dialect",
    )

    def __init__(
        self,
        dialect: InboundDialect,
        *,
        keys: KeyRing,
        max_body_bytes: int,
        routes: RouteTable,
        migrations: LiveMigrations,
        state_wait_s: float,
        shadow: ShadowRunner,
        capture: Capture,
        fitter: ContextFitter,
        speaks: Callable[[str, str], bool],
        conversations: Conversations,
        dispatcher: Dispatcher,
        meter: Meter,
        recorder: Recorder,
        metrics: RequestMetrics,
    ) -> None:
        self.dialect = dialect
        self._keys = keys
        self._max_body_bytes = max_body_bytes
        self._routes = routes
        self._migrations = migrations
        self._state_wait_s = state_wait_s
        self._shadow = shadow
        self._capture = capture
        self._fitter = fitter
        self._speaks = speaks
        self._conversations = conversations
        self._dispatcher = dispatcher
        self._meter = meter
        self._recorder = recorder
        self._in_flight = metrics.in_flight_gauge(dialect.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        base: Headers = [(b"x-request-id", request_id.encode())]
        dialect = self.dialect
        client: str | None = None
        request: ClientRequest | None = None
        route: Route | None = None
        arm: ArmChoice | None = None
        dispatched: Delivered | Undelivered | None = None
        answer: Answer | None = None
        failed: tuple[int, str] | None = None
        self._in_flight.inc()
        try:
            client = self._keys.identify(header(scope, b"authorization"))
            body = await read_body(scope, receive, self._max_body_bytes)
            request = dialect.parse(body)
            if request.turn is not None:
                request = await self._conversations.resume(request)
            route = resolve(self._routes, request.model)
            if not self._migrations.synced and not await self._migrations.until_synced(self._state_wait_s):
                raise ServiceUnavailable(
                    "The gateway has not read the migration state yet (the store cannot be reached); retry shortly.",
                    code="migration_state_unavailable", headers={"retry-after": "1"},
                )
            # A copy (shadow, or a captured request replayed later) goes as the canonical request: one needing
            # a native upstream (built-in tools...) is never copied.
            copyable = dialect.shadowable and not (request.native is not None and request.native.native_only)
            if copyable:
                self._capture.offer(route.alias, request.payload, request.stream, dialect.upstream_path)
            route, arm = self._decide_arm(scope, route, request, client, request_id, copyable)
            fitted = await self._fit(route, request, dialect)
            outbound, unhonoured = choose_wire(fitted.outbound, request.native, self._speaks)
            if not outbound and unhonoured is not None:
                raise unhonoured_error(unhonoured, dialect.endpoint)
            dispatched = await self._dispatcher.dispatch(Call(
                route.alias, dialect.upstream_path, outbound, request.stream, request_id,
                _text(header(scope, b"idempotency-key")), client,
            ))
            if isinstance(dispatched, Undelivered):
                raise undelivered_error(dispatched, route.alias, fitted.overflow)
            keep = arm is not None and arm.pair is not None
            if dispatched.stream is not None:
                answer = await relay_stream(
                    send, receive, dialect, request, dispatched, self._meter, started, base, keep
                )
            else:
                answer = await respond(send, dialect, request, dispatched, started, base, keep)
        except GatewayError as exc:
            failed = (exc.status, exc.code or exc.type)
            extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await send_response(send, exc.status, dialect.error_body(exc), base + extra)
        except UpstreamPassthrough as exc:
            failed = (exc.status, "upstream_client_error")
            await send_response(send, exc.status, dialect.upstream_error_body(exc.status, exc.body), base)
        except ClientDisconnected:
            failed = (499, "client_disconnected")
        except Exception:
            _log.exception("unexpected failure", extra={"fields": {"request_id": request_id}})
            failed = (500, "internal_error")
            error = GatewayError(
                f"The gateway failed unexpectedly; the error is logged under request id {request_id}."
            )
            await send_response(send, error.status, dialect.error_body(error), base)
        finally:
            self._in_flight.dec()
            self._recorder.record(_record(
                request_id, dialect.endpoint, started, client, request, route, arm, dispatched, answer, failed
            ))

    async def _fit(self, route: Route, request: ClientRequest, dialect: InboundDialect) -> Fitted:
        args = (route, request.payload, request.stream, dialect.fits_context, request.body_size,
                request.max_output_tokens)
        if request.body_size > COUNT_OFF_LOOP_BYTES and self._fitter.counts(
            route, dialect.fits_context, request.body_size, request.max_output_tokens
        ):
            # Counting a big prompt takes milliseconds (about 45 ns a byte) and tiktoken releases the GIL
            # while it encodes: on a worker thread, small requests keep flowing meanwhile (bench/big_prompts.py).
            return await asyncio.to_thread(self._fitter.fit, *args)
        return self._fitter.fit(*args)

    def _decide_arm(
        self, scope: Scope, route: Route, request: ClientRequest, client: str, request_id: str, copyable: bool
    ) -> tuple[Route, ArmChoice | None]:
        """A migrated alias: the arm's targets (and maybe a shadow copy); otherwise the route as configured."""
        sticky_header = self._migrations.sticky_header(route.alias)
        if sticky_header is None:
            return route, None
        sticky = header(scope, sticky_header)
        decision = self._migrations.decide(
            route, request.payload, sticky.decode("latin-1") if sticky else None, client
        )
        if decision is None:
            return route, None
        pair = None
        if decision.shadow_target is not None and copyable:
            pair = self._shadow.launch(
                decision, route.alias, request.payload, request.stream, self.dialect.upstream_path, request_id
            )
        return Route(route.alias, decision.targets, route.on_context_overflow), ArmChoice(decision, pair)


def _record(
    request_id: str, endpoint: str, started: float, client: str | None, request: ClientRequest | None,
    route: Route | None, arm: ArmChoice | None, dispatched: Delivered | Undelivered | None, answer: Answer | None,
    failed: tuple[int, str] | None,
) -> RequestRecord:
    latency = time.perf_counter() - started
    alias = route.alias if route is not None else UNKNOWN
    stream = request.stream if request is not None else False
    if answer is not None:
        assert isinstance(dispatched, Delivered)
        final, attempts, served = answer.attempt, dispatched.attempts, dispatched.outbound
        if final is not attempts[-1]:
            attempts = (*attempts[:-1], final)  # a stream's attempt, completed by the relay
        # Positional: a NamedTuple built from keywords costs a dict per request.
        return RequestRecord(
            request_id, endpoint, alias, client, stream, answer.status, answer.error, served.target, attempts,
            final.usage, final.cost if final.cost is not None else ZERO, latency,
            max(0.0, latency - dispatched.waited_s), answer.ttft_s, served.dropped_messages, answer.stream_broke,
            arm, answer.data, answer.events,
        )
    status, error = failed if failed is not None else (500, "internal_error")
    attempts = dispatched.attempts if dispatched is not None else ()
    waited = dispatched.waited_s if dispatched is not None else 0.0
    served_by = dispatched.target if isinstance(dispatched, Delivered) else None
    return RequestRecord(
        request_id, endpoint, alias, client, stream, status, error, served_by, attempts, None, ZERO, latency,
        max(0.0, latency - waited), None, 0, False, arm, None, (),
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1")[:200] if value else None
