"""A store that refuses writes says so (StoreNotWritable), whatever the cause, and the write probe tells
that apart from an outage: the one fails /readyz, the other leaves replicas serving on their last state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from store.base import StoredMigration, StoreNotWritable, StoreUnavailable
from store.memory import MemoryStore
from store.probe import WriteProbe
from store.redis_store import RedisStore
from store.sqlite import SQLiteStore
from tests.store.read_only import read_only
from tests.store.redis_server import started_redis
from tests.support import free_port


def _migration(version: int = 1) -> StoredMigration:
    return StoredMigration(id="m1", spec={"alias": "gpt-4"}, state={"phase": "pending"}, version=version)


async def _eventually(predicate: Callable[[], bool], *, within_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def store_log() -> Iterator[list[logging.LogRecord]]:
    # On the logger itself: configure_logging() stops "cutover" from propagating to pytest's handler.
    kept = _Kept()
    logger = logging.getLogger("cutover.store")
    logger.addHandler(kept)
    yield kept.records
    logger.removeHandler(kept)


@pytest.mark.parametrize("relative", ["state.sqlite", "sub/state.sqlite"], ids=["file", "directory"])
async def test_sqlite_in_a_read_only_directory_refuses_writes(tmp_path: Path, relative: str) -> None:
    # The file, or the directory the store would create for it, cannot be made there.
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    store = SQLiteStore(state_dir / relative)
    with read_only(state_dir):
        with pytest.raises(StoreNotWritable, match=r"state\.sqlite"):
            await store.probe_write()
        # Reads fail the same way, as the StoreUnavailable that the controller and the sync handle.
        with pytest.raises(StoreNotWritable):
            await store.list_migrations()
    await store.probe_write()
    assert await store.create_migration(_migration(), [{"n": 0}])
    await store.close()


async def test_a_sqlite_file_that_can_only_be_read_serves_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    writer = SQLiteStore(path)
    await writer.create_migration(_migration(), [{"n": 0}])
    await writer.close()

    store = SQLiteStore(path)
    with read_only(path):
        assert [m.id for m in await store.list_migrations()] == ["m1"]
        with pytest.raises(StoreNotWritable, match="readonly"):
            await store.probe_write()
        with pytest.raises(StoreNotWritable):
            await store.commit(_migration(2), 1, [{"n": 1}])
        # The failed writes left no transaction open: reads go on.
        stored = await store.get_migration("m1")
        assert stored is not None and stored.version == 1
    # Fixed, it takes writes again without a restart.
    await store.probe_write()
    assert await store.commit(_migration(2), 1, [{"n": 1}])
    assert await store.audit("m1") == [{"n": 0}, {"n": 1}]
    await store.close()


async def test_sqlite_under_a_file_refuses_writes(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory")
    store = SQLiteStore(tmp_path / "taken" / "state.sqlite")
    with pytest.raises(StoreNotWritable, match="taken"):
        await store.probe_write()
    await store.close()


async def test_a_redis_replica_refuses_writes_and_still_answers_reads(tmp_path: Path) -> None:
    server = started_redis(tmp_path)
    store = RedisStore(server.url, timeout_s=2)
    admin = aioredis.Redis.from_url(server.url)
    try:
        await store.probe_write()
        assert await store.create_migration(_migration(), [{"n": 0}])
        # A replica of a master that is nowhere: it keeps its data and refuses every write.
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        assert [m.id for m in await store.list_migrations()] == ["m1"]
        with pytest.raises(StoreNotWritable) as refused:
            await store.probe_write()
        # No address in the message: a Redis URL can hold a password.
        assert str(refused.value) == "redis store: ReadOnlyError"
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        await store.probe_write()
    finally:
        await admin.aclose()
        await store.close()
        server.stop()


async def test_the_probe_tells_a_refusal_from_an_outage(store_log: list[logging.LogRecord]) -> None:
    store = MemoryStore()
    probe = WriteProbe(store)
    assert (await probe.check()).state == "ok"

    store.writable = False
    for _ in range(3):
        refused = await probe.check()
    assert refused.state == "not_writable" and refused.error == "memory store switched to read-only"

    store.available = False
    outage = await probe.check()
    assert outage.state == "unreachable" and outage.error == "memory store switched off"

    store.available = store.writable = True
    assert (await probe.check()).state == "ok"
    # One line when writes are refused, one when they come back; none for each failed probe or the outage.
    assert [(r.levelno, r.getMessage()) for r in store_log] == [
        (logging.ERROR, "the store refuses writes; /readyz answers 503 until it is fixed"),
        (logging.WARNING, "the store takes writes again"),
    ]


async def test_the_probe_loop_sees_a_refusal_and_the_fix() -> None:
    store = MemoryStore()
    probe = WriteProbe(store, interval_s=0.05, retry_s=0.01)
    await probe.start()
    try:
        assert probe.last is not None and probe.last.state == "ok"
        store.writable = False
        await _eventually(lambda: probe.last is not None and probe.last.state == "not_writable", within_s=5,
                          what="the probe to see the refusal")
        store.writable = True
        await _eventually(lambda: probe.last is not None and probe.last.state == "ok", within_s=5,
                          what="the probe to see the fix")
    finally:
        await probe.stop()


async def test_a_store_that_cannot_be_reached_is_not_called_unwritable(tmp_path: Path) -> None:
    server = started_redis(tmp_path)
    store = RedisStore(server.url, timeout_s=0.5)
    server.kill()
    with pytest.raises(StoreUnavailable) as down:
        await store.probe_write()
    assert not isinstance(down.value, StoreNotWritable)
    await store.close()
