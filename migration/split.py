"""Which arm serves a request, and whether it is also copied to the other arm.

Every sticky key hashes to a bucket in [0, 10000). A migration's candidate serves
the buckets below its weight in basis points, so raising the weight only ever adds
buckets: a client that has moved to the candidate never flips back while the
rollout advances. Requests without a key fall back to a random draw from an
injected `rng`, so tests stay deterministic.

The hash is keyed blake2b over (salt, migration id, key): stable across processes,
replicas and Python versions (unlike `hash()`, which is randomised per process),
and different per migration, so the same clients are not always the first to try
every new model. The shadow decision uses the same input under a different
personalisation, which makes it independent of the split.

How the pieces combine per request (see `migration.rollout` for `shadow_to`):

    arm = choose_arm(weight_bp, key, salt, migration_id, rng)
    if arm != shadow_to and not names_excluded_tool(tools, exclude)
            and should_shadow(shadow_percent, key, salt, migration_id, rng):
        fire-and-forget a copy to `shadow_to`
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from migration.types import Arm

BUCKETS = 10_000
_SPLIT = b"cutover-split"
_SHADOW = b"cutover-shadow"


def _bucket(person: bytes, salt: str, migration_id: str, key: str) -> int:
    # NUL separators keep ("ab", "c") and ("a", "bc") apart; 64 bits make the
    # modulo bias toward low buckets negligible (~1e-15).
    data = b"\x00".join(part.encode("utf-8") for part in (salt, migration_id, key))
    digest = hashlib.blake2b(data, digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def bucket_of(salt: str, migration_id: str, sticky_key: str) -> int:
    """The key's split bucket in [0, 10000) for this migration."""
    return _bucket(_SPLIT, salt, migration_id, sticky_key)


def shadow_bucket_of(salt: str, migration_id: str, sticky_key: str) -> int:
    """The key's shadow bucket in [0, 10000), independent of `bucket_of`."""
    return _bucket(_SHADOW, salt, migration_id, sticky_key)


def sticky_key(header_value: str | None, user_field: str | None, client_key: str | None) -> str | None:
    """The first non-empty of: sticky header, the request body's `user`, the client key name."""
    for value in (header_value, user_field, client_key):
        if value:
            return value
    return None


def _in_share(share_bp: int, key: str | None, bucket: Callable[[str], int], rng: Callable[[], float]) -> bool:
    # The extremes never hash or draw: 0 is nobody and 10000 is everybody, exactly.
    if share_bp <= 0:
        return False
    if share_bp >= BUCKETS:
        return True
    drawn = int(rng() * BUCKETS) if key is None else bucket(key)
    return drawn < share_bp


def choose_arm(weight_bp: int, key: str | None, salt: str, migration_id: str, rng: Callable[[], float]) -> Arm:
    """Candidate for buckets below `weight_bp` (0..10000); a keyless request draws `rng()` in [0, 1)."""
    hit = _in_share(weight_bp, key, lambda k: bucket_of(salt, migration_id, k), rng)
    return "candidate" if hit else "baseline"


def should_shadow(percent: float, key: str | None, salt: str, migration_id: str, rng: Callable[[], float]) -> bool:
    """Is this request in the shadow share (`percent` of traffic, 0..100)?"""
    return _in_share(round(percent * 100), key, lambda k: shadow_bucket_of(salt, migration_id, k), rng)


def names_excluded_tool(tool_names: Iterable[str], exclude_tools: Iterable[str]) -> bool:
    """Does the request offer a tool with side effects? Such requests are never shadowed."""
    excluded = set(exclude_tools)
    return any(name in excluded for name in tool_names)
