"""Embedded store: one SQLite file, the default. Safe for the several workers of one host
(WAL journal, short transactions, busy timeout); every call runs in a worker thread so
the event loop never blocks on the disk."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from store.base import (
    RecordKind,
    SampleKind,
    StoredMigration,
    StoreNotWritable,
    StoreUnavailable,
    check_sample_bounds,
)

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
CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, record BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS responses_by_expiry ON responses (expires_at);
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, record BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_expiry ON runs (expires_at);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, grp TEXT NOT NULL, record BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_group ON samples (kind, grp, seq);
CREATE INDEX IF NOT EXISTS samples_by_expiry ON samples (expires_at);
"""

# Table names come from this fixed map, never from a caller's string.
_RECORD_TABLES: dict[RecordKind, str] = {"response": "responses", "run": "runs"}
_SELECT_MIGRATION = "SELECT id, spec, state, version FROM migrations"

# Created by the first write probe rather than with the schema, so that a database that can only be read
# still serves reads (its state) while the probe reports it cannot be written.
_PROBE = (
    "CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL)",
    "INSERT INTO write_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
)

# SQLite's own codes (extended ones start with these) for a database this process may not write: no
# permission, a read-only file or directory, a path that cannot be opened or created, a full disk.
# Busy and locked, another process holding the database past the busy timeout, pass by themselves.
_REFUSED = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_FULL", "SQLITE_AUTH")


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
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _failure(self, exc: sqlite3.Error | OSError) -> StoreUnavailable:
        # Every failure of the file is a StoreUnavailable, which the controller's loop and the last sync at
        # shutdown expect; an OSError escaping them (a state directory the process may not create) failed
        # every controller round and then the application's shutdown.
        name = getattr(exc, "sqlite_errorname", None) or ""
        refused = isinstance(exc, OSError) or name.startswith(_REFUSED)
        return (StoreNotWritable if refused else StoreUnavailable)(f"sqlite store {self._path}: {exc}")

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            with self._lock:
                while True:
                    reused = self._conn is not None
                    try:
                        conn = self._connection()
                    except (sqlite3.Error, OSError) as exc:
                        raise self._failure(exc) from None
                    try:
                        return fn(conn)
                    except (sqlite3.DatabaseError, OSError) as exc:
                        failure = self._failure(exc)
                        if conn.in_transaction:
                            # Left open, the failed transaction would make every later BEGIN fail as well.
                            with contextlib.suppress(sqlite3.Error):
                                conn.execute("ROLLBACK")
                        if not isinstance(failure, StoreNotWritable):
                            raise failure from None
                        # SQLite opens a file it may not write read-only, and that connection stays so after
                        # the file is fixed: a refusal on an older connection is tried once on a new one.
                        self._conn = None
                        conn.close()
                        if not reused:
                            raise failure from None

        return await asyncio.to_thread(call)

    async def ping(self) -> bool:
        try:
            await self._run(lambda c: c.execute("SELECT 1").fetchone())
        except StoreUnavailable:
            return False
        return True

    async def probe_write(self) -> None:
        now = self._clock()

        def probe(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            c.execute(_PROBE[0])
            c.execute(_PROBE[1], (now,))
            c.execute("COMMIT")

        await self._run(probe)

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

    async def put_record(self, kind: RecordKind, key: str, record: bytes, ttl_s: float) -> None:
        now = self._clock()
        table = _RECORD_TABLES[kind]

        def put(c: sqlite3.Connection) -> None:
            c.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))
            c.execute(f"INSERT OR REPLACE INTO {table} (id, record, expires_at) VALUES (?, ?, ?)",
                      (key, record, now + ttl_s))

        await self._run(put)

    async def get_record(self, kind: RecordKind, key: str) -> bytes | None:
        row = await self._run(lambda c: c.execute(
            f"SELECT record FROM {_RECORD_TABLES[kind]} WHERE id = ? AND expires_at > ?",
            (key, self._clock())).fetchone())
        return bytes(row[0]) if row else None

    async def delete_record(self, kind: RecordKind, key: str) -> bool:
        deleted = await self._run(lambda c: c.execute(
            f"DELETE FROM {_RECORD_TABLES[kind]} WHERE id = ? AND expires_at > ?", (key, self._clock())).rowcount)
        return bool(deleted)

    async def add_sample(self, kind: SampleKind, group: str, record: bytes, ttl_s: float, keep: int) -> None:
        check_sample_bounds(keep=keep)
        now = self._clock()

        def add(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            # Every group's expired rows, not only this one's: a finished migration's examples are never
            # added to again, and would otherwise stay in the file for good.
            c.execute("DELETE FROM samples WHERE expires_at <= ?", (now,))
            c.execute("INSERT INTO samples (kind, grp, record, expires_at) VALUES (?, ?, ?, ?)",
                      (kind, group, record, now + ttl_s))
            # AUTOINCREMENT never reuses a seq, so seq order is the order of the adds.
            c.execute(
                "DELETE FROM samples WHERE kind = ? AND grp = ? AND seq <= (SELECT seq FROM samples "
                "WHERE kind = ? AND grp = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (kind, group, kind, group, keep),
            )
            c.execute("COMMIT")

        await self._run(add)

    async def samples(self, kind: SampleKind, group: str, limit: int | None = None) -> list[bytes]:
        check_sample_bounds(limit=limit)
        now = self._clock()
        rows = await self._run(lambda c: c.execute(
            "SELECT record FROM (SELECT seq, record FROM samples WHERE kind = ? AND grp = ? AND expires_at > ? "
            "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (kind, group, now, -1 if limit is None else limit)).fetchall())
        return [bytes(r[0]) for r in rows]

    async def delete_samples(self, kind: SampleKind, group: str) -> int:
        now = self._clock()

        def delete(c: sqlite3.Connection) -> int:
            c.execute("BEGIN IMMEDIATE")
            live: int = c.execute("SELECT COUNT(*) FROM samples WHERE kind = ? AND grp = ? AND expires_at > ?",
                                  (kind, group, now)).fetchone()[0]
            c.execute("DELETE FROM samples WHERE kind = ? AND grp = ?", (kind, group))
            c.execute("COMMIT")
            return live

        return await self._run(delete)
