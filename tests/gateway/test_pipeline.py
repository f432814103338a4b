"""The pipeline's stages over raw ASGI, with a scripted dispatcher: each stage's failure answered in the
client's dialect, and one record of every request, whatever stage it ended in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from config.schema import ModelPrice, ModelRoute
from gateway.auth import KeyRing, hash_key
from gateway.conversations import Conversations
from gateway.dialects.chat import ChatCompletions
from gateway.pipeline import Pipeline
from gateway.record import RequestRecord
from metering.meter import Meter
from metering.pricing import PriceBook
from metering.tokens import TokenCounter
from metering.usage import Usage, UsageEstimator
from migration.capture import Capture
from migration.live import LiveMigrations
from providers.base import UpstreamReply
from providers.dispatch import AttemptRecord, Call, Delivered, Undelivered
from providers.errors import UpstreamStatusError, UpstreamStreamBroken
from providers.target import TargetRef
from routing.context import ContextFitter
from routing.table import RouteTable
from store.memory import MemoryStore
from telemetry.metrics import Metrics

KEY = "sk-pipeline-test"
TARGET = TargetRef("up", "real-model")
PRICES = PriceBook({"real-model": ModelPrice(input=Decimal(1), output=Decimal(2))})
ROUTE = ModelRoute.model_validate({"targets": [{"provider": "up", "model": "real-model"}]})
REPLY = {"id": "c1", "choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


class ScriptedDispatcher:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[Call] = []

    async def dispatch(self, call: Call) -> Delivered | Undelivered:
        self.calls.append(call)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result(call) if callable(self.result) else self.result


class Records:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def record(self, record: RequestRecord) -> None:
        self.records.append(record)


class Stream:
    def __init__(self, batches: list[list[bytes]], broken: bool = False) -> None:
        self._batches = batches
        self._broken = broken

    async def batches(self) -> AsyncIterator[list[bytes]]:
        for batch in self._batches:
            yield batch
        if self._broken:
            raise UpstreamStreamBroken("upstream closed")

    def abort(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def delivered(call: Call) -> Delivered:
    out = call.outbound[0]
    if call.stream:
        return Delivered(out, None, Stream(STREAM), (AttemptRecord(TARGET, 200, 0.01),), 0.01)
    reply = UpstreamReply(200, orjson.dumps(REPLY), "application/json", data=REPLY)
    attempt = AttemptRecord(TARGET, 200, 0.01, usage=Usage(7, 3), cost=Decimal("0.000013"))
    return Delivered(out, reply, None, (AttemptRecord(TARGET, 502, 0.02, "http_5xx"), attempt), 0.03)


STREAM = [
    [b'{"choices":[{"index":0,"delta":{"content":"Hel"}}]}', b'{"choices":[{"index":0,"delta":{"content":"lo"}}]}'],
    [b'{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}', b"[DONE]"],
]


def pipeline(dispatcher: ScriptedDispatcher, records: Records, synced: bool = True) -> Pipeline:
    metrics = Metrics()
    tokens = TokenCounter()
    live = LiveMigrations(metrics.migration)
    if synced:
        live.mark_synced()
    return Pipeline(
        ChatCompletions(),
        keys=KeyRing([("team", bytes.fromhex(hash_key(KEY).partition(":")[2]))], open_access=False),
        max_body_bytes=10_000,
        routes=RouteTable({"gpt-4": ROUTE}),
        migrations=live,
        state_wait_s=0.2,
        shadow=None,  # type: ignore[arg-type]  # no migration: never asked
        capture=Capture(MemoryStore(), {}, metrics.migration),
        fitter=ContextFitter(PRICES.context_window, tokens),
        speaks=lambda provider, dialect: dialect == "chat",
        conversations=Conversations(MemoryStore(), 3600.0, 1 << 20),
        dispatcher=dispatcher,  # type: ignore[arg-type]
        meter=Meter(PRICES, UsageEstimator(tokens)),
        recorder=records,  # type: ignore[arg-type]
        metrics=metrics.requests,
    )


async def call(app: Pipeline, body: bytes, key: str | None = KEY) -> tuple[int, dict[bytes, bytes], bytes]:
    headers = [(b"content-length", str(len(body)).encode())]
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    delivered_body = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered_body
        if not delivered_body:
            delivered_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def chat(**extra: Any) -> bytes:
    return orjson.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], **extra})


async def test_an_answer_is_relayed_and_recorded_with_every_attempt() -> None:
    dispatcher, records = ScriptedDispatcher(delivered), Records()
    status, headers, body = await call(pipeline(dispatcher, records), chat())
    assert status == 200 and orjson.loads(body) == REPLY
    assert headers[b"x-cutover-provider"] == b"up" and headers[b"x-cutover-cost-usd"] == b"0.000013"
    [sent] = dispatcher.calls
    assert (sent.alias, sent.path, sent.stream, sent.client) == ("gpt-4", "/chat/completions", False, "team")
    assert [(o.target, o.payload["model"]) for o in sent.outbound] == [(TARGET, "real-model")]
    [record] = records.records
    assert (record.status, record.error, record.alias, record.served_by, record.client) == (
        200, None, "gpt-4", TARGET, "team")
    assert [a.status for a in record.attempts] == [502, 200]
    assert record.usage == Usage(7, 3) and record.cost == Decimal("0.000013")
    assert 0 <= record.overhead_s <= record.latency_s


async def test_a_stream_is_relayed_and_its_last_attempt_completed() -> None:
    dispatcher, records = ScriptedDispatcher(delivered), Records()
    status, headers, body = await call(pipeline(dispatcher, records), chat(stream=True))
    assert status == 200 and headers[b"content-type"].startswith(b"text/event-stream")
    # The usage chunk the gateway asked for on the client's behalf is not relayed; the cost comment is.
    assert body == (b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
                    b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
                    b": x-cutover-cost-usd 0.000011\n\ndata: [DONE]\n\n")
    assert dispatcher.calls[0].outbound[0].payload["stream_options"] == {"include_usage": True}
    [record] = records.records
    assert record.status == 200 and record.stream and record.ttft_s is not None
    [attempt] = record.attempts
    assert attempt.usage == Usage(7, 2) and attempt.cost == Decimal("0.000011") and attempt.ttft_s is not None


async def test_a_stream_that_breaks_ends_with_an_error_frame_and_counts_as_a_failure() -> None:
    def broken(call: Call) -> Delivered:
        return Delivered(call.outbound[0], None, Stream(STREAM[:1], broken=True),
                         (AttemptRecord(TARGET, 200, 0.01),), 0.01)

    records = Records()
    status, _, body = await call(pipeline(ScriptedDispatcher(broken), records), chat(stream=True))
    assert status == 200 and b"[DONE]" not in body and b'"code":"stream_broken"' in body
    [record] = records.records
    assert (record.status, record.error, record.stream_broke) == (502, "stream_broken", True)
    assert record.attempts[-1].status == 502


@pytest.mark.parametrize(
    ("body", "key", "status", "code", "error"),
    [
        (chat(), None, 401, "invalid_api_key", "invalid_api_key"),
        (chat(), "sk-wrong", 401, "invalid_api_key", "invalid_api_key"),
        (b"{not json", KEY, 400, None, "invalid_request_error"),
        (chat(model="gpt-5"), KEY, 404, "model_not_found", "model_not_found"),
    ],
)
async def test_a_stage_that_refuses_is_answered_in_the_dialect_and_recorded(
    body: bytes, key: str | None, status: int, code: str | None, error: str
) -> None:
    dispatcher, records = ScriptedDispatcher(delivered), Records()
    got, headers, answer = await call(pipeline(dispatcher, records), body, key)
    assert got == status and set(orjson.loads(answer)["error"]) == {"message", "type", "param", "code"}
    assert orjson.loads(answer)["error"]["code"] == code and headers[b"x-request-id"].startswith(b"req_")
    assert dispatcher.calls == []
    [record] = records.records
    assert (record.status, record.error, record.attempts, record.served_by) == (status, error, (), None)


async def test_no_target_answering_is_a_clear_error_with_the_attempts_recorded() -> None:
    failed = Undelivered((AttemptRecord(TARGET, 503, 0.02, "http_5xx"),), UpstreamStatusError(503, b""), 0.02)
    records = Records()
    status, _, body = await call(pipeline(ScriptedDispatcher(failed), records), chat())
    assert status == 503 and orjson.loads(body)["error"]["type"] == "service_unavailable"
    [record] = records.records
    assert (record.status, record.alias, len(record.attempts), record.served_by) == (503, "gpt-4", 1, None)


async def test_an_upstream_refusal_of_the_request_goes_back_as_it_was_sent() -> None:
    upstream = b'{"error": {"message": "max_tokens too large", "type": "invalid_request_error"}}'
    refused = Undelivered((AttemptRecord(TARGET, 400, 0.01, "http_4xx"),), UpstreamStatusError(400, upstream), 0.01)
    records = Records()
    status, _, body = await call(pipeline(ScriptedDispatcher(refused), records), chat())
    assert (status, body) == (400, upstream)
    assert records.records[0].error == "upstream_client_error"


async def test_an_unexpected_failure_is_a_500_naming_the_request_id_and_still_recorded() -> None:
    records = Records()
    status, headers, body = await call(pipeline(ScriptedDispatcher(RuntimeError("bug")), records), chat())
    assert status == 500 and headers[b"x-request-id"].decode() in orjson.loads(body)["error"]["message"]
    assert (records.records[0].status, records.records[0].error) == (500, "internal_error")


async def test_nothing_is_routed_before_the_migration_state_has_been_read() -> None:
    # A restarted process that cannot read the store does not know which arm a sticky user is on.
    dispatcher, records = ScriptedDispatcher(delivered), Records()
    status, headers, body = await call(pipeline(dispatcher, records, synced=False), chat())
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert orjson.loads(body)["error"]["code"] == "migration_state_unavailable"
    assert dispatcher.calls == [] and records.records[0].status == 503


async def test_a_request_waits_for_the_first_read_of_the_migration_state() -> None:
    dispatcher, records = ScriptedDispatcher(delivered), Records()
    app = pipeline(dispatcher, records, synced=False)
    answered = asyncio.ensure_future(call(app, chat()))
    await asyncio.sleep(0)  # one turn of the loop: however far it got, it cannot finish without the state
    assert not answered.done()
    app._migrations.mark_synced()
    status, _, _ = await answered
    assert status == 200 and len(dispatcher.calls) == 1
