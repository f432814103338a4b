"""Turning measurements into the printed table and the PASS/MISS target list."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench_client import RunResult
from bench_stack import CpuUsage

MODES = ("non-stream", "stream")


def percentile_ms(samples_ns: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) in milliseconds; None without samples."""
    if not samples_ns:
        return None
    ordered = sorted(samples_ns)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1] / 1e6


@dataclass
class Cell:
    """One measurement: a target (direct or gateway), a mode and a concurrency."""

    target: str
    mode: str
    concurrency: int
    result: RunResult
    cpu: CpuUsage
    rss_mib: float | None

    def lat(self, q: float) -> float | None:
        return percentile_ms(self.result.latencies_ns, q)

    def ttfb(self, q: float) -> float | None:
        return percentile_ms(self.result.ttfb_ns, q)

    @property
    def rps(self) -> float:
        return self.result.rps

    @property
    def server_us_per_req(self) -> float | None:
        done = self.result.completed
        return self.cpu.server_s / done * 1e6 if done else None


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


COLUMNS = ("mode", "c", "target", "p50 ms", "p99 ms", "ttfb p50", "ttfb p99", "req/s", "srv CPU", "CPU us/req",
           "RSS MiB", "errors", "bg load")


def _row(cell: Cell, noisy: float) -> list[str]:
    us = cell.server_us_per_req
    return [
        cell.mode, str(cell.concurrency), cell.target,
        _ms(cell.lat(50)), _ms(cell.lat(99)), _ms(cell.ttfb(50)), _ms(cell.ttfb(99)),
        f"{cell.rps:,.0f}", f"{cell.cpu.server_s / cell.cpu.wall_s:.0%}",
        f"{us:,.0f}" if us is not None else "-",
        f"{cell.rss_mib:.1f}" if cell.rss_mib is not None else "-",
        str(cell.result.errors),
        f"{cell.cpu.background_cores:.0%}" + ("!" if cell.cpu.background_cores > noisy else " "),
    ]


def _added_row(direct: Cell, gateway: Cell) -> list[str]:
    ratio = gateway.rps / direct.rps if direct.rps else 0.0
    us_d, us_g = direct.server_us_per_req, gateway.server_us_per_req
    return [
        "", "", "added",
        _ms(_diff(gateway.lat(50), direct.lat(50)), True), _ms(_diff(gateway.lat(99), direct.lat(99)), True),
        _ms(_diff(gateway.ttfb(50), direct.ttfb(50)), True), _ms(_diff(gateway.ttfb(99), direct.ttfb(99)), True),
        f"x{ratio:.2f}", "", f"x{us_g / us_d:.1f}" if us_d and us_g else "-", "", "", "",
    ]


def format_table(rows: list[list[str]], header: Sequence[str] = COLUMNS, left: Sequence[int] = (0, 2)) -> str:
    """Aligned plain-text columns; the ``left`` column indexes are left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [list(header), *rows] if r) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        out = [v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return "  ".join(out).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) if r else "" for r in rows)])


def results_table(cells: list[Cell], noisy: float) -> str:
    rows: list[list[str]] = []
    pairs = find_pairs(cells)
    for (direct, gateway) in pairs:
        rows += [_row(direct, noisy), _row(gateway, noisy), _added_row(direct, gateway), []]
    return format_table(rows[:-1] if rows else rows)


def find_pairs(cells: list[Cell]) -> list[tuple[Cell, Cell]]:
    pairs = []
    for mode in MODES:
        for cell in cells:
            if cell.mode != mode or cell.target != "gateway":
                continue
            direct = find(cells, "direct", mode, cell.concurrency)
            if direct is not None:
                pairs.append((direct, cell))
    return pairs


def find(cells: list[Cell], target: str, mode: str, concurrency: int) -> Cell | None:
    for cell in cells:
        if (cell.target, cell.mode, cell.concurrency) == (target, mode, concurrency):
            return cell
    return None


@dataclass
class Target:
    name: str
    limit: float
    unit: str
    measured: float | None
    at_least: bool = False
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "n/a"
        ok = self.measured >= self.limit if self.at_least else self.measured <= self.limit
        return "PASS" if ok else "MISS"

    def row(self) -> list[str]:
        sign = ">=" if self.at_least else "<="
        fmt = "{:,.0f}" if self.unit in ("req/s", "streams/s") else "{:.2f}"
        measured = fmt.format(self.measured) + " " + self.unit if self.measured is not None else "-"
        return [self.name, f"{sign} {fmt.format(self.limit)} {self.unit}", measured, self.verdict, self.note]


def best_rps(cells: list[Cell], target: str, mode: str) -> tuple[float | None, str]:
    candidates = [c for c in cells if c.target == target and c.mode == mode]
    if not candidates:
        return None, ""
    best = max(candidates, key=lambda c: c.rps)
    return best.rps, f"best of c={','.join(str(c.concurrency) for c in candidates)} (c={best.concurrency})"


def latency_targets(cells: list[Cell]) -> list[Target]:
    direct, gateway = find(cells, "direct", "non-stream", 1), find(cells, "gateway", "non-stream", 1)
    sdirect, sgateway = find(cells, "direct", "stream", 1), find(cells, "gateway", "stream", 1)
    p50 = p99 = ttfb = None
    if direct and gateway:
        p50 = _diff(gateway.lat(50), direct.lat(50))
        p99 = _diff(gateway.lat(99), direct.lat(99))
    if sdirect and sgateway:
        ttfb = _diff(sgateway.ttfb(50), sdirect.ttfb(50))
    json_rps, json_note = best_rps(cells, "gateway", "non-stream")
    stream_rps, stream_note = best_rps(cells, "gateway", "stream")
    return [
        Target("added latency p50, non-stream, c=1", 0.5, "ms", p50),
        Target("added latency p99, non-stream, c=1", 2.0, "ms", p99),
        Target("added TTFB p50, 20-chunk stream, c=1", 1.0, "ms", ttfb),
        Target("gateway non-stream throughput (1 worker, 1 core)", 3000, "req/s", json_rps, True, json_note),
        Target("gateway 20-chunk streams (1 worker, 1 core)", 1000, "streams/s", stream_rps, True, stream_note),
    ]


TARGET_COLUMNS = ("target", "limit", "measured", "result", "note")


def targets_table(targets: list[Target]) -> str:
    return format_table([t.row() for t in targets], TARGET_COLUMNS, left=(0, 3, 4))
