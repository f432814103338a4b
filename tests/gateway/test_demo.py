"""`cutover demo` still tells its story: a healthy candidate promoted, a degraded one rolled back."""

from __future__ import annotations

import io

import pytest

from gateway.demo import run_demo


@pytest.mark.timeout(240)
async def test_the_demo_promotes_then_rolls_back_a_degraded_candidate() -> None:
    out = io.StringIO()
    assert await run_demo("error", {1, 2}, out=out) == 0, out.getvalue()[-3000:]
    text = out.getvalue()
    assert "scenario 1: promoted" in text and "scenario 2: rolled_back" in text, text[-3000:]


@pytest.mark.timeout(240)
async def test_the_demo_rolls_back_a_candidate_that_answers_worse_on_the_quality_gate() -> None:
    out = io.StringIO()
    assert await run_demo("quality", {2}, out=out) == 0, out.getvalue()[-3000:]
    text = out.getvalue()
    assert "scenario 2: rolled_back" in text and "quality_win_rate (step)" in text, text[-3000:]
