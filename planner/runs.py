"""Idempotent, resumable runs keyed by the client's Idempotency-Key.

A retried request (the OpenAI SDK retries twice by default) re-attaches to the run in
progress, or gets its stored result, instead of paying again. In-process this is a
shared future. With a Redis store the run is also journalled: its plan and each
finished task are written before the task counts as done, so a retry after a gateway
crash resumes the run (the owner's heartbeat has stopped) without re-running them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import orjson
from redis.exceptions import RedisError

from planner.plan import Plan
from planner.rounds import task_result_from
from planner.scheduler import TaskResult

_log = logging.getLogger("cutover.planner")
_HEARTBEAT_S = 1.0
_STALE_S = 5.0


class Journal:
    """Where one run writes down its progress; the in-memory one forgets it with the process."""

    def __init__(self, finished: dict[str, TaskResult] | None = None, plan: dict[str, Any] | None = None) -> None:
        self.finished: dict[str, TaskResult] = finished or {}
        self.plan = plan

    async def plan_made(self, plan: Plan) -> None:
        self.plan = plan.to_dict()

    async def task_done(self, result: TaskResult) -> None:
        self.finished[result.task_id] = result


class RedisJournal(Journal):
    def __init__(self, redis: Any, key: str, finished: dict[str, TaskResult], plan: dict[str, Any] | None) -> None:
        super().__init__(finished, plan)
        self._redis = redis
        self._key = key

    async def plan_made(self, plan: Plan) -> None:
        await super().plan_made(plan)
        await self._write(self._key, "plan", orjson.dumps(plan.to_dict()))

    async def task_done(self, result: TaskResult) -> None:
        await self._write(self._key + ":tasks", result.task_id, orjson.dumps(asdict(result), default=str))
        await super().task_done(result)

    async def _write(self, key: str, field: str, value: bytes) -> None:
        # A journal that fails mid-run costs crash-resume, never the run itself.
        try:
            await self._redis.hset(key, field, value)
        except (RedisError, OSError) as exc:
            _log.warning("run journal write failed", extra={"fields": {"error": str(exc)}})


Execute = Callable[[Journal, dict[str, Any] | None], Awaitable[dict[str, Any]]]


class Runs:
    """Runs by idempotency key. `redis` (a redis.asyncio client) makes them survive a crash."""

    def __init__(self, owner: str, redis: Any = None, ttl_s: float = 3600.0, max_kept: int = 10_000) -> None:
        self._owner = owner
        self._redis = redis
        self._ttl = ttl_s
        self._max = max_kept
        self._running: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._done: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.reattached = 0

    async def run(self, key: str | None, execute: Execute) -> dict[str, Any]:
        """The run's result (a dict the caller defines), executing it at most once per key."""
        if key is None:
            return await execute(Journal(), None)
        done = self._done.get(key)
        if done is not None and done[0] > time.monotonic():
            self.reattached += 1
            return done[1]
        running = self._running.get(key)
        if running is not None:
            self.reattached += 1
            return await asyncio.shield(running)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await self._run_durably(key, execute) if self._redis is not None else await execute(
                Journal(), None)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(result)
            self._done[key] = (time.monotonic() + self._ttl, result)
            while len(self._done) > self._max:
                self._done.popitem(last=False)
            return result
        finally:
            self._running.pop(key, None)

    async def _run_durably(self, key: str, execute: Execute) -> dict[str, Any]:
        try:
            claimed = await self._claim(key)
        except (RedisError, OSError) as exc:
            # The journal is down: the run still happens, only without crash-resume.
            _log.warning("run journal unreachable; running without it", extra={"fields": {"error": str(exc)}})
            return await execute(Journal(), None)
        if isinstance(claimed, dict):
            return claimed
        rkey, finished, plan = claimed
        beating = asyncio.ensure_future(self._heartbeat(rkey))
        try:
            result = await execute(RedisJournal(self._redis, rkey, finished, plan), plan)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        try:
            await self._redis.hset(rkey, mapping={"status": "done", "result": orjson.dumps(result)})
        except (RedisError, OSError) as exc:
            _log.warning("run result not journalled", extra={"fields": {"error": str(exc)}})
        return result

    async def _claim(
        self, key: str
    ) -> dict[str, Any] | tuple[str, dict[str, TaskResult], dict[str, Any] | None]:
        """The stored result of a finished run, or the journal of the run this process now owns."""
        redis = self._redis
        rkey = f"cutover:run:{key}"
        while True:
            state = await redis.hgetall(rkey)
            if state.get(b"status") == b"done":
                self.reattached += 1
                loaded: dict[str, Any] = orjson.loads(state[b"result"])
                return loaded
            beat = float(state.get(b"heartbeat", b"0"))
            owner = state.get(b"owner", b"").decode()
            if state and owner != self._owner and time.time() - beat < _STALE_S:
                # Another gateway is running it: wait for its result rather than paying twice.
                self.reattached += 1
                await asyncio.sleep(_HEARTBEAT_S / 2)
                continue
            break
        finished = {
            task_id.decode(): task_result_from(orjson.loads(raw))
            for task_id, raw in (await redis.hgetall(rkey + ":tasks")).items()
        }
        plan = orjson.loads(state[b"plan"]) if state.get(b"plan") else None
        await redis.hset(rkey, mapping={"status": "running", "owner": self._owner, "heartbeat": time.time()})
        await redis.expire(rkey, int(self._ttl))
        await redis.expire(rkey + ":tasks", int(self._ttl))
        return rkey, finished, plan

    async def _heartbeat(self, rkey: str) -> None:
        while True:
            await asyncio.sleep(_HEARTBEAT_S)
            with contextlib.suppress(RedisError, OSError):
                await self._redis.hset(rkey, "heartbeat", time.time())

