"""Sample lists, one contract on the three backends: bounded, expiring, append-only lists of opaque records.

Every backend gets the same fake wall clock, so expiry is tested without sleeping; Redis keeps its own key
expiry relative to it, so the fake time being far from the real one changes nothing there.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from store.base import Store, StoreNotWritable, StoreUnavailable
from store.memory import MemoryStore
from store.redis_store import RedisStore
from store.sqlite import SQLiteStore
from tests.store.redis_server import RedisServer, started_redis
from tests.support import free_port


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = started_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "state.sqlite", clock=clock)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        # A prefix of its own per test: the server is shared by the module.
        backend = RedisStore(server.url, prefix=f"t{uuid.uuid4().hex}", clock=clock)
    yield backend
    await backend.close()


async def test_records_come_back_in_the_order_they_were_added_duplicates_included(store: Store) -> None:
    binary = bytes(range(256))  # NULs and all: records are opaque bytes
    for record in (b"a", b"b", b"a", binary, b""):  # all in one clock tick
        await store.add_sample("capture", "gpt-4", record, ttl_s=60, keep=10)
    assert await store.samples("capture", "gpt-4") == [b"a", b"b", b"a", binary, b""]


async def test_limit_gives_the_newest_oldest_first(store: Store) -> None:
    for n in range(5):
        await store.add_sample("capture", "gpt-4", b"%d" % n, ttl_s=60, keep=10)
    assert await store.samples("capture", "gpt-4", limit=2) == [b"3", b"4"]
    assert await store.samples("capture", "gpt-4", limit=1) == [b"4"]
    assert await store.samples("capture", "gpt-4", limit=0) == []
    assert await store.samples("capture", "gpt-4", limit=99) == [b"0", b"1", b"2", b"3", b"4"]
    assert await store.samples("capture", "unknown", limit=3) == []


async def test_keep_bounds_the_list_to_the_newest(store: Store) -> None:
    for n in range(5):
        await store.add_sample("example", "m1", b"%d" % n, ttl_s=60, keep=3)
        assert len(await store.samples("example", "m1")) == min(n + 1, 3)
    assert await store.samples("example", "m1") == [b"2", b"3", b"4"]
    # A smaller bound on a later add drops all that is now too many.
    await store.add_sample("example", "m1", b"5", ttl_s=60, keep=1)
    assert await store.samples("example", "m1") == [b"5"]


async def test_each_record_expires_after_its_own_ttl(store: Store, clock: Clock) -> None:
    await store.add_sample("capture", "gpt-4", b"a", ttl_s=10, keep=10)  # until 1010
    clock.now += 5
    await store.add_sample("capture", "gpt-4", b"b", ttl_s=10, keep=10)  # until 1015
    await store.add_sample("capture", "gpt-4", b"c", ttl_s=2, keep=10)  # until 1007
    assert await store.samples("capture", "gpt-4") == [b"a", b"b", b"c"]
    clock.now += 3  # 1008
    assert await store.samples("capture", "gpt-4") == [b"a", b"b"]
    assert await store.samples("capture", "gpt-4", limit=1) == [b"b"]
    clock.now += 3  # 1011
    assert await store.samples("capture", "gpt-4") == [b"b"]
    clock.now += 10
    assert await store.samples("capture", "gpt-4") == []
    await store.add_sample("capture", "gpt-4", b"d", ttl_s=10, keep=10)
    assert await store.samples("capture", "gpt-4") == [b"d"]


async def test_expired_records_go_before_the_list_is_trimmed(store: Store, clock: Clock) -> None:
    await store.add_sample("capture", "gpt-4", b"long", ttl_s=100, keep=2)
    await store.add_sample("capture", "gpt-4", b"short", ttl_s=1, keep=2)
    clock.now += 2
    # Trimmed first, "long" would go to make room and leave only the expired "short" beside "new".
    await store.add_sample("capture", "gpt-4", b"new", ttl_s=100, keep=2)
    assert await store.samples("capture", "gpt-4") == [b"long", b"new"]


async def test_groups_and_kinds_are_separate_lists(store: Store) -> None:
    await store.add_sample("capture", "gpt-4", b"c-gpt-4", ttl_s=60, keep=1)
    await store.add_sample("capture", "claude", b"c-claude", ttl_s=60, keep=1)
    await store.add_sample("example", "gpt-4", b"e-gpt-4", ttl_s=60, keep=1)
    # keep=1 on each add: had they shared a list, only the last record would be left.
    assert await store.samples("capture", "gpt-4") == [b"c-gpt-4"]
    assert await store.samples("capture", "claude") == [b"c-claude"]
    assert await store.samples("example", "gpt-4") == [b"e-gpt-4"]
    assert await store.delete_samples("capture", "gpt-4") == 1
    assert await store.samples("example", "gpt-4") == [b"e-gpt-4"]
    assert await store.samples("capture", "claude") == [b"c-claude"]


async def test_delete_counts_the_unexpired_records_it_dropped(store: Store, clock: Clock) -> None:
    await store.add_sample("example", "m1", b"a", ttl_s=1, keep=10)
    await store.add_sample("example", "m1", b"b", ttl_s=60, keep=10)
    await store.add_sample("example", "m1", b"b", ttl_s=60, keep=10)
    clock.now += 2
    assert await store.delete_samples("example", "m1") == 2
    assert await store.samples("example", "m1") == []
    assert await store.delete_samples("example", "m1") == 0
    assert await store.delete_samples("example", "never-written") == 0
    # The group starts afresh after a delete.
    await store.add_sample("example", "m1", b"c", ttl_s=60, keep=10)
    assert await store.samples("example", "m1") == [b"c"]


async def test_bounds_that_mean_nothing_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="keep"):
        await store.add_sample("capture", "gpt-4", b"a", ttl_s=60, keep=0)
    with pytest.raises(ValueError, match="limit"):
        await store.samples("capture", "gpt-4", limit=-1)
    assert await store.samples("capture", "gpt-4") == []


async def test_memory_store_switched_off_is_unavailable() -> None:
    store = MemoryStore()
    await store.add_sample("capture", "gpt-4", b"a", ttl_s=60, keep=10)
    store.available = False
    with pytest.raises(StoreUnavailable):
        await store.add_sample("capture", "gpt-4", b"b", ttl_s=60, keep=10)
    with pytest.raises(StoreUnavailable):
        await store.samples("capture", "gpt-4")
    with pytest.raises(StoreUnavailable):
        await store.delete_samples("capture", "gpt-4")
    store.available = True
    assert await store.samples("capture", "gpt-4") == [b"a"]


async def test_sqlite_samples_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first = SQLiteStore(path)
    await first.add_sample("capture", "gpt-4", b"a", ttl_s=3600, keep=10)
    await first.close()
    second = SQLiteStore(path)
    await second.add_sample("capture", "gpt-4", b"b", ttl_s=3600, keep=10)
    assert await second.samples("capture", "gpt-4") == [b"a", b"b"]
    await second.close()


async def test_a_sqlite_file_from_before_sample_lists_gains_their_table(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first = SQLiteStore(path)
    await first.put_record("response", "resp_1", b"kept", ttl_s=3600)
    await first.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE samples")
    second = SQLiteStore(path)
    assert await second.samples("capture", "gpt-4") == []
    await second.add_sample("capture", "gpt-4", b"a", ttl_s=3600, keep=10)
    assert await second.samples("capture", "gpt-4") == [b"a"]
    assert await second.get_record("response", "resp_1") == b"kept"
    await second.close()


async def test_redis_replicas_share_one_list_in_the_order_of_their_adds(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex}"
    # Skewed clocks: the order of the adds, not the adders' times, orders the list.
    one = RedisStore(redis_server.url, prefix=prefix, clock=lambda: 2000.0)
    two = RedisStore(redis_server.url, prefix=prefix, clock=lambda: 1990.0)
    try:
        await one.add_sample("capture", "gpt-4", b"1", ttl_s=60, keep=3)
        await two.add_sample("capture", "gpt-4", b"2", ttl_s=60, keep=3)
        await one.add_sample("capture", "gpt-4", b"3", ttl_s=60, keep=3)
        await two.add_sample("capture", "gpt-4", b"4", ttl_s=60, keep=3)
        assert await one.samples("capture", "gpt-4") == [b"2", b"3", b"4"]
        # A replica started later reads what the others wrote.
        three = RedisStore(redis_server.url, prefix=prefix, clock=lambda: 2000.0)
        try:
            assert await three.samples("capture", "gpt-4") == [b"2", b"3", b"4"]
            assert await three.delete_samples("capture", "gpt-4") == 3
        finally:
            await three.close()
        assert await two.samples("capture", "gpt-4") == []
    finally:
        await one.close()
        await two.close()


async def test_redis_list_keys_expire_after_their_last_record(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex}"
    store = RedisStore(redis_server.url, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.add_sample("example", "m1", b"a", ttl_s=3600, keep=2)
        for _ in range(5):
            await store.add_sample("example", "m1", b"b", ttl_s=10, keep=2)
        keys = await admin.keys(f"{prefix}:sample*:example:m1")
        assert len(keys) == 2
        for key in keys:
            # Trimming drops a record from both sorted sets, its expiry included.
            assert await admin.zcard(key) == 2
        # Trimmed, the long-lived "a" no longer holds the keys: the list outlives its last record only.
        for key in keys:
            assert 10_000 < await admin.pttl(key) <= 11_000
        await store.add_sample("example", "m1", b"a", ttl_s=3600, keep=2)
        await store.add_sample("example", "m1", b"b", ttl_s=10, keep=2)
        for key in keys:
            # The longest retention in the list, plus the margin, whichever record came last.
            assert 3600_000 < await admin.pttl(key) <= 3601_000
        assert await store.delete_samples("example", "m1") == 2
        assert await admin.keys(f"{prefix}:sample*:example:m1") == []
    finally:
        await admin.aclose()
        await store.close()


async def test_a_redis_replica_refuses_sample_writes_and_still_answers_reads(tmp_path: Path) -> None:
    server = started_redis(tmp_path)
    store = RedisStore(server.url, timeout_s=2)
    admin = aioredis.Redis.from_url(server.url)
    try:
        await store.add_sample("capture", "gpt-4", b"a", ttl_s=60, keep=10)
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        with pytest.raises(StoreNotWritable):
            await store.add_sample("capture", "gpt-4", b"b", ttl_s=60, keep=10)
        assert await store.samples("capture", "gpt-4") == [b"a"]
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        await store.add_sample("capture", "gpt-4", b"b", ttl_s=60, keep=10)
        assert await store.samples("capture", "gpt-4") == [b"a", b"b"]
        server.kill()
        for call in (
            store.add_sample("capture", "gpt-4", b"c", ttl_s=60, keep=10),
            store.samples("capture", "gpt-4"),
            store.delete_samples("capture", "gpt-4"),
        ):
            with pytest.raises(StoreUnavailable):
                await call
    finally:
        await admin.aclose()
        await store.close()
        server.stop()
