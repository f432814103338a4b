"""The hot path: POST /v1/chat/completions and POST /v1/embeddings as raw ASGI.

authenticate -> read and parse the body once -> resolve the alias -> dispatch over
its targets -> pass the upstream's bytes back, adding only headers (cost, provider,
overhead). FastAPI is kept off this path: its per-request machinery costs more
than everything else the gateway does here (bench/README.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson

from gateway.errors import (
    ContextLengthExceeded,
    GatewayError,
    InvalidRequest,
    NotFound,
    UpstreamPassthrough,
)
from gateway.http import (
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    header,
    new_request_id,
    read_body,
    send_error,
    send_response,
)
from gateway.requests import (
    max_output_tokens,
    parse_chat_request,
    parse_embeddings_request,
    wants_stream_usage,
)
from gateway.sse import cost_comment, finish, relay
from gateway.state import GatewayState
from metering.pricing import ZERO, Usage, format_usd, usage_from_openai
from migration.accounting import account_primary
from migration.compare import AnswerSummary, summarise_completion, summarise_stream
from migration.runtime import Decision
from migration.shadow import ShadowPair, to_micros
from planner.wiring import is_meta_provider
from providers.base import ProviderError, UpstreamReply
from routing.context import fit_oldest_first, may_overflow
from routing.table import Route, TargetRef
from telemetry.logs import log_request
from telemetry.metrics import UNKNOWN, status_class

Kind = Literal["chat", "embeddings"]
_log = logging.getLogger("cutover.gateway")


@dataclass(slots=True)
class Exchange:
    """What one request did, for its log line and metrics."""

    request_id: str
    started: float
    alias: str = UNKNOWN
    key_name: str | None = None
    stream: bool = False
    status: int = 500
    target: TargetRef | None = None
    usage: Usage | None = None
    cost: Decimal = ZERO
    waited_s: float = 0.0
    attempts: int = 0
    dropped_messages: int = 0
    error: str | None = None
    ttft_s: float | None = None
    decision: Decision | None = None
    shadow: ShadowPair | None = None
    arm_failure: ProviderError | None = None
    # The primary's answer, kept only when a shadow copy will be compared with it.
    reply_data: dict[str, Any] | None = None
    stream_events: list[bytes] = field(default_factory=list)


class ProxyEndpoint:
    def __init__(self, state: GatewayState, kind: Kind) -> None:
        self.state = state
        self.kind = kind
        self.upstream_path = "/chat/completions" if kind == "chat" else "/embeddings"
        self.parse = parse_chat_request if kind == "chat" else parse_embeddings_request
        self._in_flight = state.metrics.in_flight_gauge(kind)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        ex = Exchange(request_id=new_request_id(), started=time.perf_counter())
        base_headers: Headers = [(b"x-request-id", ex.request_id.encode())]
        in_flight = self._in_flight
        in_flight.inc()
        try:
            ex.key_name = state.keys.identify(header(scope, b"authorization"))
            body = await read_body(receive, state.config.server.max_body_bytes, header(scope, b"content-length"))
            payload = self.parse(body)
            route = self._resolve(payload["model"])
            ex.alias = route.alias
            ex.stream = self.kind == "chat" and payload.get("stream") is True
            route = self._migrate(scope, route, payload, ex)
            served = await state.dispatcher.serve(
                route, self.upstream_path, ex.request_id, ex.stream, self._preparer(route, payload, len(body), ex),
                on_failure=self._note_failure(ex), idempotency_key=_text(header(scope, b"idempotency-key")),
                client=ex.key_name,
            )
            ex.target, ex.waited_s, ex.attempts = served.target, served.waited_s, served.attempts
            if served.stream is not None:
                await self._relay_stream(receive, send, served.stream, served.payload, payload, ex, base_headers)
            else:
                assert served.reply is not None
                await self._respond(send, served.reply, served.payload, ex, base_headers)
        except GatewayError as exc:
            ex.status, ex.error = exc.status, exc.code or exc.type
            await send_error(send, exc, base_headers)
        except UpstreamPassthrough as exc:
            ex.status, ex.error = exc.status, "upstream_client_error"
            await send_response(send, exc.status, _openai_shaped(exc.body, exc.status), base_headers)
        except ClientDisconnected:
            ex.status, ex.error = 499, "client_disconnected"
        except Exception:
            _log.exception("unexpected failure", extra={"fields": {"request_id": ex.request_id}})
            ex.status, ex.error = 500, "internal_error"
            await send_error(
                send,
                GatewayError(f"The gateway failed unexpectedly; the error is logged under request id {ex.request_id}."),
                base_headers,
            )
        finally:
            in_flight.dec()
            self._account(ex)

    def _resolve(self, model: str) -> Route:
        route = self.state.routes.get(model)
        if route is None:
            nearest = self.state.routes.nearest(model)
            hint = f" Did you mean {', '.join(repr(n) for n in nearest)}?" if nearest else ""
            raise NotFound(
                f"The model '{model[:200]}' does not exist on this gateway.{hint} GET /v1/models lists the models.",
                param="model", code="model_not_found",
            )
        return route

    def _migrate(self, scope: Scope, route: Route, payload: dict[str, Any], ex: Exchange) -> Route:
        """A migrated alias: pick the arm (and maybe a shadow copy); otherwise the route as configured."""
        migrations = self.state.migration.runtime
        header_name = migrations.sticky_header(route.alias)
        if header_name is None:
            return route
        sticky = header(scope, header_name)
        decision = migrations.decide(
            route, payload, sticky.decode("latin-1") if sticky else None, ex.key_name
        )
        if decision is None:
            return route
        ex.decision = decision
        if decision.shadow_target is not None and self.kind == "chat":
            shadow = self.state.migration.shadow
            ex.shadow = shadow.launch(decision, payload, ex.stream, self.upstream_path, ex.request_id)
        return Route(route.alias, decision.targets, route.on_context_overflow)

    @staticmethod
    def _note_failure(ex: Exchange) -> Any:
        def note(target: TargetRef, error: ProviderError) -> None:
            if ex.decision is not None and target == ex.decision.arm_target:
                ex.arm_failure = error

        return note

    def _preparer(self, route: Route, payload: dict[str, Any], body_size: int, ex: Exchange) -> Any:
        """Per target: the payload to send, fitted to that target's context window."""
        state = self.state
        max_out = max_output_tokens(payload) if self.kind == "chat" else 0

        def prepare(target: TargetRef) -> dict[str, Any]:
            out = dict(payload)
            out["model"] = target.model
            if ex.stream:
                # Ask for usage even when the client did not, so cost is always known.
                out["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
            window = state.prices.context_window(target.provider, target.model)
            if self.kind != "chat" or window is None or not may_overflow(body_size, max_out, window):
                return out
            prompt = state.tokens.count_prompt(payload)
            if prompt + max_out <= window:
                return out
            if route.on_context_overflow == "truncate_oldest":
                fit = fit_oldest_first(payload["messages"], window - max_out, state.tokens.count_message)
                if fit is not None:
                    out["messages"] = fit.messages
                    ex.dropped_messages = fit.dropped
                    return out
            raise ContextLengthExceeded(
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{prompt + max_out} tokens ({prompt} in the messages, {max_out} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="messages",
            )

        return prepare

    def _cost(self, ex: Exchange, usage: Usage, known: Decimal | None = None) -> None:
        assert ex.target is not None
        ex.usage = usage
        ex.cost = known if known is not None else self.state.prices.cost(ex.target.provider, ex.target.model, usage)

    def _headers(self, ex: Exchange, base: Headers) -> Headers:
        assert ex.target is not None
        out = [
            *base,
            (b"x-cutover-provider", ex.target.provider.encode()),
            (b"x-cutover-model", ex.target.model.encode()),
            (b"x-cutover-overhead-ms", f"{self._overhead_s(ex) * 1000:.3f}".encode()),
        ]
        if ex.dropped_messages:
            out.append((b"x-cutover-context-truncated", str(ex.dropped_messages).encode()))
        return out

    @staticmethod
    def _overhead_s(ex: Exchange) -> float:
        return max(0.0, time.perf_counter() - ex.started - ex.waited_s)

    async def _respond(
        self, send: Send, reply: UpstreamReply, sent: dict[str, Any], ex: Exchange, base: Headers
    ) -> None:
        body, data = reply.body, reply.data
        usage = usage_from_openai(data.get("usage")) or self._estimate(sent, data)
        self._cost(ex, usage, reply.known_cost)
        if ex.shadow is not None:
            ex.reply_data = data
        headers = self._headers(ex, base)
        headers.append((b"x-cutover-cost-usd", format_usd(ex.cost).encode()))
        if usage.estimated:
            headers.append((b"x-cutover-usage-estimated", b"true"))
        ex.status = 200
        await send_response(send, 200, body, headers)

    def _estimate(self, sent: dict[str, Any], data: dict[str, Any]) -> Usage:
        tokens = self.state.tokens
        if self.kind == "embeddings":
            return Usage(prompt_tokens=tokens.count_input(sent.get("input")), estimated=True)
        completion = 0
        for choice in data.get("choices") or ():
            if isinstance(choice, dict):
                message = choice.get("message") or choice.get("delta") or {}
                completion += tokens.count_content(message.get("content")) if isinstance(message, dict) else 0
        return Usage(tokens.count_prompt(sent), completion, estimated=True)

    async def _relay_stream(
        self, receive: Receive, send: Send, stream: Any, sent: dict[str, Any], client_payload: dict[str, Any],
        ex: Exchange, base: Headers,
    ) -> None:
        assert ex.target is not None
        ex.status = 200
        outcome = await relay(send, receive, stream, self._headers(ex, base), wants_stream_usage(client_payload))
        if outcome.first_event_at is not None:
            ex.ttft_s = outcome.first_event_at - ex.started
            self.state.metrics.ttft_for(ex.alias, ex.target.provider).observe(ex.ttft_s)
        if ex.shadow is not None:
            ex.stream_events = outcome.events
        usage = usage_from_openai(outcome.usage) or self._estimate_stream(sent, outcome.events)
        self._cost(ex, usage, getattr(stream, "known_cost", None))
        if outcome.error is not None:
            ex.error = outcome.error.kind
            ex.status = 502  # for the arm's record: the client got 200 headers, then a broken stream
            self.state.metrics.stream_errors.labels(ex.alias, ex.target.provider).inc()
        elif outcome.client_gone:
            ex.error = "client_disconnected"
            ex.status = 499
        await finish(send, outcome, cost_comment(ex.cost, usage.estimated))

    def _estimate_stream(self, sent: dict[str, Any], events: list[bytes]) -> Usage:
        tokens = self.state.tokens
        parts: list[str] = []
        for event in events:
            try:
                chunk = orjson.loads(event)
            except orjson.JSONDecodeError:
                continue
            for choice in chunk.get("choices") or () if isinstance(chunk, dict) else ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
        return Usage(tokens.count_prompt(sent), tokens.count_text("".join(parts)), estimated=True)

    def _account(self, ex: Exchange) -> None:
        state = self.state
        m = state.metrics
        total = time.perf_counter() - ex.started
        provider = ex.target.provider if ex.target else UNKNOWN
        model = ex.target.model if ex.target else UNKNOWN
        series = m.request_series(self.kind, ex.alias, provider, model, status_class(ex.status), ex.stream)
        series.requests.inc(1)
        series.duration.observe(total)
        series.overhead.observe(max(0.0, total - ex.waited_s))
        # A meta-model's tokens and spend are already counted by its internal calls under their
        # own aliases; counting the run's sum again would double every total over aliases.
        if ex.usage is not None and ex.target is not None and not is_meta_provider(ex.target.provider):
            series.prompt_tokens.inc(ex.usage.prompt_tokens)
            series.completion_tokens.inc(ex.usage.completion_tokens)
            if ex.usage.cached_tokens:
                series.cached_tokens.inc(ex.usage.cached_tokens)
            series.cost.inc(float(ex.cost))
        if ex.dropped_messages:
            m.truncations.labels(ex.alias).inc()
        if ex.decision is not None:
            self._account_arm(ex, total)
        if state.config.server.request_log:
            fields: dict[str, Any] = {
                "request_id": ex.request_id,
                "endpoint": self.kind,
                "alias": ex.alias,
                "key": ex.key_name,
                "provider": provider,
                "model": model,
                "stream": ex.stream,
                "status": ex.status,
                "latency_ms": round(total * 1000, 3),
                "overhead_ms": round(max(0.0, total - ex.waited_s) * 1000, 3),
                "attempts": ex.attempts,
            }
            if ex.usage is not None:
                fields["prompt_tokens"] = ex.usage.prompt_tokens
                fields["completion_tokens"] = ex.usage.completion_tokens
                fields["usage_estimated"] = ex.usage.estimated
                fields["cost_usd"] = format_usd(ex.cost)
            if ex.dropped_messages:
                fields["dropped_messages"] = ex.dropped_messages
            if ex.error:
                fields["error"] = ex.error
            log_request(state.log, fields)


    def _account_arm(self, ex: Exchange, total: float) -> None:
        assert ex.decision is not None

        def summary() -> AnswerSummary:
            usage = ex.usage or Usage()
            micros = to_micros(ex.cost)
            if ex.stream:
                return summarise_stream(ex.stream_events, ex.status, total, ex.ttft_s, micros, usage.prompt_tokens,
                                        usage.completion_tokens)
            return summarise_completion(ex.reply_data or {}, ex.status, total, micros, usage.prompt_tokens,
                                        usage.completion_tokens)

        account_primary(
            self.state.migration.runtime, self.state.metrics, ex.decision, ex.target, ex.arm_failure, ex.status, total,
            ex.ttft_s, to_micros(ex.cost), ex.shadow, summary,
        )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1")[:200] if value else None


def _openai_shaped(body: bytes, status: int) -> bytes:
    """An upstream's own 4xx body when it is already OpenAI-shaped; wrapped otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return body
    message = f"The upstream provider rejected the request with status {status}."
    return InvalidRequest(message, code="upstream_rejected").to_json()
