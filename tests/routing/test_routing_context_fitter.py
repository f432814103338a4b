"""ContextFitter: what each target of a route is sent, fitted to that target's context window."""

from __future__ import annotations

from typing import Any

from metering.tokens import TokenCounter
from providers.target import TargetRef
from routing.context import ContextFitter, Overflow
from routing.table import Route

SMALL = TargetRef("a", "small")
LARGE = TargetRef("b", "large")
UNPRICED = TargetRef("c", "unpriced")
WINDOWS = {("a", "small"): 60, ("b", "large"): 10_000}


class CountingTokens(TokenCounter):
    """Each message costs its declared 'tokens'; counts how often the whole prompt is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts = 0

    def count_message(self, message: Any) -> int:
        return int(message["tokens"])

    def count_prompt(self, payload: Any) -> int:
        self.prompts += 1
        return 3 + sum(self.count_message(m) for m in payload["messages"])


def fitter(tokens: TokenCounter | None = None) -> ContextFitter:
    return ContextFitter(lambda provider, model: WINDOWS.get((provider, model)), tokens or CountingTokens())


def payload(*tokens: int, **extra: Any) -> dict[str, Any]:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": "x" * 10, "tokens": t} for i, t in enumerate(tokens)]
    return {"model": "alias", "messages": messages, **extra}


def fit(route: Route, body: dict[str, Any], *, stream: bool = False, body_size: int = 10_000,
        max_out: int = 10, counter: TokenCounter | None = None) -> Any:
    return fitter(counter).fit(route, body, stream=stream, count_messages=True, body_size=body_size,
                               max_output_tokens=max_out)


def test_every_target_gets_its_own_model_and_the_client_payload_is_untouched() -> None:
    body = payload(5, temperature=0.2)
    fitted = fit(Route("alias", (SMALL, LARGE, UNPRICED), "error"), body)
    assert [(o.target, o.payload["model"], o.dropped_messages) for o in fitted.outbound] == [
        (SMALL, "small", 0), (LARGE, "large", 0), (UNPRICED, "unpriced", 0),
    ]
    assert all(o.payload["temperature"] == 0.2 for o in fitted.outbound)
    assert fitted.overflow is None
    assert body["model"] == "alias" and "stream_options" not in body


def test_streams_always_ask_for_usage_and_keep_the_clients_options() -> None:
    body = payload(5, stream=True, stream_options={"include_usage": False, "other": 1})
    [out] = fit(Route("alias", (LARGE,), "error"), body, stream=True).outbound
    assert out.payload["stream_options"] == {"include_usage": True, "other": 1}
    assert body["stream_options"] == {"include_usage": False, "other": 1}


def test_a_small_body_is_never_counted() -> None:
    counter = CountingTokens()
    fitted = fit(Route("alias", (SMALL,), "error"), payload(500), body_size=20, max_out=10, counter=counter)
    assert [o.target for o in fitted.outbound] == [SMALL] and counter.prompts == 0


def test_a_target_too_small_is_skipped_and_the_first_overflow_reported() -> None:
    counter = CountingTokens()
    fitted = fit(Route("alias", (SMALL, LARGE), "error"), payload(40, 40), counter=counter)
    assert [o.target for o in fitted.outbound] == [LARGE]
    assert fitted.overflow == Overflow(window=60, prompt_tokens=83, max_output_tokens=10)
    assert counter.prompts == 1  # counted once for the request, whatever the number of targets


def test_truncate_oldest_drops_for_the_small_target_only() -> None:
    body = payload(30, 30, 20)  # 83 tokens with the framing; 50 left for the prompt in the small window
    fitted = fit(Route("alias", (SMALL, LARGE), "truncate_oldest"), body)
    small, large = fitted.outbound
    assert (small.target, small.dropped_messages, [m["tokens"] for m in small.payload["messages"]]) == (
        SMALL, 2, [20])
    assert (large.target, large.dropped_messages, large.payload["messages"]) == (LARGE, 0, body["messages"])
    assert fitted.overflow is None


def test_when_nothing_fits_there_is_nothing_to_send() -> None:
    fitted = fit(Route("alias", (SMALL,), "truncate_oldest"), payload(100))
    assert fitted.outbound == () and fitted.overflow == Overflow(60, 103, 10)


def test_embeddings_are_not_counted() -> None:
    counter = CountingTokens()
    fitted = fitter(counter).fit(
        Route("alias", (SMALL,), "error"), {"model": "alias", "input": "x" * 5000}, stream=False,
        count_messages=False, body_size=5000, max_output_tokens=0,
    )
    assert [o.payload for o in fitted.outbound] == [{"model": "small", "input": "x" * 5000}]
    assert counter.prompts == 0


def test_counts_says_in_advance_whether_fit_will_count() -> None:
    both, unpriced = Route("alias", (LARGE, SMALL), "error"), Route("alias", (UNPRICED,), "error")
    cases = [(both, True, 20, 10), (both, True, 100, 10), (both, True, 20_000, 10), (both, False, 20_000, 10),
             (unpriced, True, 20_000, 10), (Route("alias", (LARGE,), "error"), True, 9_000, 1_000)]
    for route, messages, body_size, max_out in cases:
        counter = CountingTokens()
        fitted = fitter(counter)
        predicted = fitted.counts(route, messages, body_size, max_out)
        fitted.fit(route, payload(5), stream=False, count_messages=messages, body_size=body_size,
                   max_output_tokens=max_out)
        assert predicted == (counter.prompts > 0), (route, messages, body_size, max_out)
