"""The migration report in a real browser.

A migration walks to a settled promotion on simulated upstreams through a real gateway
(the candidate fails 2 % of its calls, under a loose error gate, so the error figures are
not all zero). Its report is fetched through the admin API and written by
`cutover migrate report`; headless Chromium renders it with every way out closed (a dead
proxy, a resolver that finds nothing, background networking off) and a net log that shows
any request the page makes. The rendered DOM must hold every section, and the numbers in
its data attributes must be the audit's own (from /history): the last verdict's gates, the
charts' last points, the phases. Chromium is required, not optional: `make test` installs it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from migration.report_figures import confidence_bounds
from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import route, routing, upstream
from tests.migration.support import (
    ADMIN_KEY,
    ALIAS,
    MIGRATION_ID,
    Stack,
    Traffic,
    admin_client,
    admin_section,
    migration_spec,
)
from tests.migration.test_report import Page
from tests.support import CLIENT_KEY, wait_for

CHROMIUM = shutil.which("chromium")
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-sync")
PRICES = {"old": {"input": 20, "output": 40}, "new": {"input": 10, "output": 20}}
SECTIONS = ("summary", "timeline", "gates", "charts", "quality", "arms")
_runs = itertools.count()


def chromium(tmp: Path, page: Path, *args: str) -> tuple[str, list[str]]:
    """Headless Chromium, offline, on `page`: (its stdout, the URLs the page asked the network for)."""
    assert CHROMIUM, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    run = next(_runs)
    netlog = tmp / f"netlog-{run}.json"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / f'profile-{run}'}",
               *OFFLINE, f"--log-net-log={netlog}", *args, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, page_requests(netlog)


def page_requests(netlog: Path) -> list[str]:
    """URLs requested on a page's behalf. Chromium's own background requests (which the dead proxy refuses
    anyway) carry no initiator; a page's carry its origin ("null" for a file)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and e.get("params", {}).get("initiator", "not an origin") != "not an origin"]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_network_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    """The control: the same check on a page that does load things finds them."""
    page = tmp_path / "fetches.html"
    page.write_text('<img src="http://example.invalid/a.png"><link rel="stylesheet" href="https://cdn.invalid/b.css">')
    _, requested = chromium(tmp_path, page, "--dump-dom")
    assert set(requested) == {"http://example.invalid/a.png", "https://cdn.invalid/b.css"}


def _gate_rows_match(page: Page, verdict: dict[str, Any]) -> None:
    for g in verdict["gates"]:
        row = page.one("tr", data_gate=g["gate"], data_scope=g["scope"])
        assert row.attrs["data-result"] == g["result"], g["gate"]
        for key in ("estimate", "threshold", "alpha", "beside"):
            assert row.number(f"data-{key}") == g[key], (g["gate"], g["scope"], key)
        assert json.loads(row.attrs["data-inputs"]) == g["inputs"]
        lower, upper = row.number("data-lower"), row.number("data-upper")
        assert (lower, upper) == (confidence_bounds(g) or (None, None))
        if lower is None:  # the critical guard is a plain share, with no bounds; other tests give none undecided
            assert g["inputs"]["test"] == "critical" or g["result"] in ("inconclusive", "skipped"), g
            continue
        higher_is_better = g["gate"] == "quality_win_rate"
        if g["result"] == "pass":
            assert (lower > g["threshold"]) if higher_is_better else (upper < g["threshold"]), g
        if g["result"] == "fail":
            assert (upper < g["threshold"]) if higher_is_better else (lower > g["threshold"]), g


def _last_value(ticks: list[dict[str, Any]], gate: str, field: str) -> tuple[int, Any]:
    values = [g[field] for t in ticks for g in t["verdict"]["gates"]
              if g["gate"] == gate and g["scope"] == "step" and g[field] is not None]
    return len(values), values[-1] if values else None


def test_the_report_of_a_real_migration_renders_offline_with_the_audits_numbers(
    make_sim: SimFactory, make_gateway: GatewayFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    baseline = make_sim(output_tokens=4, first_token_ms=4, jitter_ms=3, seed=1)
    candidate = make_sim(output_tokens=4, first_token_ms=6, jitter_ms=4, seed=2, error_rate=0.02,
                         error_kinds={"server_error": 1})
    extra = {"migrations": [migration_spec(gates={"error_rate": 0.15})], "controller": {"sync_interval_s": 0.1},
             "store": {"backend": "memory"}, "admin": admin_section()}
    gw = make_gateway({"legacy": upstream(baseline), "modern": upstream(candidate)}, {ALIAS: route(("legacy", "old"))},
                      prices=PRICES, routing=routing(), extra=extra)
    stack = Stack(gw, baseline, candidate)
    try:
        with Traffic(gw, workers=6):
            stack.wait_for("promoted", settled=True, timeout=90)
        # Settled: no more ticks. Wait until the step's window has taken the last answers in, too.
        wait_for(lambda: stack.describe() == stack.describe(), timeout=10, what="a still migration")
        history = stack.history()
        described = stack.describe()

        out = tmp_path / "report.html"
        code = main(["migrate", "--url", gw.root_url, "--key", ADMIN_KEY, "report", MIGRATION_ID, "-o", str(out)])
        assert (code, capsys.readouterr().out.strip()) == (0, str(out))
        monkeypatch.chdir(tmp_path)
        assert main(["migrate", "--url", gw.root_url, "--key", ADMIN_KEY, "report", MIGRATION_ID]) == 0
        assert capsys.readouterr().out.strip() == f"migration-{MIGRATION_ID}.html"

        response = stack.admin.get(f"/admin/migrations/{MIGRATION_ID}/report")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert out.read_text() == response.text == (tmp_path / f"migration-{MIGRATION_ID}.html").read_text()
        with admin_client(gw, CLIENT_KEY) as client_key:
            assert client_key.get(f"/admin/migrations/{MIGRATION_ID}/report").status_code == 403
        missing = stack.admin.get("/admin/migrations/nope/report")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "migration_not_found"
        assert main(["migrate", "--url", gw.root_url, "--key", ADMIN_KEY, "report", "nope"]) == 1
        assert "404" in capsys.readouterr().err
        assert stack.history() == history  # nothing moved while the report was read
    finally:
        stack.close()

    dom, requested = chromium(tmp_path, out, "--dump-dom")
    assert requested == []
    page = Page(dom)
    for section in SECTIONS:
        assert page.one("section", id=section).text.strip(), section
    assert not page.all("script") and page.all("svg")

    ticks = [e for e in history if e["kind"] == "tick"]
    last = ticks[-1]["verdict"]
    assert any(g["estimate"] for t in ticks for g in t["verdict"]["gates"] if g["gate"] == "error_rate")
    summary = page.one("section", id="summary")
    assert (summary.attrs["data-phase"], summary.attrs["data-result"]) == ("promoted", last["result"])
    assert int(summary.attrs["data-ticks"]) == len(ticks) and int(summary.attrs["data-entries"]) == len(history)
    assert summary.attrs["data-verified"] == "true"
    assert page.one("section", id="gates").attrs["data-time"] == ticks[-1]["time"]
    _gate_rows_match(page, last)
    error = next(g for g in last["gates"] if g["gate"] == "error_rate" and g["scope"] == "step")
    assert f"{error['estimate']:.2%}" in page.one("tr", data_gate="error_rate", data_scope="step").text

    for key, gate, field in (("error_rate.estimate", "error_rate", "estimate"),
                             ("error_rate.beside", "error_rate", "beside"),
                             ("latency_p99.baseline", "latency_p99", "beside"),
                             ("cost.estimate", "cost", "estimate")):
        count, value = _last_value(ticks, gate, field)
        series = page.one("g", data_series=key)
        assert (series.number("data-count"), series.number("data-last")) == (count, value), key

    transitions = [e for e in history if e["kind"] == "transition"]
    assert [e.attrs["data-label"] for e in page.all("g", data_label="")] == [
        "pending", "shadow 50%", "canary 25%", "canary 50%", "canary 75%", "canary 100%",
        "promoted (safety window)", "promoted"]
    assert [e.attrs["data-action"] for e in page.all("tr", data_action="")] == [e["action"] for e in transitions]

    window = described["local_window"]
    for arm in ("baseline", "candidate"):
        row = page.one("tr", data_arm=arm)
        assert row.number("data-requests") == window[arm]["requests"]
        assert row.number("data-attempts") == window[arm]["attempts"]["count"]

    assert "Not judged" in page.one(id="quality-judge").text  # no judge configured
    assert page.one(id="judged-pairs").text.startswith("No examples stored")
    checks = [g["gate"] for g in last["gates"] if g["gate"] in ("quality_json", "quality_tools")
              and g["scope"] == "step"]
    assert [e.attrs["data-check"] for e in page.all("tr", data_check="")] == checks

    shot = tmp_path / "report.png"
    _, requested = chromium(tmp_path, out, f"--screenshot={shot}", "--window-size=1280,4600", "--hide-scrollbars")
    assert requested == []
    data = shot.read_bytes()
    assert png_size(data) == (1280, 4600)
    assert len(data) > 100_000, "the screenshot is nearly blank"  # a blank page compresses to a few kB
