"""The request log writer: the line's shape, buffering, the flush at close, a stuck or gone output, whole lines."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import select
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from telemetry.request_log import RequestLog, dropped_counter, whole_lines_end

# 2026-11-22T04:21:43.123456789 UTC, in nanoseconds.
NOW_NS = 1_795_321_303_123_456_789
FIELDS: dict[str, Any] = {
    "request_id": "req_1", "endpoint": "chat", "alias": "gpt-4", "key": "team", "provider": "up",
    "model": "real-model", "stream": True, "status": 200, "latency_ms": 500.0, "overhead_ms": 0.4, "attempts": 2,
    "prompt_tokens": 10, "completion_tokens": 5, "usage_estimated": False, "cost_usd": "0.00002",
}
# What the line looked like when it went through `logging` and JsonLineFormatter: this is the contract
# with whatever parses the log.
EXPECTED_LINE = (
    b'{"ts":"2026-11-22T04:21:43.123+00:00","level":"info","logger":"cutover.access","request_id":"req_1",'
    b'"endpoint":"chat","alias":"gpt-4","key":"team","provider":"up","model":"real-model","stream":true,'
    b'"status":200,"latency_ms":500.0,"overhead_ms":0.4,"attempts":2,"prompt_tokens":10,"completion_tokens":5,'
    b'"usage_estimated":false,"cost_usd":"0.00002"}\n'
)
# The length of a line of `fields(n)`.
LINE_BYTES = len(EXPECTED_LINE.replace(b'"req_1"', b'"req_000000"'))
WAIT_S = 10.0


class Pipe:
    """A pipe standing for stderr: the log writes to `w`; the test reads `r` (non-blocking) on the loop."""

    def __init__(self, size: int | None = None) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        if size is not None:
            fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, size)
        self.data = bytearray()
        self._changed: asyncio.Event | None = None

    def drain(self) -> bytes:
        """Everything readable now."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.r, 65536):
                self.data += chunk
        return bytes(self.data)

    def readable(self) -> bool:
        return bool(select.select([self.r], [], [], 0)[0])

    def lines(self) -> list[bytes]:
        return self.drain().splitlines(keepends=True)

    async def wait_lines(self, count: int) -> list[bytes]:
        """Read as data arrives until `count` lines are in; fails after WAIT_S."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        loop.add_reader(self.r, changed.set)
        try:
            async with asyncio.timeout(WAIT_S):
                while len(lines := self.lines()) < count:
                    changed.clear()
                    await changed.wait()
        finally:
            loop.remove_reader(self.r)
        return lines

    def close(self) -> None:
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close()


def fields(n: int) -> dict[str, Any]:
    return {**FIELDS, "request_id": f"req_{n:06d}"}


def ids(lines: list[bytes]) -> list[str]:
    return [orjson.loads(line)["request_id"] for line in lines]


def dropped(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("cutover_request_log_dropped_total")
    assert value is not None
    return value


async def test_the_line_keeps_the_shape_it_had_through_logging(pipe: Pipe) -> None:
    log = RequestLog(pipe.w, clock=lambda: NOW_NS)
    log.write(FIELDS)
    await log.aclose()
    assert pipe.lines() == [EXPECTED_LINE]
    assert list(orjson.loads(EXPECTED_LINE))[:4] == ["ts", "level", "logger", "request_id"]


async def test_timestamps_are_what_isoformat_to_the_millisecond_gave(pipe: Pipe) -> None:
    rng = random.Random(7)
    second = NOW_NS - NOW_NS % 1_000_000_000
    times = [NOW_NS, second, second - 1, 1_798_761_599_999_999_999]  # the last one: 2026's last millisecond
    times += [rng.randrange(1_700_000_000 * 10**9, 1_900_000_000 * 10**9) for _ in range(2000)]
    clock = iter(times)
    log = RequestLog(pipe.w, clock=lambda: next(clock), interval_s=3600)
    for _ in times:
        log.write({})
    lines, _ = await asyncio.gather(pipe.wait_lines(len(times)), log.aclose())
    for now, line in zip(times, lines, strict=True):
        ms = now // 1_000_000
        expected = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
        assert orjson.loads(line)["ts"] == expected.isoformat(timespec="milliseconds")


async def test_lines_wait_in_memory_until_the_buffer_passes_its_threshold(pipe: Pipe) -> None:
    log = RequestLog(pipe.w, flush_bytes=3 * LINE_BYTES, interval_s=3600)
    log.write(fields(0))
    log.write(fields(1))
    assert not pipe.readable()
    assert log.held_bytes == 2 * LINE_BYTES
    log.write(fields(2))
    assert ids(await pipe.wait_lines(3)) == ["req_000000", "req_000001", "req_000002"]
    await log.aclose()
    assert log.held_bytes == 0


async def test_the_timer_writes_a_buffer_that_does_not_fill(pipe: Pipe) -> None:
    log = RequestLog(pipe.w, interval_s=0.01)
    log.write(fields(0))
    assert ids(await pipe.wait_lines(1)) == ["req_000000"]
    log.write(fields(1))  # a new first line arms the timer again
    assert ids(await pipe.wait_lines(2)) == ["req_000000", "req_000001"]
    await log.aclose()


async def test_close_writes_every_held_line_in_order(pipe: Pipe) -> None:
    log = RequestLog(pipe.w, flush_bytes=1 << 30, interval_s=3600)
    for n in range(500):
        log.write(fields(n))
    assert not pipe.readable()
    # More than the pipe holds: read while the close writes.
    lines, _ = await asyncio.gather(pipe.wait_lines(500), log.aclose())
    assert ids(lines) == [f"req_{n:06d}" for n in range(500)]


async def test_a_line_written_after_close_is_still_written(pipe: Pipe) -> None:
    log = RequestLog(pipe.w, interval_s=3600)
    await log.aclose()
    log.write(fields(0))
    assert ids(await pipe.wait_lines(1)) == ["req_000000"]
    await log.aclose()


async def test_a_stuck_output_never_blocks_the_loop_holds_bounded_memory_and_counts_what_it_drops() -> None:
    # The smallest pipe Linux allows (a page), and nobody reading it.
    pipe = Pipe(size=4096)
    registry = CollectorRegistry()
    cap = 16 * 1024
    log = RequestLog(pipe.w, dropped=dropped_counter(registry), flush_bytes=2048, interval_s=3600,
                     max_held_bytes=cap)
    total = 1000
    try:
        for n in range(total):
            log.write(fields(n))
            assert log.held_bytes <= cap
        # ~380 KB offered; the pipe and the cap hold ~20 KB of it.
        lost = dropped(registry)
        assert lost > total / 2
        # Once the output takes data again, everything that was accepted arrives, whole and in order.
        accepted = total - int(lost)
        written = await asyncio.gather(pipe.wait_lines(accepted), log.aclose())
        numbers = [int(i.removeprefix("req_")) for i in ids(written[0])]
        assert len(numbers) == accepted and numbers == sorted(numbers)
        assert dropped(registry) == lost
    finally:
        pipe.close()


async def test_close_gives_up_on_an_output_that_stays_stuck() -> None:
    pipe = Pipe(size=4096)
    log = RequestLog(pipe.w, flush_bytes=1024, interval_s=3600)
    try:
        for n in range(100):
            log.write(fields(n))
        async with asyncio.timeout(WAIT_S):
            await log.aclose(timeout_s=0.05)
        # The writer is still blocked in write(); a daemon thread cannot hold up the process's exit.
        assert [t.daemon for t in threading.enumerate() if t.name == "cutover-request-log"] == [True]
    finally:
        # The writer thread, still blocked in write(), gets EPIPE and ends.
        pipe.close()


async def test_an_output_whose_reader_is_gone_counts_its_lines_as_dropped(pipe: Pipe) -> None:
    os.close(pipe.r)
    registry = CollectorRegistry()
    log = RequestLog(pipe.w, dropped=dropped_counter(registry), flush_bytes=1024, interval_s=3600)
    for n in range(100):
        log.write(fields(n))
    await log.aclose()
    assert dropped(registry) == 100
    assert log.held_bytes == 0


async def test_two_writers_sharing_a_pipe_never_split_a_line(pipe: Pipe) -> None:
    # Two workers' logs on one stderr pipe, read slowly: each write of at most PIPE_BUF bytes is atomic.
    fcntl.fcntl(pipe.w, fcntl.F_SETPIPE_SZ, 4096)
    logs = [RequestLog(pipe.w, flush_bytes=32 * 1024, interval_s=3600) for _ in range(2)]
    per_log = 1500
    for n in range(per_log):
        for index, log in enumerate(logs):
            log.write({**fields(n), "alias": f"worker-{index}"})
    lines, *_ = await asyncio.gather(pipe.wait_lines(2 * per_log), *(log.aclose() for log in logs))
    parsed = [orjson.loads(line) for line in lines]
    for index in range(2):
        assert [p["request_id"] for p in parsed if p["alias"] == f"worker-{index}"] == [
            f"req_{n:06d}" for n in range(per_log)
        ]


@pytest.mark.parametrize("seed", range(20))
def test_pieces_are_whole_lines_within_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    lines = [b"x" * rng.randrange(0, 300) + b"\n" for _ in range(rng.randrange(1, 200))]
    if seed % 4 == 0:
        lines.insert(rng.randrange(len(lines)), b"y" * 700 + b"\n")  # longer than the limit: goes alone
    buf = b"".join(lines)
    pieces = []
    start = 0
    while start < len(buf):
        end = whole_lines_end(buf, start, 512)
        pieces.append(buf[start:end])
        start = end
    assert b"".join(pieces) == buf
    for piece in pieces:
        assert piece.endswith(b"\n")
        assert len(piece) <= 512 or piece.count(b"\n") == 1
