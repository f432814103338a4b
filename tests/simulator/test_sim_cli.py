"""run_simulator: the blocking entry point behind ``cutover simulate``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (
    "from simulator import SimulationSettings, run_simulator\n"
    "run_simulator('127.0.0.1', 0, SimulationSettings(reply='from the cli'))\n"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_simulator_announces_itself_and_stops_on_signal(sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "cutover simulator" in line and "simulated" in line
            match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
            assert match, line
            reply = httpx.post(
                f"{match.group(1)}/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            ).json()
            assert reply["choices"][0]["message"]["content"] == "from the cli"
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=10)
            assert proc.returncode == 0, stderr
        finally:
            if proc.poll() is None:
                proc.kill()
