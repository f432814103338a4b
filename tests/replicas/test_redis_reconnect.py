"""RedisStore after a Redis restart: pooled connections opened before the outage are dead.

Once Redis is back, every connection that sat idle in redis-py's pool through the outage
fails its next command ("Connection closed by server"). RedisStore drops the whole pool on
the first such failure and retries once, so concurrent calls succeed as soon as the store is
back instead of failing one by one (an admin 503, a sync round reported down, a lost lease).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from store.base import StoreUnavailable
from store.redis_store import RedisStore
from tests.store.redis_server import RedisServer, started_redis


async def test_concurrent_calls_succeed_once_redis_is_back(tmp_path: Path) -> None:
    first = started_redis(tmp_path)
    store = RedisStore(first.url, timeout_s=1.0)
    second: RedisServer | None = None
    try:
        # Four connections in the pool, as a busy replica has (sync loop, ticks, admin requests).
        await asyncio.gather(*(store.kill_switches() for _ in range(4)))
        first.kill()
        with pytest.raises(StoreUnavailable):
            await store.kill_switches()
        second = RedisServer(tmp_path, port=first.port).start()
        results = await asyncio.gather(*(store.kill_switches() for _ in range(4)), return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["set"] * 4
    finally:
        await store.close()
        if second is not None:
            second.kill()
