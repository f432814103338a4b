"""Instructions the gateway's own Python spends per request: the ASGI app driven in-process, no sockets.

A canned provider answers at once (a chat completion with usage, or a 20-chunk stream), so what is counted is
the gateway itself: authenticate, parse, route, fit, dispatch, relay, record, metrics. Under callgrind the count
is deterministic for the same interpreter and inputs, whatever else the machine is doing, which makes it the
figure to compare two revisions of the hot path with on a busy 2-core machine (bench/README.md).

    .venv/bin/python bench/hot_path.py                      # per-request wall time, in-process (noisy)
    .venv/bin/python bench/hot_path.py --callgrind          # instructions per request (runs valgrind twice)
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/hot_path.py --callgrind   # another revision
    .venv/bin/python bench/hot_path.py --callgrind --request-log   # with the request log on (to /dev/null)
    .venv/bin/python bench/hot_path.py --callgrind --capture 0.01  # the alias captures 1% for replay

It works with any revision that has `gateway.app.create_app` and `providers.base.UpstreamReply`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

KEY = "sk-hot-path"
REPLY = {
    "id": "chatcmpl-hot", "object": "chat.completion", "created": 0, "model": "sim-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 20}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 25, "completion_tokens": 20, "total_tokens": 45},
}
CHUNKS = [
    orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "w "}}]})
    for _ in range(20)
] + [orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 20}}), b"[DONE]"]
BODY = orjson.dumps({"model": "bench-model", "max_tokens": 64, "messages": [
    {"role": "system", "content": "You are a benchmark."}, {"role": "user", "content": "Say twenty words."}]})
STREAM_BODY = orjson.dumps({**orjson.loads(BODY), "stream": True})


class CannedStream:
    async def batches(self) -> AsyncIterator[list[bytes]]:
        for i in range(0, len(CHUNKS), 4):
            yield CHUNKS[i:i + 4]

    async def events(self) -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    def abort(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class CannedProvider:
    name = "canned"
    ready = True

    def __init__(self) -> None:
        from providers.base import UpstreamReply

        self._reply = UpstreamReply
        self._body = orjson.dumps(REPLY)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, request: Any) -> Any:
        return self._reply(200, self._body, "application/json", data=orjson.loads(self._body))

    async def open_stream(self, request: Any) -> CannedStream:
        return CannedStream()


def build_app(request_log: bool = False, capture: float | None = None) -> Any:
    from config.loader import parse_config
    from gateway.app import create_app

    if request_log:
        from telemetry.logs import configure_logging

        # As `cutover serve` does; a revision that logs through `logging` writes nothing without it.
        configure_logging()
        # The lines go to stderr; here, to nowhere (valgrind keeps its own descriptor for its report).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    config = parse_config({
        "server": {"request_log": request_log},
        "auth": {"keys": [{"name": "bench", "key_env": "HOT_PATH_KEY"}]},
        "providers": {"canned": {"type": "openai", "base_url": "http://127.0.0.1:9"}},
        "models": {"bench-model": {"targets": [{"provider": "canned", "model": "sim-model"}],
                                   **({"capture": {"sample": capture}} if capture is not None else {})}},
        "prices": {"sim-model": {"input": 1, "output": 2, "context_window": 128000}},
        "store": {"backend": "memory"},
    }, env={"HOT_PATH_KEY": KEY})
    app = create_app(config)
    parts = getattr(app, "parts", None) or app.state  # this revision, or the one before the pipeline
    parts.registry.providers["canned"] = CannedProvider()
    return app


async def drive(app: Any, requests: int, body: bytes) -> None:
    headers = [(b"authorization", b"Bearer " + KEY.encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "headers": headers}
    message = {"type": "http.request", "body": body, "more_body": False}
    never = asyncio.Event()
    for _ in range(requests):
        sent = await one(app, scope, message, never)
        if sent[0]["status"] != 200:
            raise SystemExit(f"the gateway answered {sent[0]['status']}: {sent[1].get('body', b'')[:300]!r}")


async def one(app: Any, scope: dict[str, Any], message: dict[str, Any], never: asyncio.Event) -> list[Any]:
    sent: list[Any] = []
    first = True

    async def receive() -> Any:
        nonlocal first
        if first:
            first = False
            return message
        await never.wait()

    async def send(msg: Any) -> None:
        sent.append(msg)

    await app(scope, receive, send)
    return sent


def run(requests: int, stream: bool, request_log: bool = False, capture: float | None = None) -> float:
    app = build_app(request_log, capture)
    body = STREAM_BODY if stream else BODY

    async def main() -> float:
        # What the lifespan does before the first request in revisions that refuse to serve before it
        # (d690c3d on): read the migration state. Older revisions have no such step.
        migrations = getattr(getattr(app, "parts", None), "migrations", None)
        if migrations is not None and hasattr(migrations, "sync"):
            await migrations.sync.sync()
        await drive(app, 200, body)  # warm the caches, metric children and tokenizer
        # As gateway.server does once the app is built: start-up objects out of the collector's reach, or
        # every full collection walks them all and its cost swamps the gateway's own work.
        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        await drive(app, requests, body)
        return time.perf_counter() - started

    return asyncio.run(main())


def instructions(requests: int, stream: bool, request_log: bool, capture: float | None) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--requests", str(requests), *(["--stream"] if stream else []),
         *(["--request-log"] if request_log else []), *(["--capture", str(capture)] if capture is not None else [])],
        capture_output=True, text=True, env=os.environ, check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request, from two valgrind runs")
    parser.add_argument("--request-log", action="store_true",
                        help="server.request_log on, its lines to /dev/null (counts the writer thread too)")
    parser.add_argument("--capture", type=float,
                        help="the alias captures this share of its requests for replay (memory store)")
    args = parser.parse_args()
    if not args.callgrind:
        seconds = run(args.requests, args.stream, args.request_log, args.capture)
        print(f"{'stream' if args.stream else 'non-stream'}: {seconds / args.requests * 1e6:.1f} us/request "
              f"in-process over {args.requests} requests")
        return
    rows = []
    for stream in (False, True):
        low, high = 500, 2500
        per_request = ((instructions(high, stream, args.request_log, args.capture)
                        - instructions(low, stream, args.request_log, args.capture)) / (high - low))
        rows.append((("stream" if stream else "non-stream"), per_request))
    import gateway

    print(f"revision   {os.path.dirname(os.path.dirname(os.path.abspath(gateway.__file__)))}")
    print(f"request log {'on (to /dev/null)' if args.request_log else 'off'}")
    print(f"capture    {'off' if args.capture is None else f'{args.capture:g} of requests'}")
    print(f"{'mode':<12}{'instructions/request':>22}")
    for mode, count in rows:
        print(f"{mode:<12}{count:>22,.0f}")


if __name__ == "__main__":
    main()
