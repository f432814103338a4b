"""What the server process does for itself at start-up, checked in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc
from gateway.server import app_from_env
before = gc.get_freeze_count()
app_from_env()
print(before, gc.get_freeze_count())
"""


def test_start_up_objects_are_frozen_out_of_the_collector(tmp_path: Path) -> None:
    # Otherwise every full collection walks them: a ~70 ms stall of the event loop (bench/README.md).
    env = {**os.environ, "CUTOVER_CONFIG": str(ROOT / "config" / "demo.yaml"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    before, after = (int(n) for n in done.stdout.split())
    assert before == 0
    assert after > 10_000  # modules, config, routes and tables: everything start-up built
