"""A sample of an alias's live requests, kept for a pre-flight replay (migration.replay).

Opt-in per alias (`models.<alias>.capture`): a sampled share of the alias's requests is written to the
store (kind "capture", one list per alias), each kept for `retention_s`, only the newest `max_requests`.
What is kept is the canonical request the gateway would send upstream (the same body a shadow copy
gets), the endpoint path and whether it streamed; never the answer. Requests offering tools are left
out with `exclude_tools`, and requests over 1 MiB always.

On the request path this is one dict lookup for an alias without capture. A sampled request is
serialised there and written off the path; writes in flight are bounded, and one that finds no room is
dropped and counted, never queued.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from config.schema import CaptureSettings
from store.base import Store, StoreUnavailable
from telemetry.migration_metrics import MigrationMetrics

_log = logging.getLogger("cutover.migration")

MAX_WRITES_IN_FLIGHT = 8
# A bigger request is not kept: the store holds up to max_requests of them per alias.
MAX_RECORD_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CapturedRequest:
    at: float
    path: str
    stream: bool
    payload: Mapping[str, Any]

    @classmethod
    def read(cls, record: bytes) -> CapturedRequest | None:
        """None for a record this version cannot read (it is skipped, not fatal)."""
        try:
            data = orjson.loads(record)
            payload, path = data["payload"], data["path"]
            if not isinstance(payload, dict) or not isinstance(path, str):
                return None
            return cls(float(data["at"]), path, bool(data["stream"]), payload)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class Capture:
    def __init__(
        self, store: Store, settings: Mapping[str, CaptureSettings], metrics: MigrationMetrics,
        rng: Callable[[], float] = random.random, wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = dict(settings)
        self._metrics = metrics
        self._rng = rng
        self._wall = wall
        self._writes: set[asyncio.Task[None]] = set()

    def offer(self, alias: str, payload: Mapping[str, Any], stream: bool, path: str) -> None:
        settings = self._settings.get(alias)
        if settings is None or self._rng() >= settings.sample:
            return
        if settings.exclude_tools and payload.get("tools"):
            self._metrics.captured.labels(alias, "excluded").inc()
            return
        if len(self._writes) >= MAX_WRITES_IN_FLIGHT:
            self._metrics.captured.labels(alias, "dropped").inc()
            return
        try:
            record = orjson.dumps({"at": self._wall(), "path": path, "stream": stream, "payload": payload})
        except TypeError:  # nothing a client sends parses into this, but a capture must never fail a request
            self._metrics.captured.labels(alias, "dropped").inc()
            return
        if len(record) > MAX_RECORD_BYTES:
            self._metrics.captured.labels(alias, "too_large").inc()
            return
        task = asyncio.ensure_future(self._write(alias, record, settings))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, alias: str, record: bytes, settings: CaptureSettings) -> None:
        try:
            await self._store.add_sample("capture", alias, record, settings.retention_s, settings.max_requests)
        except StoreUnavailable as exc:
            self._metrics.captured.labels(alias, "failed").inc()
            _log.info("captured request not stored", extra={"fields": {"alias": alias, "error": type(exc).__name__}})
            return
        self._metrics.captured.labels(alias, "captured").inc()

    async def settle(self) -> None:
        """Wait for the writes in flight (at shutdown: a captured request is not lost for lack of a wait)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def captured(self, alias: str, limit: int | None = None) -> tuple[list[CapturedRequest], int]:
        """The alias's captured requests, oldest first (the newest `limit`), and how many could not be read."""
        records = await self._store.samples("capture", alias, limit)
        read = [CapturedRequest.read(r) for r in records]
        found = [r for r in read if r is not None]
        return found, len(read) - len(found)
