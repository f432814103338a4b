"""In-process store for tests and single-process experiments."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from store.base import RecordKind, SampleKind, StoredMigration, StoreNotWritable, check_sample_bounds


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._migrations: dict[str, StoredMigration] = {}
        self._audit: dict[str, list[dict[str, Any]]] = {}
        self._windows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._kills: set[str] = set()
        self._records: dict[tuple[RecordKind, str], tuple[bytes, float]] = {}
        # (expires_at, record), oldest add first.
        self._samples: dict[tuple[SampleKind, str], list[tuple[float, bytes]]] = {}
        self.available = True
        self.writable = True

    def _check(self) -> None:
        from store.base import StoreUnavailable

        if not self.available:
            raise StoreUnavailable("memory store switched off")

    async def ping(self) -> bool:
        return self.available

    async def close(self) -> None:
        return None

    async def probe_write(self) -> None:
        self._check()
        if not self.writable:
            raise StoreNotWritable("memory store switched to read-only")

    async def list_migrations(self) -> list[StoredMigration]:
        self._check()
        return [copy.deepcopy(m) for m in self._migrations.values()]

    async def get_migration(self, migration_id: str) -> StoredMigration | None:
        self._check()
        found = self._migrations.get(migration_id)
        return copy.deepcopy(found) if found else None

    async def create_migration(self, migration: StoredMigration, audit: list[dict[str, Any]]) -> bool:
        self._check()
        if migration.id in self._migrations:
            return False
        self._migrations[migration.id] = copy.deepcopy(migration)
        self._audit[migration.id] = copy.deepcopy(audit)
        return True

    async def commit(self, migration: StoredMigration, expected_version: int, audit: list[dict[str, Any]]) -> bool:
        self._check()
        current = self._migrations.get(migration.id)
        if current is None or current.version != expected_version:
            return False
        self._migrations[migration.id] = copy.deepcopy(migration)
        self._audit.setdefault(migration.id, []).extend(copy.deepcopy(audit))
        return True

    async def append_audit(self, migration_id: str, audit: list[dict[str, Any]]) -> None:
        self._check()
        self._audit.setdefault(migration_id, []).extend(copy.deepcopy(audit))

    async def audit(self, migration_id: str) -> list[dict[str, Any]]:
        self._check()
        return copy.deepcopy(self._audit.get(migration_id, []))

    async def put_window(self, migration_id: str, step_key: str, replica: str, data: dict[str, Any]) -> None:
        self._check()
        self._windows.setdefault((migration_id, step_key), {})[replica] = copy.deepcopy(data)

    async def windows(self, migration_id: str, step_key: str) -> list[dict[str, Any]]:
        self._check()
        return copy.deepcopy(list(self._windows.get((migration_id, step_key), {}).values()))

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        self._check()
        now = self._clock()
        current = self._leases.get(name)
        if current is None or current[0] == holder or current[1] <= now:
            self._leases[name] = (holder, now + ttl_s)
            return True
        return False

    async def release_lease(self, name: str, holder: str) -> None:
        self._check()
        if self._leases.get(name, ("", 0.0))[0] == holder:
            del self._leases[name]

    async def set_kill_switch(self, alias: str, on: bool) -> None:
        self._check()
        (self._kills.add if on else self._kills.discard)(alias)

    async def kill_switches(self) -> set[str]:
        self._check()
        return set(self._kills)

    async def put_record(self, kind: RecordKind, key: str, record: bytes, ttl_s: float) -> None:
        self._check()
        now = self._clock()
        # Expired records go as new ones come, so the dict holds only what is still retained.
        for stale in [k for k, (_, expires) in self._records.items() if expires <= now]:
            del self._records[stale]
        self._records[kind, key] = (record, now + ttl_s)

    async def get_record(self, kind: RecordKind, key: str) -> bytes | None:
        self._check()
        found = self._records.get((kind, key))
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def delete_record(self, kind: RecordKind, key: str) -> bool:
        self._check()
        found = self._records.pop((kind, key), None)
        return found is not None and found[1] > self._clock()

    async def add_sample(self, kind: SampleKind, group: str, record: bytes, ttl_s: float, keep: int) -> None:
        check_sample_bounds(keep=keep)
        self._check()
        now = self._clock()
        # Records may have different retentions, so expired ones can sit anywhere in the list.
        kept = [e for e in self._samples.get((kind, group), []) if e[0] > now]
        kept.append((now + ttl_s, record))
        self._samples[kind, group] = kept[-keep:]

    async def samples(self, kind: SampleKind, group: str, limit: int | None = None) -> list[bytes]:
        check_sample_bounds(limit=limit)
        self._check()
        now = self._clock()
        live = [record for expires, record in self._samples.get((kind, group), []) if expires > now]
        if limit is not None:
            live = live[max(0, len(live) - limit):]
        return live

    async def delete_samples(self, kind: SampleKind, group: str) -> int:
        self._check()
        now = self._clock()
        return sum(1 for expires, _ in self._samples.pop((kind, group), []) if expires > now)
