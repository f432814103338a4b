"""Pure-logic tests: settings validation, fault decision, wire helpers."""

from __future__ import annotations

import base64
import random
import struct
from collections import Counter

import orjson
import pytest
from pydantic import ValidationError

from simulator import FAULT_KINDS, SimulationSettings, decide_outcome, estimate_prompt_tokens
from simulator.wire import (
    ChunkFramer,
    ReplyPlan,
    embedding_vector,
    encode_embedding,
    generated_pieces,
    split_pieces,
)


def test_defaults_are_fault_free_and_equal_weighted() -> None:
    settings = SimulationSettings()
    assert settings.error_rate == 0
    assert settings.output_tokens == 16
    assert set(settings.error_kinds) == set(FAULT_KINDS)
    assert len(set(settings.error_kinds.values())) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"first_token_ms": -1},
        {"per_token_ms": -0.1},
        {"jitter_ms": -5},
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"output_tokens": -1},
        {"error_kinds": {"nonsense": 1.0}},
        {"error_kinds": {"rate_limit": -1.0}},
        {"error_rate": 0.5, "error_kinds": {"rate_limit": 0.0}},
        {"script": ["ok", "explode"]},
        {"unknown_field": True},
        {"embedding_dims": 0},
    ],
)
def test_invalid_settings_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimulationSettings.model_validate(bad)


def test_settings_are_frozen() -> None:
    settings = SimulationSettings()
    with pytest.raises(ValidationError):
        settings.output_tokens = 3  # type: ignore[misc]


def test_script_wins_then_error_rate_applies() -> None:
    settings = SimulationSettings(
        script=["rate_limit", "ok", "garbage"], error_rate=1.0, error_kinds={"server_error": 1.0}
    )
    rng = random.Random(0)
    outcomes = [decide_outcome(rng, settings, pos) for pos in range(5)]
    assert outcomes == ["rate_limit", "ok", "garbage", "server_error", "server_error"]


def test_no_errors_never_touches_rng() -> None:
    rng = random.Random(42)
    before = rng.getstate()
    assert decide_outcome(rng, SimulationSettings(), 0) == "ok"
    assert rng.getstate() == before


def test_error_rate_and_weights_are_respected() -> None:
    settings = SimulationSettings(error_rate=0.5, error_kinds={"rate_limit": 3.0, "unavailable": 1.0})
    rng = random.Random(7)
    counts = Counter(decide_outcome(rng, settings, 0) for _ in range(20000))
    assert set(counts) == {"ok", "rate_limit", "unavailable"}
    assert 0.45 < counts["ok"] / 20000 < 0.55
    assert 2.5 < counts["rate_limit"] / counts["unavailable"] < 3.5


def test_seeded_decisions_are_reproducible() -> None:
    settings = SimulationSettings(error_rate=0.3)
    rng_a, rng_b = random.Random(9), random.Random(9)
    assert [decide_outcome(rng_a, settings, 0) for _ in range(50)] == [
        decide_outcome(rng_b, settings, 0) for _ in range(50)
    ]


def test_prompt_token_estimate_formula() -> None:
    messages = [
        {"role": "system", "content": "abcd"},  # 4 + 1
        {"role": "user", "content": [{"type": "text", "text": "abcde"}, {"type": "image_url"}]},  # 4 + 2
        {"role": "assistant", "content": None},  # 4 + 0
    ]
    assert estimate_prompt_tokens(messages) == 15


def test_pieces_round_trip_and_generated_marker() -> None:
    text = '  {"plan": [1, 2]}\n next  '
    assert "".join(split_pieces(text)) == text
    pieces = generated_pieces(5)
    assert len(pieces) == 5
    assert pieces[0] == "[simulated]"
    assert generated_pieces(0) == []


def test_chunk_frames_are_valid_json() -> None:
    plan = ReplyPlan.from_pieces(['say "hi"\n', "ünï"])
    framer = ChunkFramer(completion_id="chatcmpl-sim-x", created=1, model='m"odel', include_usage=True)
    frames = [framer.role(), *(framer.content(c) for c in plan.choice_bytes), framer.finish("stop")]
    decoded = [orjson.loads(frame.removeprefix(b"data: ").removesuffix(b"\n\n")) for frame in frames]
    assert [d["model"] for d in decoded] == ['m"odel'] * 4
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in decoded) == plan.content
    assert all(d["usage"] is None for d in decoded)
    usage = orjson.loads(framer.usage({"total_tokens": 1})[6:])
    assert usage["choices"] == [] and usage["usage"] == {"total_tokens": 1}


def test_embeddings_deterministic_unit_vectors() -> None:
    vec = embedding_vector("hello", 16)
    assert vec == embedding_vector("hello", 16)
    assert vec != embedding_vector("hellp", 16)
    assert abs(sum(x * x for x in vec) - 1.0) < 1e-9
    packed = base64.b64decode(encode_embedding(vec, "base64"))  # type: ignore[arg-type]
    assert struct.unpack("<16f", packed) == pytest.approx(vec, abs=1e-6)
