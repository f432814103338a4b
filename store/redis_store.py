"""Redis store, shared by gateway replicas.

Keys live under one prefix. A migration is a hash {spec, state, version}; a commit is
a Lua compare-and-set that also appends the audit entries, so the two never diverge.
Every Redis error surfaces as StoreUnavailable: replicas then keep serving with the
state they last saw. A Redis that answers but refuses writes (a read-only replica, maxmemory
reached, failed snapshots, an ACL) raises StoreNotWritable, which fails readiness.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

from store.base import (
    RecordKind,
    SampleKind,
    StoredMigration,
    StoreNotWritable,
    StoreUnavailable,
    check_sample_bounds,
)

_COMMIT = """
local current = redis.call('HGET', KEYS[1], 'version')
if not current or tonumber(current) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'state', ARGV[3], 'version', ARGV[4])
for i = 5, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
return 1
"""

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'state', ARGV[2], 'version', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
for i = 5, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# Error replies of a Redis that refuses writes: failed RDB snapshots (stop-writes-on-bgsave-error) and too few
# replicas (min-replicas-to-write). READONLY, OOM and NOPERM have their own exception classes.
_REFUSED_REPLIES = ("MISCONF", "NOREPLICAS")

_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


# A sample list is two sorted sets. KEYS[1] holds the records in the order of the adds: member
# <16 hex digits of seq><record> (the seq also keeps two equal records apart), score seq. KEYS[2] holds
# each record's expiry: member <16 hex digits of seq>, score the expiry in the client's seconds. KEYS[3] is
# the counter that numbers the adds of every list; the seq, not a clock, orders them, so two adds in the
# same tick or from replicas with skewed clocks keep their order. Records are stored once, and an add
# reads none of them back except the ones it trims (one, usually).
# ARGV: now, expires_at, keep, record.
_ADD_SAMPLE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, tag in ipairs(expired) do
    local seq = tonumber(tag, 16)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], seq, seq)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1]) end
local seq = redis.call('INCR', KEYS[3])
local tag = string.format('%016x', seq)
redis.call('ZADD', KEYS[1], seq, tag .. ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], tag)
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
        redis.call('ZREM', KEYS[2], string.sub(old, 1, 16))
    end
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
end
-- The list outlives its last record by a little, and then goes by itself.
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local ttl_ms = math.ceil((tonumber(last[2]) - tonumber(ARGV[1])) * 1000) + 1000
-- Bounded so that Lua prints it as an integer (a retention of millennia is as good as forever).
ttl_ms = math.min(math.max(ttl_ms, 1), 2 ^ 46)
redis.call('PEXPIRE', KEYS[1], ttl_ms)
redis.call('PEXPIRE', KEYS[2], ttl_ms)
return 1
"""

_SEQ_HEX = 16


class RedisStore:
    def __init__(
        self, url: str, prefix: str = "cutover", timeout_s: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        # Wall clock seconds, the same on every replica (give or take their skew): sample expiries are compared
        # with other replicas' clocks. Redis's own TIME would not replicate the same inside a script.
        self._clock = clock
        self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._p = prefix
        self._commit = self._redis.register_script(_COMMIT)
        self._create = self._redis.register_script(_CREATE)
        self._lease = self._redis.register_script(_LEASE)
        self._release = self._redis.register_script(_RELEASE)
        self._add_sample = self._redis.register_script(_ADD_SAMPLE)

    def _key(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()

    async def probe_write(self) -> None:
        # Expiring, so the key does not outlive the replicas that write it.
        await self._call(lambda: self._redis.set(self._key("write_probe"), b"1", px=60_000))

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        try:
            try:
                return await command()
            except RedisConnectionError:
                # After a Redis restart every pooled connection is dead, and each would fail
                # one call before being replaced: drop them all and try once more.
                await self._redis.connection_pool.disconnect()
                return await command()
        except (RedisError, OSError) as exc:
            # The class name only: a message can carry the server's address, and the URL its password.
            refused = isinstance(exc, ReadOnlyError | OutOfMemoryError | NoPermissionError) or (
                isinstance(exc, ResponseError) and str(exc).startswith(_REFUSED_REPLIES)
            )
            raise (StoreNotWritable if refused else StoreUnavailable)(f"redis store: {type(exc).__name__}") from None

    async def list_migrations(self) -> list[StoredMigration]:
        ids = await self._call(lambda: self._redis.smembers(self._key("migrations")))
        found = [await self.get_migration(i.decode()) for i in sorted(ids)]
        return [m for m in found if m is not None]

    async def get_migration(self, migration_id: str) -> StoredMigration | None:
        data = await self._call(lambda: self._redis.hgetall(self._key("migration", migration_id)))
        if not data:
            return None
        return StoredMigration(
            id=migration_id, spec=orjson.loads(data[b"spec"]), state=orjson.loads(data[b"state"]),
            version=int(data[b"version"]),
        )

    async def create_migration(self, migration: StoredMigration, audit: list[dict[str, Any]]) -> bool:
        result = await self._call(lambda: self._create(
            keys=[self._key("migration", migration.id), self._key("audit", migration.id), self._key("migrations")],
            args=[orjson.dumps(migration.spec), orjson.dumps(migration.state), migration.version, migration.id,
                  *(orjson.dumps(e) for e in audit)],
        ))
        return bool(result)

    async def commit(self, migration: StoredMigration, expected_version: int, audit: list[dict[str, Any]]) -> bool:
        result = await self._call(lambda: self._commit(
            keys=[self._key("migration", migration.id), self._key("audit", migration.id)],
            args=[expected_version, orjson.dumps(migration.spec), orjson.dumps(migration.state), migration.version,
                  *(orjson.dumps(e) for e in audit)],
        ))
        return bool(result)

    async def append_audit(self, migration_id: str, audit: list[dict[str, Any]]) -> None:
        if audit:
            rows = [orjson.dumps(e) for e in audit]
            await self._call(lambda: self._redis.rpush(self._key("audit", migration_id), *rows))

    async def audit(self, migration_id: str) -> list[dict[str, Any]]:
        rows = await self._call(lambda: self._redis.lrange(self._key("audit", migration_id), 0, -1))
        return [orjson.loads(r) for r in rows]

    async def put_window(self, migration_id: str, step_key: str, replica: str, data: dict[str, Any]) -> None:
        key = self._key("window", migration_id, step_key)

        def write() -> Awaitable[Any]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(key, replica, orjson.dumps(data))
            # Old steps' windows expire on their own; a week outlives any analysis of them.
            pipe.expire(key, 86_400 * 7)
            return pipe.execute()

        await self._call(write)

    async def windows(self, migration_id: str, step_key: str) -> list[dict[str, Any]]:
        rows = await self._call(lambda: self._redis.hvals(self._key("window", migration_id, step_key)))
        return [orjson.loads(r) for r in rows]

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        key, ttl_ms = self._key("lease", name), int(ttl_s * 1000)
        result = await self._call(lambda: self._lease(keys=[key], args=[holder, ttl_ms]))
        return bool(result)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call(lambda: self._release(keys=[self._key("lease", name)], args=[holder]))

    async def set_kill_switch(self, alias: str, on: bool) -> None:
        key = self._key("kill_switches")
        await self._call(lambda: self._redis.sadd(key, alias) if on else self._redis.srem(key, alias))

    async def kill_switches(self) -> set[str]:
        rows = await self._call(lambda: self._redis.smembers(self._key("kill_switches")))
        return {r.decode() for r in rows}

    async def put_record(self, kind: RecordKind, key: str, record: bytes, ttl_s: float) -> None:
        name = self._key(kind, key)
        await self._call(lambda: self._redis.set(name, record, px=max(1, int(ttl_s * 1000))))

    async def get_record(self, kind: RecordKind, key: str) -> bytes | None:
        found = await self._call(lambda: self._redis.get(self._key(kind, key)))
        return bytes(found) if found is not None else None

    async def delete_record(self, kind: RecordKind, key: str) -> bool:
        return bool(await self._call(lambda: self._redis.delete(self._key(kind, key))))

    def _sample_keys(self, kind: SampleKind, group: str) -> tuple[str, str]:
        return self._key("samples", kind, group), self._key("sample-expiry", kind, group)

    async def add_sample(self, kind: SampleKind, group: str, record: bytes, ttl_s: float, keep: int) -> None:
        check_sample_bounds(keep=keep)
        now = self._clock()
        keys = [*self._sample_keys(kind, group), self._key("sample-seq")]
        # repr() round-trips a float exactly, so Redis compares the very numbers the other backends would.
        await self._call(lambda: self._add_sample(keys=keys, args=[repr(now), repr(now + ttl_s), keep, record]))

    async def samples(self, kind: SampleKind, group: str, limit: int | None = None) -> list[bytes]:
        check_sample_bounds(limit=limit)
        now = self._clock()
        records, expiries = self._sample_keys(kind, group)

        def read() -> Awaitable[Any]:
            # MULTI/EXEC: both reads see the same list, and a read-only replica still answers it.
            pipe = self._redis.pipeline(transaction=True)
            pipe.zrange(records, 0, -1)
            pipe.zrangebyscore(expiries, "-inf", repr(now))
            return pipe.execute()

        members, expired = await self._call(read)
        gone = set(expired)
        live = [bytes(m[_SEQ_HEX:]) for m in members if m[:_SEQ_HEX] not in gone]
        if limit is not None:
            live = live[max(0, len(live) - limit):]
        return live

    async def delete_samples(self, kind: SampleKind, group: str) -> int:
        now = self._clock()
        records, expiries = self._sample_keys(kind, group)

        def delete() -> Awaitable[Any]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zcount(expiries, f"({now!r}", "+inf")
            pipe.delete(records, expiries)
            return pipe.execute()

        live, _ = await self._call(delete)
        return int(live)
