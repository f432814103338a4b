"""Context fitting (oldest first, tool calls kept with their replies) and alias lookup."""

from __future__ import annotations

from typing import Any

import pytest

from config.schema import ModelRoute
from providers.target import TargetRef
from routing.context import fit_oldest_first as fit
from routing.context import may_overflow
from routing.table import RouteTable

FRAMING = 3  # routing.context adds this on top of the messages


def cost(message: Any) -> int:
    """Each message costs its declared 'tokens', so budgets are easy to reason about."""
    return int(message["tokens"])


def msg(role: str, tokens: int, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": f"{role}-{tokens}", "tokens": tokens, **extra}


def test_everything_fits_nothing_dropped() -> None:
    messages = [msg("system", 5), msg("user", 10), msg("assistant", 10), msg("user", 10)]
    result = fit(messages, FRAMING + 35, cost)
    assert result is not None
    assert result.messages == messages
    assert result.dropped == 0
    assert result.prompt_tokens == FRAMING + 35


def test_drops_oldest_first_and_keeps_system_and_newest() -> None:
    system = msg("system", 5)
    old_user, old_reply = msg("user", 10), msg("assistant", 10)
    mid_user, mid_reply = msg("user", 11), msg("assistant", 11)
    newest = msg("user", 20)
    messages = [system, old_user, old_reply, mid_user, mid_reply, newest]
    # Room for system + newest + the two middle messages only.
    result = fit(messages, FRAMING + 5 + 20 + 22, cost)
    assert result is not None
    assert result.messages == [system, mid_user, mid_reply, newest]
    assert result.dropped == 2
    assert result.prompt_tokens == FRAMING + 47


def test_system_messages_anywhere_are_kept() -> None:
    messages = [msg("user", 50), msg("developer", 4), msg("user", 50), msg("system", 4), msg("user", 10)]
    result = fit(messages, FRAMING + 18, cost)
    assert result is not None
    assert [m["role"] for m in result.messages] == ["developer", "system", "user"]
    assert result.messages[-1] is messages[-1]


def test_tool_calls_dropped_together_with_their_replies() -> None:
    call = msg("assistant", 5, tool_calls=[{"id": "c1"}, {"id": "c2"}])
    reply1 = msg("tool", 30, tool_call_id="c1")
    reply2 = msg("tool", 30, tool_call_id="c2")
    after = msg("assistant", 5)
    newest = msg("user", 5)
    messages = [msg("user", 5), call, reply1, reply2, after, newest]
    # Dropping message by message would stop after reply1 and leave reply2 answering a call that is gone.
    result = fit(messages, FRAMING + 5 + 5 + 40, cost)
    assert result is not None
    assert result.messages == [after, newest]
    assert result.dropped == 4
    assert not any(m["role"] == "tool" for m in result.messages)


def test_newest_unit_with_tool_replies_is_never_split() -> None:
    call = msg("assistant", 5, tool_calls=[{"id": "c1"}])
    reply = msg("tool", 5, tool_call_id="c1")
    messages = [msg("system", 1), msg("user", 100), call, reply]
    result = fit(messages, FRAMING + 11, cost)
    assert result is not None
    assert result.messages == [messages[0], call, reply]


def test_tool_message_without_call_is_its_own_unit() -> None:
    stray = msg("tool", 5, tool_call_id="x")
    messages = [msg("assistant", 5), stray, msg("user", 5)]
    result = fit(messages, FRAMING + 10, cost)
    assert result is not None
    assert result.messages == [stray, messages[2]]


def test_none_when_system_and_newest_do_not_fit() -> None:
    messages = [msg("system", 50), msg("user", 1), msg("user", 60)]
    assert fit(messages, FRAMING + 109, cost) is None
    fitted = fit(messages, FRAMING + 110, cost)
    assert fitted is not None
    assert fitted.messages == [messages[0], messages[2]]


def test_single_message_too_big() -> None:
    assert fit([msg("user", 10)], FRAMING + 9, cost) is None
    assert fit([msg("user", 10)], FRAMING + 10, cost) is not None


def test_fit_does_not_mutate_input() -> None:
    messages = [msg("user", 10), msg("user", 10)]
    snapshot = [dict(m) for m in messages]
    fit(messages, FRAMING + 10, cost)
    assert messages == snapshot


@pytest.mark.parametrize(
    ("body", "max_tokens", "window", "expected"),
    [
        (100, 0, 200, False),
        (100, 97, 200, False),  # exactly at the window still fits
        (100, 98, 200, True),
        (300, 0, 200, True),
    ],
)
def test_may_overflow(body: int, max_tokens: int, window: int, expected: bool) -> None:
    assert may_overflow(body, max_tokens, window) is expected


def _table() -> RouteTable:
    target = [{"provider": "agg", "model": "deepseek-v3.2"}]
    return RouteTable(
        {
            alias: ModelRoute.model_validate({"targets": target})
            for alias in ("gpt-4", "gpt-4-turbo", "claude-3-sonnet", "gemini-pro", "GPT-4o")
        }
    )


def test_route_lookup() -> None:
    table = _table()
    route = table.get("gpt-4")
    assert route is not None
    assert route.alias == "gpt-4"
    assert route.targets == (TargetRef("agg", "deepseek-v3.2"),)
    assert route.targets[0].key == "agg/deepseek-v3.2"
    assert route.on_context_overflow == "error"
    assert table.get("gpt-5") is None
    assert table.aliases() == ["gpt-4", "gpt-4-turbo", "claude-3-sonnet", "gemini-pro", "GPT-4o"]


def test_route_keeps_target_order() -> None:
    route = ModelRoute.model_validate(
        {"targets": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "y"}],
         "on_context_overflow": "truncate_oldest"}
    )
    resolved = RouteTable({"m": route}).get("m")
    assert resolved is not None
    assert [t.key for t in resolved.targets] == ["a/x", "b/y"]
    assert resolved.on_context_overflow == "truncate_oldest"


def test_nearest_aliases() -> None:
    table = _table()
    assert table.nearest("gpt4")[0] == "gpt-4"
    assert "claude-3-sonnet" in table.nearest("claude-3-sonet")
    # Case-insensitive match, original spelling returned.
    assert "GPT-4o" in table.nearest("gpt-4O")
    assert table.nearest("llama-70b") == []
    assert len(table.nearest("gpt-4", limit=2)) == 2
