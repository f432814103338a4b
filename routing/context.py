"""What each target of a route is sent: the request with the target's model, fitted to its context window.

`ContextFitter.fit` prepares the payload for every target in order. A request
that cannot fit a target's window skips that target (`on_context_overflow:
error`) or loses its oldest non-system messages until it fits
(`truncate_oldest`); the first overflow is reported, so the edge can answer
400 when no target is left. An assistant message that made tool calls goes
together with the tool results answering it, because a tool message without its
call is an invalid request upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from metering.tokens import TokenCounter
from providers.dispatch import Outbound
from routing.table import Route

Message = dict[str, Any]

# Per-request framing tokens added on top of the messages (see metering.tokens).
_FRAMING = 3


@dataclass(frozen=True, slots=True)
class Fit:
    messages: list[Message]
    dropped: int
    prompt_tokens: int


def may_overflow(body_size: int, max_tokens: int, window: int) -> bool:
    """Cheap pre-check: every token covers at least one byte of the JSON body, so a
    body this small cannot overflow and the exact count can be skipped."""
    return body_size + _FRAMING + max_tokens > window


def _units(messages: Sequence[Message]) -> list[list[int]]:
    """Group droppable message indexes: an assistant tool-call message with its tool replies."""
    units: list[list[int]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            continue
        if role == "tool" and units and messages[units[-1][0]].get("tool_calls"):
            units[-1].append(index)
        else:
            units.append([index])
    return units


def fit_oldest_first(
    messages: Sequence[Message], budget: int, count_message: Callable[[Any], int]
) -> Fit | None:
    """Drop the oldest droppable units until the prompt fits `budget` tokens.

    Returns None when even the system messages plus the last unit do not fit.
    """
    counts = [count_message(m) for m in messages]
    total = _FRAMING + sum(counts)
    units = _units(messages)
    dropped: set[int] = set()
    # The newest unit is what the client is asking about; never drop it.
    for unit in units[:-1]:
        if total <= budget:
            break
        for index in unit:
            dropped.add(index)
            total -= counts[index]
    if total > budget:
        return None
    kept = [m for i, m in enumerate(messages) if i not in dropped]
    return Fit(messages=kept, dropped=len(dropped), prompt_tokens=total)


@dataclass(frozen=True, slots=True)
class Overflow:
    """The request does not fit a target's context window."""

    window: int
    prompt_tokens: int
    max_output_tokens: int


@dataclass(slots=True)
class Fitted:
    # The targets the request fits, in the route's order, each with what it is sent.
    outbound: Final[tuple[Outbound, ...]]
    # The first target it did not fit, if any.
    overflow: Final[Overflow | None]


class ContextFitter:
    """Pure, and safe to call from a worker thread: it only reads the window table and counts tokens."""

    __slots__ = ("_tokens", "_window")

    def __init__(self, context_window: Callable[[str, str], int | None], tokens: TokenCounter) -> None:
        self._window = context_window
        self._tokens = tokens

    def counts(self, route: Route, count_messages: bool, body_size: int, max_output_tokens: int) -> bool:
        """Whether `fit` will count the prompt's tokens exactly: some target's window is not clearly enough."""
        if not count_messages:
            return False
        for target in route.targets:
            window = self._window(target.provider, target.model)
            if window is not None and may_overflow(body_size, max_output_tokens, window):
                return True
        return False

    def fit(
        self, route: Route, payload: Mapping[str, Any], stream: bool, count_messages: bool, body_size: int,
        max_output_tokens: int,
    ) -> Fitted:
        """`count_messages`: the payload has chat messages to fit (embeddings do not)."""
        outbound: list[Outbound] = []
        overflow: Overflow | None = None
        prompt: int | None = None
        for target in route.targets:
            body = dict(payload)
            body["model"] = target.model
            if stream:
                # Ask for usage even when the client did not, so cost is always known.
                body["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
            window = self._window(target.provider, target.model)
            if not count_messages or window is None or not may_overflow(body_size, max_output_tokens, window):
                outbound.append(Outbound(target, body))
                continue
            if prompt is None:
                prompt = self._tokens.count_prompt(payload)
            if prompt + max_output_tokens <= window:
                outbound.append(Outbound(target, body))
                continue
            if route.on_context_overflow == "truncate_oldest":
                fit = fit_oldest_first(payload["messages"], window - max_output_tokens, self._tokens.count_message)
                if fit is not None:
                    body["messages"] = fit.messages
                    outbound.append(Outbound(target, body, fit.dropped))
                    continue
            overflow = overflow or Overflow(window, prompt, max_output_tokens)
        return Fitted(tuple(outbound), overflow)
