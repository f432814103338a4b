"""Inline SVG for the migration report (migration.report): drawn in Python, no script, font or file from elsewhere.

Every chart shares one time axis (`Axis`: the audit's first to last entry, with the
migration's transitions marked), so a reader can line a spike up with the step it
happened in. Values reach the page only through `esc` or `number_attr`: audit text
may carry what a user typed. Each drawn series carries `data-series`, `data-count`
and `data-last` (its exact last value), so a test can read back what was drawn.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Point = tuple[float, float]
Format = Callable[[float], str]

WIDTH, HEIGHT = 760, 200
LEFT, RIGHT, TOP, BOTTOM = 70, 12, 10, 26
PHASE_COLOURS = {
    "pending": "#9aa5b1", "shadow": "#7b61c4", "canary": "#2f7fd1", "promoted": "#2e9d5b",
    "paused": "#d9a21b", "rolled_back": "#c8453b", "aborted": "#5f6368",
}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def number_attr(value: object) -> str:
    """A number exactly as the audit holds it (JSON text: float repr round-trips), for a data attribute."""
    return esc(json.dumps(value))


def elapsed(seconds: float) -> str:
    s = abs(seconds)
    if s < 10:
        return f"{seconds:.1f} s"
    if s < 120:
        return f"{seconds:.0f} s"
    if s < 7200:
        return f"{seconds / 60:.1f} min"
    if s < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@dataclass(frozen=True, slots=True)
class Axis:
    start: float
    end: float
    # (time, label) of every transition, drawn as a dashed line on each chart.
    marks: tuple[tuple[float, str], ...] = ()

    def x(self, t: float) -> float:
        span = self.end - self.start
        share = (t - self.start) / span if span > 0 else 1.0
        return LEFT + max(0.0, min(1.0, share)) * (WIDTH - LEFT - RIGHT)


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    label: str
    colour: str
    # Broken where a new step starts: a step's figures are counted from its own start.
    segments: tuple[tuple[Point, ...], ...]
    dashed: bool = False

    @property
    def points(self) -> list[Point]:
        return [p for segment in self.segments for p in segment]


@dataclass(frozen=True, slots=True)
class Band:
    """A confidence band: (time, lower, upper) per point, broken like a series."""

    label: str
    colour: str
    segments: tuple[tuple[tuple[float, float, float], ...], ...]


def _x_ticks(axis: Axis) -> str:
    parts = []
    for i in range(5):
        t = axis.start + (axis.end - axis.start) * i / 4
        x = axis.x(t)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        label = esc(elapsed(t - axis.start))
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">+{label}</text>')
    for t, label in axis.marks:
        x = axis.x(t)
        parts.append(f'<line class="mark" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}">'
                     f'<title>{esc(label)}</title></line>')
    return "".join(parts)


def _polyline(points: Sequence[Point], y: Callable[[float], float], axis: Axis, colour: str, dashed: bool) -> str:
    coords = " ".join(f"{axis.x(t):.1f},{y(v):.1f}" for t, v in points)
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    if len(points) == 1:
        t, v = points[0]
        return f'<circle cx="{axis.x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>'
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>'


def line_chart(
    key: str, series: Sequence[Series], axis: Axis, fmt: Format, *,
    threshold: float | None = None, threshold_label: str = "threshold", band: Band | None = None,
    empty: str = "Nothing recorded.",
) -> str:
    """A chart of `series` against time, the threshold as a red line, the band shaded (clipped to the range)."""
    values = [v for s in series for _, v in s.points]
    if not values:
        return f'<p class="empty" data-chart="{esc(key)}" data-count="0">{esc(empty)}</p>'
    edges = [*values, *([threshold] if threshold is not None else [])]
    low, high = min(0.0, *edges), max(edges)
    if high <= low:
        high = low + (abs(low) or 1.0)
    high += (high - low) * 0.08

    def y(v: float) -> float:
        v = max(low, min(high, v))
        return TOP + (high - v) / (high - low) * (HEIGHT - TOP - BOTTOM)

    parts = [f'<svg class="chart" data-chart="{esc(key)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
             f'<title>{esc(key)}</title>']
    for i in range(5):
        v = low + (high - low) * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y(v):.1f}" x2="{WIDTH - RIGHT}" y2="{y(v):.1f}"/>'
                     f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{esc(fmt(v))}</text>')
    parts.append(_x_ticks(axis))
    if band is not None:
        for segment in band.segments:
            upper = " ".join(f"{axis.x(t):.1f},{y(hi):.1f}" for t, _, hi in segment)
            lower = " ".join(f"{axis.x(t):.1f},{y(lo):.1f}" for t, lo, _ in reversed(segment))
            parts.append(f'<polygon class="band" points="{upper} {lower}" fill="{band.colour}" fill-opacity="0.18">'
                         f'<title>{esc(band.label)}</title></polygon>')
    if threshold is not None:
        parts.append(f'<line class="threshold" data-threshold="{number_attr(threshold)}" x1="{LEFT}" '
                     f'y1="{y(threshold):.1f}" x2="{WIDTH - RIGHT}" y2="{y(threshold):.1f}">'
                     f'<title>{esc(threshold_label)}: {esc(fmt(threshold))}</title></line>')
    for s in series:
        points = s.points
        if not points:
            continue
        lines = "".join(_polyline(seg, y, axis, s.colour, s.dashed) for seg in s.segments if seg)
        parts.append(f'<g data-series="{esc(s.key)}" data-count="{len(points)}" '
                     f'data-last="{number_attr(points[-1][1])}"><title>{esc(s.label)}</title>{lines}</g>')
    parts.append("</svg>")
    legend = [f'<li><span class="swatch" style="background:{s.colour}"></span>{esc(s.label)}</li>'
              for s in series if s.points]
    if band is not None and band.segments:
        legend.append(f'<li><span class="swatch faint" style="background:{band.colour}"></span>{esc(band.label)}</li>')
    if threshold is not None:
        legend.append(f'<li><span class="swatch" style="background:#c8453b"></span>{esc(threshold_label)} '
                      f'{esc(fmt(threshold))}</li>')
    return "".join(parts) + f'<ul class="legend">{"".join(legend)}</ul>'


def timeline(spans: Sequence[tuple[float, float, str, str]], axis: Axis) -> str:
    """The phases one after another: (start, end, phase, label) each, coloured by phase."""
    height = 44
    parts = [f'<svg class="chart timeline" data-chart="timeline" viewBox="0 0 {WIDTH} {height}" role="img">'
             f'<title>phase timeline</title>']
    for start, end, phase, label in spans:
        x0, x1 = axis.x(start), axis.x(end)
        width = max(x1 - x0, 1.5)
        colour = PHASE_COLOURS.get(phase, "#9aa5b1")
        parts.append(f'<g data-phase="{esc(phase)}" data-label="{esc(label)}"><rect x="{x0:.1f}" y="4" '
                     f'width="{width:.1f}" height="22" fill="{colour}"><title>{esc(label)} from '
                     f'+{esc(elapsed(start - axis.start))} to +{esc(elapsed(end - axis.start))}</title></rect>')
        if width > 7 * len(label) + 6:
            parts.append(f'<text class="inbar" x="{x0 + 4:.1f}" y="19">{esc(label)}</text>')
        parts.append("</g>")
    for i in range(5):
        t = axis.start + (axis.end - axis.start) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(f'<text x="{axis.x(t):.1f}" y="{height - 4}" text-anchor="{anchor}">'
                     f'+{esc(elapsed(t - axis.start))}</text>')
    return "".join(parts) + "</svg>"


def share_bar(key: str, parts: Sequence[tuple[str, int, str]]) -> str:
    """One bar split in proportion to counts: (label, count, colour) each; labels and counts in a legend."""
    total = sum(count for _, count, _ in parts)
    if total <= 0:
        return f'<p class="empty" data-chart="{esc(key)}">Nothing counted.</p>'
    x, rects, legend = 0.0, [], []
    for label, count, colour in parts:
        width = (WIDTH - 2) * count / total
        rects.append(f'<rect x="{x + 1:.1f}" y="2" width="{width:.1f}" height="24" fill="{colour}">'
                     f'<title>{esc(label)}: {count}</title></rect>')
        legend.append(f'<li><span class="swatch" style="background:{colour}"></span>{esc(label)} '
                      f'{count} ({count / total:.1%})</li>')
        x += width
    return (f'<svg class="chart bar" data-chart="{esc(key)}" viewBox="0 0 {WIDTH} 28" role="img">'
            f'{"".join(rects)}</svg><ul class="legend">{"".join(legend)}</ul>')
