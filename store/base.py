"""The store interface. Values are plain JSON-able dicts; the store never interprets them.

Every state change is a compare-and-set on the migration's version together with the
audit entries that explain it, so a stale writer is refused and no transition is
recorded without its reason (or the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

RecordKind = Literal["response", "run"]
SampleKind = Literal["capture", "example"]


class StoreUnavailable(Exception):
    """The backing store cannot be reached; callers keep their last known state."""


class StoreNotWritable(StoreUnavailable):
    """The store refuses writes: no permission, a read-only filesystem or Redis replica, a full disk.

    An outage passes by itself and replicas ride it out on their last known state; this stays until
    someone fixes it, and meanwhile no migration can move, so /readyz reports the process not ready.
    """


@dataclass(frozen=True, slots=True)
class StoredMigration:
    id: str
    spec: dict[str, Any]
    state: dict[str, Any]
    version: int


class Store(Protocol):
    async def ping(self) -> bool: ...

    async def probe_write(self) -> None:
        """Write a throwaway record: StoreNotWritable if writes are refused, StoreUnavailable if unreachable."""
        ...

    async def close(self) -> None: ...

    async def list_migrations(self) -> list[StoredMigration]: ...

    async def get_migration(self, migration_id: str) -> StoredMigration | None: ...

    async def create_migration(self, migration: StoredMigration, audit: list[dict[str, Any]]) -> bool:
        """False when a migration with that id exists already."""
        ...

    async def commit(self, migration: StoredMigration, expected_version: int, audit: list[dict[str, Any]]) -> bool:
        """Replace the migration if its stored version is `expected_version`; append `audit` with it."""
        ...

    async def append_audit(self, migration_id: str, audit: list[dict[str, Any]]) -> None:
        """Records that change no state (an analysis tick that held the step)."""
        ...

    async def audit(self, migration_id: str) -> list[dict[str, Any]]: ...

    async def put_window(self, migration_id: str, step_key: str, replica: str, data: dict[str, Any]) -> None:
        """Each replica writes its own cumulative window; readers merge all of them."""
        ...

    async def windows(self, migration_id: str, step_key: str) -> list[dict[str, Any]]: ...

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew a lease; True while `holder` owns it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give a lease up early (graceful stop), if `holder` still owns it."""
        ...

    async def set_kill_switch(self, alias: str, on: bool) -> None: ...

    async def kill_switches(self) -> set[str]: ...

    # Opaque records kept for a retention time, by kind: "response" (stored Responses API answers and
    # their conversations, gateway.conversations) and "run" (plan-and-execute runs waiting for the
    # client's tool results, planner.rounds).

    async def put_record(self, kind: RecordKind, key: str, record: bytes, ttl_s: float) -> None: ...

    async def get_record(self, kind: RecordKind, key: str) -> bytes | None:
        """None when unknown or expired."""
        ...

    async def delete_record(self, kind: RecordKind, key: str) -> bool:
        """True when there was one to delete."""
        ...

    # Bounded, expiring, append-only lists of opaque records, by kind and group: "capture" (a sample of the
    # clients' requests to an alias, the group, replayed later against a migration's candidate) and "example"
    # (judged answer pairs kept for a migration, the group). Each record expires on its own (ttl_s from when
    # it was added) and each add keeps only the newest `keep` (at least 1), so neither traffic nor a
    # forgotten group grows a list without bound. Order is the order of the adds, across replicas too.

    async def add_sample(self, kind: SampleKind, group: str, record: bytes, ttl_s: float, keep: int) -> None:
        """Append `record` to the group's list; it expires after ttl_s. Expired entries go, and then all but the
        newest `keep`."""
        ...

    async def samples(self, kind: SampleKind, group: str, limit: int | None = None) -> list[bytes]:
        """The group's unexpired records, oldest first; with `limit`, only the newest `limit` of them (still
        oldest first)."""
        ...

    async def delete_samples(self, kind: SampleKind, group: str) -> int:
        """Drop the group's list; the number of unexpired records dropped."""
        ...


def check_sample_bounds(keep: int | None = None, limit: int | None = None) -> None:
    """The same refusal on every backend, before it touches its storage: a list must keep something, and a
    negative limit means nothing sensible (Python's slicing would read it as "all but")."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
