"""Optional extras: a wrk cross-check of the Python client, and py-spy profiles of the gateway."""

from __future__ import annotations

import functools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench_report import Cell, find, format_table
from bench_stack import REPO

WRK_SECONDS = 5
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors:(.*)")


class StackLike(Protocol):
    gateway: Any

    def port(self, target: str) -> int: ...

    def raw_request(self, target: str, stream: bool) -> bytes: ...


def _lua(raw_request: bytes) -> str:
    head, _, body = raw_request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    out = [f'wrk.method = "{method}"', f'wrk.path = "{path}"', f"wrk.body = [[{body.decode()}]]"]
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        if name.lower() not in ("host", "content-length"):
            out.append(f'wrk.headers["{name}"] = "{value}"')
    return "\n".join(out) + "\n"


def _wrk(url: str, script: Path, connections: int, seconds: int) -> tuple[float | None, str]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired:
        return None, "wrk timed out"
    rps = _WRK_RPS.search(proc.stdout)
    problems = []
    if non2xx := _WRK_NON2XX.search(proc.stdout):
        problems.append(f"{non2xx.group(1)} non-2xx")
    if sock := _WRK_SOCKET.search(proc.stdout):
        problems.append("socket errors:" + sock.group(1))
    return (float(rps.group(1)) if rps else None), ", ".join(problems)


def wrk_cross_check(stack: StackLike, cells: list[Cell], concurrency: int, log: Callable[[str], None]) -> list[str]:
    """Throughput of the same requests with wrk (C, one thread), to show the Python client is not the limit."""
    if shutil.which("wrk") is None:
        return ["wrk cross-check skipped: wrk is not installed (apt-get install -y wrk)"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cutover-wrk-") as tmp:
        for mode in ("non-stream", "stream"):
            for target in ("direct", "gateway"):
                cell = find(cells, target, mode, concurrency)
                if cell is None:
                    continue
                script = Path(tmp) / f"{target}-{mode}.lua"
                script.write_text(_lua(stack.raw_request(target, mode == "stream")))
                url = f"http://127.0.0.1:{stack.port(target)}/v1/chat/completions"
                _wrk(url, script, concurrency, 1)  # warm-up
                rps, problems = _wrk(url, script, concurrency, WRK_SECONDS)
                log(f"wrk {mode} {target} c={concurrency}: {rps or 0:,.0f} req/s {problems}")
                rows.append([mode, target, f"{rps:,.0f}" if rps else "-", f"{cell.rps:,.0f}", problems or "ok"])
    table = format_table(rows, ("mode", "target", "wrk req/s", "client req/s", "wrk errors"), left=(0, 1, 4))
    return [f"wrk cross-check at c={concurrency} (wrk -t1, {WRK_SECONDS} s, on the load generator's core):", table]


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


PROJECT_PACKAGES = ("gateway/", "providers/", "routing/", "telemetry/", "config/")


def _frame(frame: str) -> tuple[str, str]:
    """'handle (/x/site-packages/aiohttp/client.py:123)' -> ('handle', 'aiohttp/client.py')."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(REPO) + "/", "/lib/python3."):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "/lib/python3.":
                where = where.split("/", 1)[-1]
    return name, where


def _component(where: str) -> str:
    """The package a frame belongs to: 'aiohttp', 'gateway', 'asyncio', ..."""
    return where.split("/", 1)[0].removesuffix(".py") if where else "?"


@dataclass
class ProfileSummary:
    samples: int
    components: list[list[str]]
    own: list[list[str]]
    project: list[list[str]]


def summarise_raw_profile(text: str, top: int = 15) -> ProfileSummary:
    """Shares of py-spy samples (collapsed stacks) by component and function.

    A coroutine's stack starts at its task, and time in uvloop's C code shows as
    the event loop's own frame; shares including callees are lower bounds.
    """
    own: Counter[str] = Counter()
    components: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        count = int(count_text)
        total += count
        name, where = frames[-1]
        own[f"{name} ({where})"] += count
        components[_component(where)] += count
        for label in {f"{n} ({w})" for n, w in frames if w.startswith(PROJECT_PACKAGES)}:
            inclusive[label] += count

    def rows(counter: Counter[str]) -> list[list[str]]:
        return [[f"{c / total:.1%}", n] for n, c in counter.most_common(top)] if total else []

    return ProfileSummary(total, rows(components), rows(own), rows(inclusive))


def _profile_one(spy: str, pid: int, out: Path, run_cell: Callable[[], Cell]) -> tuple[Cell, str]:
    command = [spy, "record", "--pid", str(pid), "--rate", "500", "--nonblocking", "--format", "raw",
               "--output", str(out)]
    spy_proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    try:
        cell = run_cell()
    finally:
        spy_proc.send_signal(signal.SIGINT)
        try:
            _, err = spy_proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy_proc.kill()
            _, err = spy_proc.communicate()
    return cell, err.decode(errors="replace").strip()


def profile_gateway(stack: StackLike, workdir: Path, run_cell: Callable[[str], Cell], modes: list[str],
                    log: Callable[[str], None], keep_dir: Path | None = None) -> list[str]:
    """Sample the gateway with py-spy while it serves one more row per mode; print its top functions."""
    spy = _py_spy()
    if spy is None:
        return ["profile skipped: py-spy not found (.venv/bin/pip install py-spy)"]
    lines: list[str] = []
    for mode in modes:
        out = workdir / f"gateway-profile-{mode}.txt"
        cell, err = _profile_one(spy, stack.gateway.pid, out, functools.partial(run_cell, mode))
        if not out.exists():
            lines.append(f"profile of {mode} failed: {err[-300:]}")
            continue
        summary = summarise_raw_profile(out.read_text(errors="replace"))
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, keep_dir / out.name)
        log(f"profile {mode}: {summary.samples} samples, {cell.rps:,.0f} req/s while sampled")
        lines += [
            f"gateway profile, {mode} c={cell.concurrency}: py-spy --nonblocking, {summary.samples} samples "
            f"while serving {cell.rps:,.0f} req/s; shares of the samples",
            format_table(summary.components, ("own", "component (package of the running function)"), left=(1,)),
            "",
            format_table(summary.own, ("own", "function"), left=(1,)),
            "",
            format_table(summary.project, ("incl.", "project function, callees included (lower bound)"), left=(1,)),
            "",
        ]
    return lines
