"""The request log's cost: the same gateway with `server.request_log` off and on, measured alternately in one run.

Two gateway processes (identical but for that one setting) share the simulator and the gateway core; only one is
loaded at a time. After the rows, the logging gateway is stopped with SIGTERM and its log is checked against its own
request counter, so a fast "on" figure cannot come from lines that were never written.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from bench_report import Cell, Target, format_table
from bench_stack import http_status

ACCESS_MARK = b'"logger":"cutover.access"'
RATIO_TARGET = 0.90


@dataclass
class LogComparison:
    concurrency: int
    off: list[Cell]
    on: list[Cell]
    # Read from the logging gateway: its request counter and dropped-line counter before it stopped,
    # and the access lines in its output after.
    requests_counted: float | None = None
    dropped: float | None = None
    lines: int | None = None

    @property
    def ratios(self) -> list[float]:
        """on/off per round, each from the two rows measured next to each other."""
        return [on.rps / off.rps for off, on in zip(self.off, self.on, strict=True) if off.rps]

    @property
    def ratio(self) -> float | None:
        if not self.off or not self.on:
            return None
        off = statistics.median(c.rps for c in self.off)
        return statistics.median(c.rps for c in self.on) / off if off else None


def _sum_samples(exposition: str, name: str) -> float | None:
    """The sum of a counter's samples over its labels; None when the gateway does not export it."""
    total = None
    for line in exposition.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def read_counters(port: int) -> tuple[float | None, float | None]:
    """(requests answered, request-log lines dropped) from the gateway's /metrics."""
    status, _, body = http_status(port, "GET", "/metrics")
    if status != 200:
        return None, None
    text = body.decode()
    return _sum_samples(text, "cutover_requests_total"), _sum_samples(text, "cutover_request_log_dropped_total")


def count_access_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if ACCESS_MARK in line)


def _row(round_: int, name: str, cell: Cell, noisy: float) -> list[str]:
    us = cell.server_us_per_req
    return [
        str(round_), name, f"{cell.rps:,.0f}", f"{cell.lat(50) or 0:.3f}", f"{cell.lat(99) or 0:.3f}",
        f"{us:,.0f}" if us is not None else "-", str(cell.result.errors),
        f"{cell.cpu.background_cores:.0%}" + ("!" if cell.cpu.background_cores > noisy else " "),
    ]


def comparison_lines(cmp: LogComparison, noisy: float) -> list[str]:
    rows: list[list[str]] = []
    for index, (off, on) in enumerate(zip(cmp.off, cmp.on, strict=True), 1):
        pair = [("off", off), ("on", on)]
        rows += [_row(index, name, cell, noisy) for name, cell in (pair if index % 2 else pair[::-1])]
    header = ("round", "log", "req/s", "p50 ms", "p99 ms", "CPU us/req", "errors", "bg load")
    lines = [
        f"request log: the gateway with server.request_log off and on (a second gateway process), non-stream "
        f"c={cmp.concurrency}, alternating off/on, on/off, ...",
        format_table(rows, header, left=(1,)),
    ]
    ratio, ratios = cmp.ratio, cmp.ratios
    if ratio is not None and ratios:
        off_us = statistics.median(c.server_us_per_req or 0 for c in cmp.off)
        on_us = statistics.median(c.server_us_per_req or 0 for c in cmp.on)
        lines.append(
            f"  median req/s: off {statistics.median(c.rps for c in cmp.off):,.0f}, "
            f"on {statistics.median(c.rps for c in cmp.on):,.0f}; on/off x{ratio:.2f} "
            f"(per round x{min(ratios):.2f}-x{max(ratios):.2f}); gateway CPU per request {off_us:,.0f} -> "
            f"{on_us:,.0f} us ({(on_us / off_us - 1) if off_us else 0:+.0%})"
        )
    counted = f"{cmp.requests_counted:,.0f}" if cmp.requests_counted is not None else "?"
    dropped = f"{cmp.dropped:,.0f}" if cmp.dropped is not None else "not exported"
    written = f"{cmp.lines:,}" if cmp.lines is not None else "?"
    lines.append(f"  log check after SIGTERM: {written} access lines for {counted} requests counted by that "
                 f"gateway; dropped lines: {dropped}")
    return lines


def comparison_target(cmp: LogComparison) -> Target:
    complete = cmp.lines is not None and cmp.requests_counted is not None and cmp.lines == cmp.requests_counted
    note = "median of alternating rows" + ("" if complete else "; ! log lines missing, see above")
    return Target(f"request log on/off throughput, non-stream c={cmp.concurrency}", RATIO_TARGET, "x",
                  cmp.ratio, True, note)
