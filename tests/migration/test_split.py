"""Sticky bucketing: stable everywhere, monotone in the weight, shadow independent of the split."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from migration.split import (
    BUCKETS,
    bucket_of,
    choose_arm,
    names_excluded_tool,
    shadow_bucket_of,
    should_shadow,
    sticky_key,
)

ROOT = Path(__file__).resolve().parents[2]
KEYS = [f"user-{i}" for i in range(5000)]
SALT, MIGRATION = "s3cret", "mig-gpt4o-to-sonnet"


def never() -> float:
    raise AssertionError("a keyed request must not draw from the rng")


def test_buckets_are_in_range_and_spread() -> None:
    buckets = [bucket_of(SALT, MIGRATION, k) for k in KEYS]
    assert all(0 <= b < BUCKETS for b in buckets)
    # Each decile holds about a tenth of 5000 keys.
    deciles = [sum(1 for b in buckets if d * 1000 <= b < (d + 1) * 1000) for d in range(10)]
    assert all(400 <= n <= 600 for n in deciles), deciles


def test_golden_values_pin_the_scheme() -> None:
    # Replicas on different releases must agree: changing the hash is a breaking change.
    assert [bucket_of("salt", "m1", k) for k in ("alice", "bob", "")] == [513, 7911, 2238]
    assert [shadow_bucket_of("salt", "m1", k) for k in ("alice", "bob", "")] == [8408, 5699, 9349]


def test_same_bucket_in_a_fresh_process_with_another_hash_seed() -> None:
    code = (
        "from migration.split import bucket_of, shadow_bucket_of\n"
        f"keys = {KEYS[:200]!r}\n"
        f"print([bucket_of({SALT!r}, {MIGRATION!r}, k) for k in keys])\n"
        f"print([shadow_bucket_of({SALT!r}, {MIGRATION!r}, k) for k in keys])\n"
    )
    here_split = [bucket_of(SALT, MIGRATION, k) for k in KEYS[:200]]
    here_shadow = [shadow_bucket_of(SALT, MIGRATION, k) for k in KEYS[:200]]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        lines = out.stdout.splitlines()
        assert lines == [repr(here_split), repr(here_shadow)]


def test_inputs_are_separated() -> None:
    # ("ab", "c") and ("a", "bc") must not collide by concatenation.
    joined = [bucket_of("ab", "c", k) for k in KEYS[:100]]
    assert joined != [bucket_of("a", "bc", k) for k in KEYS[:100]]
    other = [bucket_of(SALT, "another-migration", k) for k in KEYS[:500]]
    assert other != [bucket_of(SALT, MIGRATION, k) for k in KEYS[:500]]


@pytest.mark.parametrize(
    ("header", "user", "client", "expected"),
    [
        ("h", "u", "c", "h"),
        (None, "u", "c", "u"),
        ("", "u", "c", "u"),
        (None, None, "c", "c"),
        (None, "", "", None),
        (None, None, None, None),
    ],
)
def test_sticky_key_takes_the_first_present(
    header: str | None, user: str | None, client: str | None, expected: str | None
) -> None:
    assert sticky_key(header, user, client) == expected


def test_raising_the_weight_only_adds_keys_to_the_candidate() -> None:
    previous: set[str] = set()
    for weight in [0, 10, 500, 1000, 2500, 5000, 7500, 9999, 10000]:
        chosen = {k for k in KEYS if choose_arm(weight, k, SALT, MIGRATION, never) == "candidate"}
        assert previous <= chosen, "a key flipped back to the baseline"
        assert abs(len(chosen) - len(KEYS) * weight / BUCKETS) <= 0.03 * len(KEYS)
        previous = chosen
    assert len(previous) == len(KEYS)


def test_same_inputs_same_arm_on_every_replica() -> None:
    replica_a = [choose_arm(2500, k, SALT, MIGRATION, never) for k in KEYS]
    replica_b = [choose_arm(2500, k, SALT, MIGRATION, never) for k in KEYS]
    assert replica_a == replica_b


def test_extremes_are_exact_and_never_draw() -> None:
    assert all(choose_arm(0, k, SALT, MIGRATION, never) == "baseline" for k in KEYS[:100])
    assert all(choose_arm(10000, k, SALT, MIGRATION, never) == "candidate" for k in KEYS[:100])
    assert choose_arm(0, None, SALT, MIGRATION, never) == "baseline"
    assert choose_arm(10000, None, SALT, MIGRATION, never) == "candidate"
    assert not should_shadow(0, None, SALT, MIGRATION, never)
    assert should_shadow(100, "k", SALT, MIGRATION, never)


def test_keyless_requests_use_the_injected_rng() -> None:
    assert choose_arm(2500, None, SALT, MIGRATION, lambda: 0.2499) == "candidate"
    assert choose_arm(2500, None, SALT, MIGRATION, lambda: 0.25) == "baseline"
    rng = random.Random(7)
    share = sum(choose_arm(2500, None, SALT, MIGRATION, rng.random) == "candidate" for _ in range(20000)) / 20000
    assert 0.24 < share < 0.26
    assert should_shadow(10, None, SALT, MIGRATION, lambda: 0.05)
    assert not should_shadow(10, None, SALT, MIGRATION, lambda: 0.1)


def test_shadow_share_and_independence_from_the_split() -> None:
    shadowed = {k for k in KEYS if should_shadow(10, k, SALT, MIGRATION, never)}
    canary = {k for k in KEYS if choose_arm(2500, k, SALT, MIGRATION, never) == "candidate"}
    assert abs(len(shadowed) - 500) < 75
    # Independent: about 10 % of the canary keys are also in the shadow share.
    overlap = len(shadowed & canary) / len(canary)
    assert 0.07 < overlap < 0.13
    # Monotone in the percent as well.
    assert shadowed <= {k for k in KEYS if should_shadow(20, k, SALT, MIGRATION, never)}


def test_tools_with_side_effects_are_never_shadowed() -> None:
    assert names_excluded_tool(["search", "send_email"], ["send_email", "charge_card"])
    assert not names_excluded_tool(["search"], ["send_email"])
    assert not names_excluded_tool([], ["send_email"])
