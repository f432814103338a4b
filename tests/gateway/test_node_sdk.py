"""The official openai npm client (tests/node, installed by `make test`) against a gateway that translates
the Responses API and legacy completions for a chat-only upstream: Node's stream helper checks event order,
indexes and ids more strictly than Python's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import route, upstream
from tests.support import CLIENT_KEY

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    assert found, "node is not installed (the Makefile's test target installs what tests/node needs)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `npm ci` in tests/node (make test does)"
    return found


@pytest.mark.parametrize("dialects", [["chat"], ["chat", "completions", "responses"]],
                         ids=["translated", "passed-through"])
def test_responses_and_completions_through_the_node_sdk(
    node: str, make_sim: SimFactory, make_gateway: GatewayFactory, dialects: list[str]
) -> None:
    sim = make_sim(output_tokens=5)
    gw = make_gateway({"sim": {**upstream(sim), "dialects": dialects}}, {"assistant": route(("sim", "sim-model"))})
    done = subprocess.run([node, "sdk_checks.mjs", gw.base_url, CLIENT_KEY, "assistant"], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    text = "[simulated] lorem ipsum dolor sit"
    assert seen["create"]["status"] == "completed" and seen["create"]["text"] == text
    assert seen["create"]["usage"]["output_tokens"] == 5
    assert seen["rawStream"][0] == "response.created" and seen["rawStream"][-1] == "response.completed"
    assert seen["helperStream"]["text"] == seen["helperStream"]["deltas"] == text
    assert seen["toolCall"] == {"type": "function_call", "name": "weather", "arguments": '{"city":"simulated"}'}
    assert seen["retrieve"] == {"id": seen["helperStream"]["id"], "text": text}
    assert seen["afterDelete"] == 404
    assert seen["completion"] == {"object": "text_completion", "text": "[simulated] lorem ipsum dolor"}
    assert seen["completionStream"] == "[simulated] lorem ipsum"
    expected_paths = {"/v1/chat/completions"} if dialects == ["chat"] else {"/v1/responses", "/v1/completions"}
    assert {r.path for r in sim.requests} == expected_paths
