"""Whether the store takes writes, found by writing to it, for /readyz.

Reading is not enough to tell: a SQLite file that this process may read but not write (a state
directory owned by another user, a read-only filesystem) or a Redis replica answers every read,
while every migration change, outcome window and lease fails. So a real write is made at start-up
and then every `interval_s` (every `retry_s` while it fails, so a fix shows at once), and /readyz
reads the last result instead of writing on every hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

from store.base import Store, StoreNotWritable, StoreUnavailable

_log = logging.getLogger("cutover.store")

ProbeState = Literal["ok", "unreachable", "not_writable"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: ProbeState
    error: str | None


class WriteProbe:
    def __init__(self, store: Store, *, interval_s: float = 10.0, retry_s: float = 1.0) -> None:
        self._store = store
        self._interval_s = interval_s
        self._retry_s = retry_s
        self.last: ProbeResult | None = None
        self._refusing = False
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    async def check(self) -> ProbeResult:
        """Write once now and keep the result."""
        try:
            await self._store.probe_write()
            result = ProbeResult("ok", None)
        except StoreNotWritable as exc:
            result = ProbeResult("not_writable", str(exc))
        except StoreUnavailable as exc:
            # An outage is the store sync's to report (/readyz "degraded"); only a refusal fails readiness.
            result = ProbeResult("unreachable", str(exc))
        self.last = result
        # Once each way, however often it is probed and whatever outage comes between.
        if result.state == "not_writable" and not self._refusing:
            self._refusing = True
            _log.error("the store refuses writes; /readyz answers 503 until it is fixed",
                       extra={"fields": {"error": result.error}})
        elif result.state == "ok" and self._refusing:
            self._refusing = False
            _log.warning("the store takes writes again")
        return result

    async def start(self) -> None:
        """The first probe, awaited so that /readyz is right from the first request, then the loop."""
        await self.check()
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.ensure_future(self._run(self._stopping))

    async def _run(self, stopping: asyncio.Event) -> None:
        while True:
            wait_s = self._interval_s if self.last is not None and self.last.state == "ok" else self._retry_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait_s)
                return
            try:
                await self.check()
            except Exception:
                _log.exception("store write probe failed")

    async def stop(self) -> None:
        if self._task is not None and self._stopping is not None:
            self._stopping.set()
            # A probe in flight may wait out SQLite's busy timeout; shutdown does not wait for it.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
