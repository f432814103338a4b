"""How the migration report writes its figures: numbers, shares, money, badges and data attributes, escaped."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from migration.report_charts import esc, number_attr

Entry = Mapping[str, Any]
Format = Callable[[float], str]
NONE = "&ndash;"
BLUE, ORANGE, GREY, GREEN, RED = "#2f7fd1", "#e07b00", "#8a8f98", "#2e9d5b", "#c8453b"


def pct(v: float) -> str:
    return f"{v:.2%}"


def signed_pct(v: float) -> str:
    return "∞" if v == float("inf") else f"{v:+.2%}"


def ms(v: float) -> str:
    return f"{v:.0f} ms"


def usd(micros: float) -> str:
    return f"${micros / 1_000_000:.6f}"


def count(v: float) -> str:
    return f"{v:.0f}"


def general(v: float) -> str:
    return f"{v:.4g}"


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def show(value: Any, fmt: Format) -> str:
    return esc(fmt(float(value))) if isinstance(value, int | float) and not isinstance(value, bool) else NONE


def data_attrs(values: Mapping[str, Any]) -> str:
    return " ".join(f'data-{key.replace("_", "-")}="{number_attr(value)}"' for key, value in values.items())


def badge(result: object) -> str:
    return f'<span class="badge {esc(result)}">{esc(result)}</span>'
