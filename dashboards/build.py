"""Source of the Grafana dashboards in this directory.

`python dashboards/build.py` rewrites gateway.json, migration.json and
plan-and-execute.json from gateway_board.py, migration_board.py and pe_board.py
(board.py is the kit they share); `--check` only reports whether the JSON files
are up to date (tests/dashboards runs it). Edit the panels there, not in the
JSON, so ids, grid positions, units and the data source stay consistent.

Every panel queries the data source chosen in the `DS_PROMETHEUS` template
variable, so a dashboard imports as is, with no fixed data source uid. Queries use
Grafana's `$__rate_interval` / `$__interval` / `$__range`, and the template
variables `$alias`, `$provider`, `$migration` and `$meta_model`.
"""


from __future__ import annotations

import argparse
import json
import sys

from board import HERE
from gateway_board import gateway
from migration_board import migration
from pe_board import plan_and_execute

BOARDS = {"gateway.json": gateway, "migration.json": migration, "plan-and-execute.json": plan_and_execute}


def render(name: str) -> str:
    return json.dumps(BOARDS[name]().to_json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a JSON file differs from its definition")
    args = parser.parse_args(argv)
    stale = []
    for name in BOARDS:
        path = HERE / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run python dashboards/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
