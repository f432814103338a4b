"""An agent framework as the client, unchanged: LangChain's tool-calling agent against the meta-model.

The planner (a simulator with a fixed reply) plans two weather lookups through the client's tool and
a comparison on the cheap executor. LangChain's agent sends its `@tool` as an ordinary OpenAI tool,
gets both lookups back as one parallel batch of tool calls, runs them, sends the results back as
"tool" messages and receives the joiner's answer, exactly as it would from any model.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI

from tests.planner.conftest import CHEAP_M, JOINER_ANSWER, META, Rig, RigFactory, user_text
from tests.planner.test_meta_client_tools import FORECAST, QUESTION, weather_plan
from tests.support import CLIENT_KEY


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracing or telemetry: LangChain must not try to reach LangSmith."""
    for name in ("LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING", "LANGSMITH_TRACING", "LANGSMITH_TRACING_V2"):
        monkeypatch.setenv(name, "false")
    for name in ("LANGCHAIN_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_ENDPOINT", "LANGSMITH_ENDPOINT",
                 "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_ORGANIZATION", "OPENAI_PROXY"):
        monkeypatch.delenv(name, raising=False)


def weather_tool() -> tuple[BaseTool, list[str]]:
    """`get_weather(city)` returning the fixed forecast; records every call (the agent may run them in threads)."""
    calls: list[str] = []
    lock = threading.Lock()

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        with lock:
            calls.append(city)
        return FORECAST[city]

    return get_weather, calls


def chat_model(rig: Rig, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model=META, base_url=rig.gw.base_url, api_key=CLIENT_KEY,  # type: ignore[arg-type]
                      max_retries=0, timeout=30, **kwargs)


def check_run(rig: Rig, messages: list[Any], calls: list[str]) -> None:
    # The conversation the agent built: question, one parallel batch of two calls, two results, answer.
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, ToolMessage, ToolMessage, AIMessage]
    batch = messages[1]
    assert [c["name"] for c in batch.tool_calls] == ["get_weather", "get_weather"]
    assert sorted(c["args"]["city"] for c in batch.tool_calls) == ["Berlin", "Paris"]
    assert {m.tool_call_id for m in messages[2:4]} == {c["id"] for c in batch.tool_calls}
    final = messages[-1]
    assert not final.tool_calls
    assert final.content == JOINER_ANSWER
    # LangChain ran the whole batch: each city exactly once.
    assert sorted(calls) == ["Berlin", "Paris"]
    # The results reached the plan: the comparison ran once and saw both forecasts.
    compare = [r for r in rig.requests(CHEAP_M) if "Compare the two forecasts" in user_text(r)]
    assert len(compare) == 1
    assert FORECAST["Paris"] in user_text(compare[0]) and FORECAST["Berlin"] in user_text(compare[0])
    # One plan for the whole run, one joiner call at the end.
    assert len(rig.ok_requests("planner-m")) == 1
    assert len(rig.ok_requests("joiner-m")) == 1


def test_langchain_agent_runs_the_parallel_batch_and_gets_the_answer(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    get_weather, calls = weather_tool()
    agent = create_agent(chat_model(rig), tools=[get_weather])
    result = agent.invoke({"messages": [{"role": "user", "content": QUESTION}]})
    check_run(rig, result["messages"], calls)


def test_langchain_agent_streaming(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    get_weather, calls = weather_tool()
    agent = create_agent(chat_model(rig, streaming=True), tools=[get_weather])
    state: dict[str, Any] = {}
    streamed: list[str] = []
    for mode, chunk in agent.stream({"messages": [{"role": "user", "content": QUESTION}]},
                                    stream_mode=["messages", "values"]):
        if mode == "values":
            state = chunk
        else:
            message, _ = chunk
            if isinstance(message, AIMessageChunk) and isinstance(message.content, str):
                streamed.append(message.content)
    check_run(rig, state["messages"], calls)
    # The answer arrived token by token through the agent's message stream.
    assert "".join(streamed) == JOINER_ANSWER
    assert len([s for s in streamed if s]) > 1
