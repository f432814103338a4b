"""Retry timing: exponential backoff, replaced by Retry-After, which past the cap ends the target's attempts."""

from __future__ import annotations

import pytest
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from config.schema import RetryConfig
from providers.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from routing.retry import build_stop, build_wait, is_retryable

CONFIG = RetryConfig(
    max_attempts_per_target=4, initial_backoff_s=0.1, max_backoff_s=0.3, jitter_s=0.0, retry_after_cap_s=5.0
)


def failed_state(exc: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def status(code: int, retry_after: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(code, b"{}", retry_after)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (UpstreamConnectError("x"), True),
        (UpstreamTimeout("x"), True),
        (UpstreamProtocolError("x"), True),
        (UpstreamStreamBroken("x"), True),
        (status(408), True),
        (status(429), True),
        (status(500), True),
        (status(503), True),
        (status(400), False),
        (status(401), False),
        (status(404), False),
        (ValueError("not an upstream failure"), False),
    ],
)
def test_is_retryable(exc: BaseException, expected: bool) -> None:
    assert is_retryable(exc) is expected


def test_exponential_backoff_without_hint() -> None:
    wait = build_wait(CONFIG)
    waits = [wait(failed_state(UpstreamConnectError("x"), attempt)) for attempt in (1, 2, 3, 4)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.3])  # doubling, then capped at max_backoff_s


def test_jitter_stays_within_bounds() -> None:
    config = CONFIG.model_copy(update={"jitter_s": 0.05, "max_backoff_s": 10.0})
    wait = build_wait(config)
    for _ in range(50):
        assert 0.1 <= wait(failed_state(UpstreamTimeout("x"), 1)) <= 0.15


def test_retry_after_replaces_backoff() -> None:
    wait = build_wait(CONFIG)
    assert wait(failed_state(status(429, 2.5), attempt=1)) == 2.5
    # Even above max_backoff_s: the upstream said how long, and it is under the cap.
    assert wait(failed_state(status(503, 4.0), attempt=3)) == 4.0
    # Zero is a real hint ("now"), not an absent one.
    assert wait(failed_state(status(429, 0.0), attempt=2)) == 0.0


def test_status_without_retry_after_uses_backoff() -> None:
    wait = build_wait(CONFIG)
    assert wait(failed_state(status(500), attempt=2)) == pytest.approx(0.2)


def test_stop_after_max_attempts() -> None:
    stop = build_stop(CONFIG)
    assert not stop(failed_state(UpstreamConnectError("x"), attempt=3))
    assert stop(failed_state(UpstreamConnectError("x"), attempt=4))


def test_stop_when_retry_after_over_cap() -> None:
    stop = build_stop(CONFIG)
    assert stop(failed_state(status(429, 5.01), attempt=1))
    assert not stop(failed_state(status(429, 5.0), attempt=1))
    assert not stop(failed_state(status(429), attempt=1))


async def _drive(errors: list[BaseException], config: RetryConfig) -> tuple[list[float], int, BaseException | None]:
    """Run a real AsyncRetrying loop with the built strategies; record the sleeps instead of sleeping."""
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    calls = 0
    raised: BaseException | None = None
    try:
        async for attempt in AsyncRetrying(
            stop=build_stop(config), wait=build_wait(config), retry=retry_if_exception(is_retryable),
            sleep=fake_sleep, reraise=True,
        ):
            with attempt:
                calls += 1
                if calls <= len(errors):
                    raise errors[calls - 1]
    except Exception as exc:
        raised = exc
    return sleeps, calls, raised


async def test_loop_backs_off_then_succeeds() -> None:
    sleeps, calls, raised = await _drive([UpstreamTimeout("x"), UpstreamConnectError("x")], CONFIG)
    assert raised is None
    assert calls == 3
    assert sleeps == pytest.approx([0.1, 0.2])


async def test_loop_honours_retry_after() -> None:
    sleeps, calls, raised = await _drive([status(429, 1.5), status(500)], CONFIG)
    assert raised is None
    assert calls == 3
    assert sleeps == pytest.approx([1.5, 0.2])


async def test_loop_gives_up_at_once_when_retry_after_over_cap() -> None:
    error = status(429, 60.0)
    sleeps, calls, raised = await _drive([error], CONFIG)
    assert raised is error
    assert calls == 1
    assert sleeps == []


async def test_loop_stops_after_max_attempts() -> None:
    errors: list[BaseException] = [UpstreamConnectError(str(i)) for i in range(10)]
    sleeps, calls, raised = await _drive(errors, CONFIG)
    assert raised is errors[3]
    assert calls == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.3])


async def test_loop_does_not_retry_client_errors() -> None:
    error = status(400)
    sleeps, calls, raised = await _drive([error], CONFIG)
    assert raised is error
    assert calls == 1
    assert sleeps == []


def test_successful_outcome_has_no_hint() -> None:
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = 2
    state.set_result("fine")
    assert build_wait(CONFIG)(state) == pytest.approx(0.2)
    assert not build_stop(CONFIG)(state)
