"""One contract, three backends: memory, SQLite and a real Redis started by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from store.base import Store, StoredMigration, StoreUnavailable
from store.memory import MemoryStore
from store.redis_store import RedisStore
from store.sqlite import SQLiteStore
from tests.store.redis_server import started_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = started_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest_asyncio.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "state.sqlite")
    else:
        server = request.getfixturevalue("redis_server")
        backend = RedisStore(server.url, prefix=f"t{id(request)}")
    yield backend
    await backend.close()


def _migration(version: int = 1, phase: str = "pending") -> StoredMigration:
    return StoredMigration(id="m1", spec={"alias": "gpt-4"}, state={"phase": phase}, version=version)


async def test_create_is_refused_for_an_existing_id(store: Store) -> None:
    assert await store.create_migration(_migration(), [{"action": "create"}])
    assert not await store.create_migration(_migration(), [{"action": "create"}])
    assert [m.id for m in await store.list_migrations()] == ["m1"]
    assert await store.audit("m1") == [{"action": "create"}]


async def test_commit_is_compare_and_set_and_appends_audit_atomically(store: Store) -> None:
    await store.create_migration(_migration(), [{"n": 0}])
    assert await store.commit(_migration(2, "shadow"), 1, [{"n": 1}])
    # A writer that read version 1 is stale now: refused, and its audit entry is not written.
    assert not await store.commit(_migration(2, "aborted"), 1, [{"n": 99}])
    stored = await store.get_migration("m1")
    assert stored is not None and stored.state == {"phase": "shadow"} and stored.version == 2
    assert await store.audit("m1") == [{"n": 0}, {"n": 1}]
    assert await store.get_migration("nope") is None


async def test_append_audit_keeps_order_without_a_state_change(store: Store) -> None:
    await store.create_migration(_migration(), [{"n": 0}])
    await store.append_audit("m1", [{"n": 1}, {"n": 2}])
    assert await store.audit("m1") == [{"n": 0}, {"n": 1}, {"n": 2}]
    stored = await store.get_migration("m1")
    assert stored is not None and stored.version == 1


async def test_a_writable_store_passes_the_write_probe_again_and_again(store: Store) -> None:
    await store.probe_write()
    await store.probe_write()
    assert await store.list_migrations() == []


async def test_windows_are_kept_per_replica(store: Store) -> None:
    await store.put_window("m1", "s0", "replica-a", {"requests": 1})
    await store.put_window("m1", "s0", "replica-b", {"requests": 2})
    await store.put_window("m1", "s0", "replica-a", {"requests": 3})
    await store.put_window("m1", "s1", "replica-a", {"requests": 7})
    assert sorted(w["requests"] for w in await store.windows("m1", "s0")) == [2, 3]
    assert await store.windows("m1", "other") == []


async def test_lease_has_one_holder_until_it_expires(store: Store) -> None:
    assert await store.acquire_lease("controller", "a", ttl_s=0.2)
    assert not await store.acquire_lease("controller", "b", ttl_s=0.2)
    assert await store.acquire_lease("controller", "a", ttl_s=0.2)  # renewal
    await store.release_lease("controller", "b")  # not b's to give up
    assert not await store.acquire_lease("controller", "b", ttl_s=0.2)
    await store.release_lease("controller", "a")
    assert await store.acquire_lease("controller", "b", ttl_s=0.2)


async def test_kill_switches(store: Store) -> None:
    await store.set_kill_switch("gpt-4", True)
    await store.set_kill_switch("gpt-3", True)
    await store.set_kill_switch("gpt-3", False)
    assert await store.kill_switches() == {"gpt-4"}


async def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first = SQLiteStore(path)
    await first.create_migration(_migration(), [{"n": 0}])
    await first.commit(_migration(2, "canary"), 1, [{"n": 1}])
    await first.close()
    second = SQLiteStore(path)
    stored = await second.get_migration("m1")
    assert stored is not None and stored.state == {"phase": "canary"}
    assert await second.audit("m1") == [{"n": 0}, {"n": 1}]
    await second.close()


async def test_responses_are_kept_read_and_deleted(store: Store) -> None:
    record = b'{"response": {"id": "resp_1"}, "items": []}'
    assert await store.get_record("response", "resp_1") is None
    await store.put_record("response", "resp_1", record, ttl_s=3600)
    assert await store.get_record("response", "resp_1") == record
    assert await store.delete_record("response", "resp_1")
    assert await store.get_record("response", "resp_1") is None
    assert not await store.delete_record("response", "resp_1")


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_responses_expire_after_their_retention(backend: str, tmp_path: Path) -> None:
    now = [1000.0]
    store: Store = MemoryStore(clock=lambda: now[0]) if backend == "memory" else SQLiteStore(
        tmp_path / "state.sqlite", clock=lambda: now[0])
    await store.put_record("response", "old", b"a", ttl_s=10)
    now[0] += 5
    await store.put_record("response", "new", b"b", ttl_s=10)
    assert await store.get_record("response", "old") == b"a"
    now[0] += 6
    assert await store.get_record("response", "old") is None
    assert not await store.delete_record("response", "old")
    assert await store.get_record("response", "new") == b"b"
    await store.close()


async def test_record_kinds_do_not_share_keys(store: Store) -> None:
    await store.put_record("response", "same-id", b"answer", ttl_s=60)
    assert await store.get_record("run", "same-id") is None
    await store.put_record("run", "same-id", b"run state", ttl_s=60)
    assert await store.get_record("response", "same-id") == b"answer"
    assert await store.delete_record("run", "same-id")
    assert await store.get_record("response", "same-id") == b"answer"


async def test_expired_lease_is_taken_over() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    assert await store.acquire_lease("controller", "a", ttl_s=5)
    now[0] = 4.9
    assert not await store.acquire_lease("controller", "b", ttl_s=5)
    now[0] = 5.1
    assert await store.acquire_lease("controller", "b", ttl_s=5)


async def test_redis_down_raises_store_unavailable(tmp_path: Path) -> None:
    server = started_redis(tmp_path)
    store = RedisStore(server.url, timeout_s=0.5)
    assert await store.ping()
    server.kill()
    assert not await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.get_migration("m1")
    await store.close()
