"""Embedded store: one SQLite file, the default. Safe for the several workers of one host
(WAL journal, short transactions, busy timeout); every call runs in a worker thread so
the event loop never blocks on the disk."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from store.base import StoredMigration, StoreUnavailable

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS migrations (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, migration_id TEXT NOT NULL, entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_migration ON audit (migration_id, seq);
CREATE TABLE IF NOT EXISTS windows (
    migration_id TEXT NOT NULL, step_key TEXT NOT NULL, replica TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (migration_id, step_key, replica)
);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kill_switches (alias TEXT PRIMARY KEY);
"""

_SELECT_MIGRATION = "SELECT id, spec, state, version FROM migrations"


def _append_audit(c: sqlite3.Connection, migration_id: str, audit: list[dict[str, Any]]) -> None:
    c.executemany(
        "INSERT INTO audit (migration_id, entry) VALUES (?, ?)", [(migration_id, orjson.dumps(e)) for e in audit]
    )


class SQLiteStore:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self._path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            with self._lock:
                try:
                    return fn(self._connection())
                except sqlite3.OperationalError as exc:
                    raise StoreUnavailable(f"sqlite store: {exc}") from None

        return await asyncio.to_thread(call)

    async def ping(self) -> bool:
        try:
            await self._run(lambda c: c.execute("SELECT 1").fetchone())
        except StoreUnavailable:
            return False
        return True

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)

    @staticmethod
    def _row(row: tuple[str, str, str, int]) -> StoredMigration:
        return StoredMigration(id=row[0], spec=orjson.loads(row[1]), state=orjson.loads(row[2]), version=row[3])

    async def list_migrations(self) -> list[StoredMigration]:
        rows = await self._run(lambda c: c.execute(_SELECT_MIGRATION + " ORDER BY id").fetchall())
        return [self._row(r) for r in rows]

    async def get_migration(self, migration_id: str) -> StoredMigration | None:
        row = await self._run(
            lambda c: c.execute(_SELECT_MIGRATION + " WHERE id = ?", (migration_id,)).fetchone()
        )
        return self._row(row) if row else None

    async def create_migration(self, migration: StoredMigration, audit: list[dict[str, Any]]) -> bool:
        def create(c: sqlite3.Connection) -> bool:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    "INSERT INTO migrations (id, spec, state, version) VALUES (?, ?, ?, ?)",
                    (migration.id, orjson.dumps(migration.spec), orjson.dumps(migration.state), migration.version),
                )
            except sqlite3.IntegrityError:
                c.execute("ROLLBACK")
                return False
            _append_audit(c, migration.id, audit)
            c.execute("COMMIT")
            return True

        return await self._run(create)

    async def commit(self, migration: StoredMigration, expected_version: int, audit: list[dict[str, Any]]) -> bool:
        def commit(c: sqlite3.Connection) -> bool:
            c.execute("BEGIN IMMEDIATE")
            cursor = c.execute(
                "UPDATE migrations SET spec = ?, state = ?, version = ? WHERE id = ? AND version = ?",
                (orjson.dumps(migration.spec), orjson.dumps(migration.state), migration.version, migration.id,
                 expected_version),
            )
            if cursor.rowcount != 1:
                c.execute("ROLLBACK")
                return False
            _append_audit(c, migration.id, audit)
            c.execute("COMMIT")
            return True

        return await self._run(commit)

    async def append_audit(self, migration_id: str, audit: list[dict[str, Any]]) -> None:
        await self._run(lambda c: _append_audit(c, migration_id, audit))

    async def audit(self, migration_id: str) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT entry FROM audit WHERE migration_id = ? ORDER BY seq", (migration_id,)
            ).fetchall()
        )
        return [orjson.loads(r[0]) for r in rows]

    async def put_window(self, migration_id: str, step_key: str, replica: str, data: dict[str, Any]) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO windows (migration_id, step_key, replica, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (migration_id, step_key, replica) DO UPDATE SET data = excluded.data",
                (migration_id, step_key, replica, orjson.dumps(data)),
            )
        )

    async def windows(self, migration_id: str, step_key: str) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT data FROM windows WHERE migration_id = ? AND step_key = ?", (migration_id, step_key)
            ).fetchall()
        )
        return [orjson.loads(r[0]) for r in rows]

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()

        def acquire(c: sqlite3.Connection) -> bool:
            c.execute("BEGIN IMMEDIATE")
            row = c.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                c.execute("ROLLBACK")
                return False
            c.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
                (name, holder, now + ttl_s),
            )
            c.execute("COMMIT")
            return True

        return await self._run(acquire)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)))

    async def set_kill_switch(self, alias: str, on: bool) -> None:
        sql = (
            "INSERT OR IGNORE INTO kill_switches (alias) VALUES (?)" if on
            else "DELETE FROM kill_switches WHERE alias = ?"
        )
        await self._run(lambda c: c.execute(sql, (alias,)))

    async def kill_switches(self) -> set[str]:
        rows = await self._run(lambda c: c.execute("SELECT alias FROM kill_switches").fetchall())
        return {r[0] for r in rows}
