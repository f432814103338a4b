"""`cutover migrate ...` and `cutover replay`: the admin API from a terminal.

The gateway's address and admin key come from --url/--key or CUTOVER_ADMIN_URL /
CUTOVER_ADMIN_KEY. A change reads the migration's version first and sends it as
If-Match (or uses --if-match), so a change based on a stale view is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx
import yaml

from migration.verify import verify

ACTIONS = ("pause", "resume", "promote", "promote-fully", "abort", "rollback", "retry", "start")


class CliError(Exception):
    pass


def _client(args: argparse.Namespace) -> httpx.Client:
    key = args.key or os.environ.get("CUTOVER_ADMIN_KEY")
    if not key:
        raise CliError("no admin key: pass --key or set CUTOVER_ADMIN_KEY")
    url = args.url or os.environ.get("CUTOVER_ADMIN_URL", "http://127.0.0.1:8080")
    return httpx.Client(base_url=url.rstrip("/"), headers={"authorization": f"Bearer {key}"}, timeout=10)


def _check(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        message = body["error"]["message"] if isinstance(body, dict) and "error" in body else response.text
        raise CliError(f"{response.status_code}: {message}")
    return body


def _pct(bp: int) -> str:
    return f"{bp / 100:g}%"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns, the first row the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_status(migrations: list[dict[str, Any]]) -> str:
    rows = [("ID", "ALIAS", "PHASE", "STEP", "CANDIDATE", "SHADOW", "VERSION", "REASON")]
    for m in migrations:
        state = m["state"]
        rows.append((
            m["id"], m["spec"]["alias"], state["phase"] + (" (kill switch)" if m.get("kill_switch") else ""),
            str(state["step_index"]) if state["phase"] == "canary" else "-",
            _pct(state["candidate_weight_bp"]), f"{state['shadow_percent']:g}%", str(m["version"]),
            state["reason"][:70],
        ))
    return _table(rows)


def format_history(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in entries:
        move = e["from_phase"] if e["from_phase"] == e["to_phase"] else f"{e['from_phase']} -> {e['to_phase']}"
        lines.append(
            f"{e['time']}  {e['actor']:<10} {e['action']:<12} {move:<22} "
            f"candidate {_pct(e['candidate_weight_bp'])} shadow {e['shadow_percent']:g}%  {e['reason']}"
        )
        verdict = e.get("verdict")
        if verdict:
            for gate in verdict.get("gates", []):
                scope = gate.get("scope", "step")
                lines.append(f"{'':>34}{gate['gate']:<22} {scope:<6} {gate['result']:<13} {gate.get('note', '')}")
    return "\n".join(lines)


def _share(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_replay(result: dict[str, Any]) -> str:
    verdict = result["verdict"]
    lines = [
        f"pre-flight replay of migration {result['migration']} (alias {result['alias']}): "
        f"{result['replayed']} of {result['captured']} captured requests replayed on both arms"
        + (f", {result['excluded']} excluded (shadow.exclude_tools)" if result["excluded"] else "")
        + (f", {result['unreadable']} unreadable" if result["unreadable"] else ""),
        f"{result['compared']} pairs compared, {result['judged']} judged",
        f"verdict: {verdict['result'].upper()}  {verdict['reason']}",
        "",
    ]
    rows = [("GATE", "RESULT", "ESTIMATE", "LIMIT", "BASELINE", "NOTE")]
    rows += [(g["gate"], g["result"], _share(g["estimate"]), _share(g["threshold"]), _share(g["beside"]),
              g.get("note", "")[:90]) for g in verdict["gates"] if g.get("scope", "step") == "step"]
    return "\n".join([*lines, _table(rows)])


def _version_of(client: httpx.Client, migration_id: str) -> int:
    response = client.get(f"/admin/migrations/{migration_id}")
    return int(_check(response)["version"])


def run(args: argparse.Namespace) -> str:
    with _client(args) as client:
        if args.migrate_command == "status":
            if args.id:
                return format_status([_check(client.get(f"/admin/migrations/{args.id}"))])
            return format_status(_check(client.get("/admin/migrations"))["data"])
        if args.migrate_command == "history":
            entries = _check(client.get(f"/admin/migrations/{args.id}/history"))["data"]
            if args.verify:
                report = verify(entries)
                if not report.ok:
                    raise CliError(str(report))
                return str(report)
            return format_history(entries)
        if args.migrate_command == "report":
            page = client.get(f"/admin/migrations/{args.id}/report")
            _check(page)
            path = args.output or f"migration-{args.id}.html"
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(page.text)
            return path
        if args.migrate_command == "replay":
            body: dict[str, Any] = {"concurrency": args.concurrency}
            if args.limit is not None:
                body["limit"] = args.limit
            # A replay waits for every pair (and its judgement): it can take minutes.
            return format_replay(_check(client.post(f"/admin/migrations/{args.migration}/replay", json=body,
                                                    timeout=args.timeout)))
        if args.migrate_command == "create":
            with open(args.file, encoding="utf-8") as handle:
                spec = yaml.safe_load(handle)
            spec["start"] = not args.no_start
            return format_status([_check(client.post("/admin/migrations", json=spec))])
        if args.migrate_command == "kill-switch":
            body = _check(client.put(f"/admin/aliases/{args.alias}/kill-switch", json={"enabled": args.state == "on"}))
            return f"kill switch for {body['alias']}: {'on' if body['kill_switch'] else 'off'}"
        action = args.migrate_command
        payload: dict[str, Any] = {"reason": args.reason} if getattr(args, "reason", None) else {}
        if action == "set-weight":
            payload["weight"] = args.percent
        version = args.if_match if args.if_match is not None else _version_of(client, args.id)
        response = client.post(
            f"/admin/migrations/{args.id}/{action}", json=payload, headers={"if-match": str(version)}
        )
        return format_status([_check(response)])


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="gateway root URL (default $CUTOVER_ADMIN_URL or http://127.0.0.1:8080)")
    parser.add_argument("--key", help="admin key (default $CUTOVER_ADMIN_KEY)")


def add_parser(sub: Any) -> None:
    replay = sub.add_parser("replay", help="pre-flight: replay the alias's captured requests against a migration's "
                            "two arms and print the gates' verdict (changes no state)")
    _connection_arguments(replay)
    replay.add_argument("--migration", required=True, help="the migration's id")
    replay.add_argument("--limit", type=int, help="only the newest N captured requests")
    replay.add_argument("--concurrency", type=int, default=4, help="requests replayed at once (default 4)")
    replay.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the verdict")
    replay.set_defaults(func=cmd_migrate, migrate_command="replay")
    migrate = sub.add_parser("migrate", help="operate migrations through the admin API")
    _connection_arguments(migrate)
    msub = migrate.add_subparsers(dest="migrate_command", required=True)
    status = msub.add_parser("status", help="phase, weights and version of one or all migrations")
    status.add_argument("id", nargs="?")
    history = msub.add_parser("history", help="the audit trail of a migration")
    history.add_argument("id")
    history.add_argument("--verify", action="store_true",
                         help="recompute every verdict from the audit records alone; exit 1 on any mismatch")
    report = msub.add_parser("report", help="write the migration's report: one self-contained HTML page")
    report.add_argument("id")
    report.add_argument("-o", "--output", help="where to write it (default: migration-ID.html)")
    create = msub.add_parser("create", help="create a migration from a YAML/JSON spec file")
    create.add_argument("file")
    create.add_argument("--no-start", action="store_true", help="leave it pending")
    kill = msub.add_parser("kill-switch", help="route an alias wholly to its baseline, or release it")
    kill.add_argument("alias")
    kill.add_argument("state", choices=["on", "off"])
    for action in ACTIONS:
        parser = msub.add_parser(action, help=f"{action} a migration")
        parser.add_argument("id")
        parser.add_argument("--reason", default="")
        parser.add_argument("--if-match", type=int, help="expected version (default: read it first)")
    weight = msub.add_parser("set-weight", help="set the candidate's share by hand (pauses automatic analysis)")
    weight.add_argument("id")
    weight.add_argument("percent", type=float)
    weight.add_argument("--reason", default="")
    weight.add_argument("--if-match", type=int)
    migrate.set_defaults(func=cmd_migrate)


def _command(args: argparse.Namespace) -> str:
    return "replay" if args.migrate_command == "replay" else "migrate"


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        print(run(args))
    except CliError as exc:
        print(f"cutover {_command(args)}: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
        print(f"cutover {_command(args)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
