"""The request log: one JSON line per request, serialised on the event loop, written by a thread.

The line keeps the shape it had when it went through `logging` and `JsonLineFormatter`, so whatever parses
the log keeps working:

    {"ts":"2026-11-22T04:21:43.123+00:00","level":"info","logger":"cutover.access",<the request's fields>}

The fields are `gateway.record.log_fields`: ids, alias, key name, target, status, timings, tokens, cost.
Prompts and outputs are not among them (`server.log_bodies` is accepted by the config, and nothing reads
it), and upstream keys and URLs never are.

Going through `logging` cost a LogRecord, a look-up of the caller's frame, the handler's lock and one
write system call per request: about 40% of a worker's throughput under load (bench/README.md, "Request
log"). Here the event loop only serialises the line (orjson) and appends it to a buffer. The buffer goes
to a writer thread when it passes `flush_bytes`, `interval_s` after its first line
(`server.request_log_flush_s`), and at `aclose()`. `aclose` runs in the lifespan shutdown, so SIGTERM
loses nothing. A SIGKILL loses at most the last `interval_s` of lines.

Why a thread: the writes must never block the event loop, and stderr may be a pipe that nobody is
reading. Setting O_NONBLOCK on stderr is not an option. The flag belongs to the open file description,
which stderr shares with the supervisor, the other workers and maybe a terminal, and their writes would
start failing with EAGAIN. A stuck output blocks only the thread. Memory stays bounded: lines that are
held (still buffered, or handed over and not yet written) are capped at `max_held_bytes`. A line that
would go past the cap is dropped and counted in `cutover_request_log_dropped_total`. Lines the output
refuses (for example EPIPE) are counted there too.

Several workers share one stderr. The thread writes whole lines, in pieces of at most PIPE_BUF bytes
(4096 on Linux). POSIX makes a pipe write of at most PIPE_BUF bytes atomic, so the workers' lines never
interleave mid-line on a pipe. On a regular file, Linux serialises writes that share a file offset.
One big write per buffer would be cheaper, but a pipe write larger than PIPE_BUF may be split and
interleaved with another worker's. The pieces cost about one system call per ten lines, on the thread.
The exception is a single line longer than PIPE_BUF, which no write can keep atomic on a pipe; at a few
hundred bytes per line, that needs an absurdly long alias or key name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from queue import SimpleQueue
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter

ACCESS_LOGGER: Final = "cutover.access"
STDERR: Final = 2
FLUSH_BYTES: Final = 32 * 1024
INTERVAL_S: Final = 0.1
MAX_HELD_BYTES: Final = 8 * 1024 * 1024
CLOSE_TIMEOUT_S: Final = 5.0
# How long a write waits for an output that someone else made non-blocking to take data again.
_WRITABLE_WAIT_S: Final = 1.0
_MILLIS: Final = tuple(b"%03d" % n for n in range(1000))
_AFTER_MILLIS: Final = b'+00:00","level":"info","logger":"' + ACCESS_LOGGER.encode() + b'"'


# Chunks of whole lines for the writer thread, then the closer's notification, which also ends the thread.
_Queue = SimpleQueue[bytearray | Callable[[], None]]


def dropped_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "cutover_request_log_dropped", "Request log lines dropped: the log output was stuck or refused them.",
        registry=registry,
    )


class RequestLog:
    """Appends lines on the event loop and writes them to `fd` from a thread, never blocking the loop.

    Use it from one event loop: the first `write` binds it to the running loop. `aclose()` writes out
    what is held. A line written after that goes straight to the thread, which starts again if needed.
    """

    __slots__ = (
        "_buf", "_chunk_bytes", "_clock", "_closed", "_dropped", "_fd", "_flush_bytes", "_handed_bytes",
        "_head", "_interval_s", "_loop", "_max_held_bytes", "_queue", "_second", "_thread", "_timer",
        "_written_bytes", "_written_lock",
    )

    def __init__(
        self,
        fd: int = STDERR,
        *,
        dropped: Counter | None = None,
        flush_bytes: int = FLUSH_BYTES,
        interval_s: float = INTERVAL_S,
        max_held_bytes: int = MAX_HELD_BYTES,
        chunk_bytes: int = select.PIPE_BUF,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._fd = fd
        self._dropped = dropped
        self._flush_bytes = flush_bytes
        self._interval_s = interval_s
        self._max_held_bytes = max_held_bytes
        self._chunk_bytes = chunk_bytes
        self._clock = clock
        self._buf = bytearray()
        # Bytes handed to the thread, and bytes it has finished with (written or dropped). The loop reads
        # their difference without a lock. The lock only matters when a thread that outlived its close
        # (a stuck output) and its successor finish chunks at the same moment.
        self._handed_bytes = 0
        self._written_bytes = 0
        self._written_lock = threading.Lock()
        self._queue: _Queue = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._second = -1
        self._head = b""

    @property
    def held_bytes(self) -> int:
        """Bytes accepted but not yet written: what a stuck output costs in memory, at most `max_held_bytes`."""
        return len(self._buf) + self._handed_bytes - self._written_bytes

    def write(self, fields: Mapping[str, Any]) -> None:
        """One line for `fields`, which must not have keys of their own named ts, level or logger."""
        second, milli = divmod(self._clock() // 1_000_000, 1000)
        if second != self._second:
            # The date and time change once a second; formatting them per line would cost more than the JSON.
            self._second = second
            self._head = b'{"ts":"' + datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.").encode()
        body = orjson.dumps(fields, default=str)
        # The bytes orjson gives for {"ts": ..., "level": ..., "logger": ..., **fields}, without building
        # that second mapping.
        line = b"".join((self._head, _MILLIS[milli], _AFTER_MILLIS, b"," if len(body) > 2 else b"", body[1:], b"\n"))
        buf = self._buf
        if len(buf) + self._handed_bytes - self._written_bytes + len(line) > self._max_held_bytes:
            if self._dropped is not None:
                self._dropped.inc()
            return
        if not buf and not self._closed:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            if self._timer is None:
                self._timer = self._loop.call_later(self._interval_s, self._on_timer)
        buf += line
        if len(buf) >= self._flush_bytes or self._closed:
            self._hand_off()

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write out every held line; wait at most `timeout_s` for a stuck output, then give up on it."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hand_off()
        if self._thread is None:
            return
        # A line written after this starts a new thread with a new queue. If this thread is stuck, the new one
        # does not take its chunks and write them out of order.
        queue, self._queue, self._thread = self._queue, SimpleQueue(), None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(finished)

        # Queued behind every chunk handed over, so it runs once they are written; it also ends the thread.
        queue.put(notify)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, timeout_s)

    def _on_timer(self) -> None:
        self._timer = None
        self._hand_off()

    def _hand_off(self) -> None:
        if not self._buf:
            return
        chunk, self._buf = self._buf, bytearray()
        self._handed_bytes += len(chunk)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(self._queue,), name="cutover-request-log",
                                            daemon=True)
            self._thread.start()
        self._queue.put(chunk)

    # The writer thread.

    def _run(self, queue: _Queue) -> None:
        while isinstance(item := queue.get(), bytearray):
            try:
                self._write_lines(item)
            finally:
                with self._written_lock:
                    self._written_bytes += len(item)
        item()

    def _write_lines(self, chunk: bytearray) -> None:
        view = memoryview(chunk)
        start, end = 0, len(chunk)
        try:
            while start < end:
                stop = whole_lines_end(chunk, start, self._chunk_bytes)
                while start < stop:
                    start += self._write_some(view[start:stop])
        except OSError:
            # The output refuses lines (EPIPE: its reader is gone; EBADF...): count them rather than
            # fail every request's record. Retrying could only hold memory for an output that may never come back.
            if self._dropped is not None:
                self._dropped.inc(chunk.count(b"\n", start))
        finally:
            view.release()

    def _write_some(self, data: memoryview) -> int:
        while True:
            try:
                return os.write(self._fd, data)
            except BlockingIOError:
                # Someone set O_NONBLOCK on the shared file description: wait for room, as a blocking write would.
                select.select([], [self._fd], [], _WRITABLE_WAIT_S)


def whole_lines_end(buf: bytes | bytearray, start: int, limit: int) -> int:
    """The end of the longest run of whole lines from `start` that fits in `limit` bytes (at least one line)."""
    if len(buf) - start <= limit:
        return len(buf)
    cut = buf.rfind(b"\n", start, start + limit)
    if cut >= 0:
        return cut + 1
    # One line longer than `limit`: it goes alone, whole.
    cut = buf.find(b"\n", start + limit)
    return len(buf) if cut < 0 else cut + 1
