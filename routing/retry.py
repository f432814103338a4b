"""When to retry an upstream call, and how long to wait first (tenacity strategies).

Backoff is exponential with jitter; an upstream's Retry-After replaces it when
present. A Retry-After longer than the cap ends the attempts on that target, so
the request moves to the next target instead of holding the client.
"""

from __future__ import annotations

from tenacity import RetryCallState, stop_after_attempt, wait_exponential_jitter
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from config.schema import RetryConfig
from providers.errors import ProviderError, UpstreamStatusError


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def _retry_after(state: RetryCallState) -> float | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    exc = outcome.exception()
    if isinstance(exc, UpstreamStatusError):
        return exc.retry_after_s
    return None


class wait_retry_after_or(wait_base):
    def __init__(self, fallback: wait_base) -> None:
        self._fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        hinted = _retry_after(retry_state)
        return hinted if hinted is not None else self._fallback(retry_state)


class stop_if_retry_after_over(stop_base):
    def __init__(self, cap_s: float) -> None:
        self._cap = cap_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        hinted = _retry_after(retry_state)
        return hinted is not None and hinted > self._cap


def build_wait(config: RetryConfig) -> wait_base:
    return wait_retry_after_or(
        wait_exponential_jitter(initial=config.initial_backoff_s, max=config.max_backoff_s, jitter=config.jitter_s)
    )


def build_stop(config: RetryConfig) -> stop_base:
    return stop_after_attempt(config.max_attempts_per_target) | stop_if_retry_after_over(config.retry_after_cap_s)


class RetryPolicy:
    """When and after how long an attempt on the same target is retried (the dispatcher asks after each failure)."""

    def __init__(self, config: RetryConfig) -> None:
        self._wait = build_wait(config)
        self._stop = build_stop(config)

    def pause_before_retry(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before attempt `attempt + 1`; None when the target gets no more attempts."""
        if not is_retryable(error):
            return None
        # Built only on a failure: tenacity's per-call set-up would cost more than the rest of a dispatch.
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        state.set_exception((type(error), error, error.__traceback__))
        if self._stop(state):
            return None
        pause: float = self._wait(state)
        return pause
