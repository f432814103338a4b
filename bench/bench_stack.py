"""Processes under test: the simulator and the gateway, each its own pinned process.

Also the /proc readings the benchmark reports (RSS, CPU time, other processes'
load on the machine) and the machine description printed at the top.
"""

from __future__ import annotations

import http.client
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLIENT_KEY_ENV = "CUTOVER_BENCH_CLIENT_KEY"
CLIENT_KEY = "sk-cutover-bench"
ALIAS = "bench-model"
UPSTREAM_MODEL = "sim-model"
OUTPUT_TOKENS = 20
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cutover_command() -> list[str]:
    exe = REPO / ".venv" / "bin" / "cutover"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("cutover")
    if found:
        return [found]
    return [sys.executable, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: list[str], core: int | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(core), *command]


def simulator_yaml() -> str:
    # Zero latency, 20 content pieces; no request recording, so the simulator
    # spends as little CPU as possible on the core it shares with the client.
    return (
        "first_token_ms: 0\nper_token_ms: 0\njitter_ms: 0\n"
        f"output_tokens: {OUTPUT_TOKENS}\nerror_rate: 0\nrecord: false\n"
    )


def gateway_yaml(sim_port: int, request_log: bool = False) -> str:
    return f"""\
server:
  host: {HOST}
  request_log: {"true" if request_log else "false"}
  shutdown_grace_s: 1
auth:
  mode: keys
  keys:
    - name: bench
      key_env: {CLIENT_KEY_ENV}
providers:
  sim:
    type: openai
    base_url: http://{HOST}:{sim_port}/v1
    api_key: sk-bench-upstream
models:
  {ALIAS}:
    targets:
      - {{provider: sim, model: {UPSTREAM_MODEL}}}
prices:
  {UPSTREAM_MODEL}: {{input: 2.50, cached_input: 1.25, output: 10.00, context_window: 128000}}
"""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


def start_process(name: str, command: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log_path = workdir / f"{name}.log"
    # Run in the temporary directory, so state files (the gateway's SQLite store) stay out of the repository;
    # the working tree is still what is measured, even if the venv's editable install predates a new package.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": path, **(env or {})}, start_new_session=True,
        )
    return Proc(name, popen, log_path)


def start_simulator(workdir: Path, port: int, core: int | None) -> Proc:
    config = workdir / "simulator.yaml"
    config.write_text(simulator_yaml())
    command = [*cutover_command(), "simulate", "--host", HOST, "--port", str(port), "--config", str(config)]
    return start_process("simulator", pinned(command, core), workdir)


def start_gateway(workdir: Path, port: int, sim_port: int, core: int | None, *, name: str = "gateway",
                  request_log: bool = False) -> Proc:
    """A gateway whose stderr (and so its request log, when on) goes to ``<workdir>/<name>.log``."""
    config = workdir / f"{name}.yaml"
    config.write_text(gateway_yaml(sim_port, request_log))
    command = [*cutover_command(), "serve", "--config", str(config), "--port", str(port), "--workers", "1", "--quiet"]
    return start_process(name, pinned(command, core), workdir, {CLIENT_KEY_ENV: CLIENT_KEY})


def http_status(port: int, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            if http_status(port, "GET", path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready on port {port} after {timeout_s:.0f} s:\n{proc.log_tail()}")


def proc_cpu_s(pid: int) -> float:
    """utime + stime (+ waited-for children) of a process, in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
    return sum(int(x) for x in fields[11:15]) / _CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def machine_busy_s() -> float:
    """CPU seconds in user, nice and system mode on all cores since boot, plus steal (taken by the hypervisor)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()
    steal = int(fields[8]) if len(fields) > 8 else 0
    return (sum(int(x) for x in fields[1:4]) + steal) / _CLK_TCK


@dataclass
class CpuSnapshot:
    """CPU counters at one instant, to attribute a measurement window's CPU."""

    at: float
    server_s: float
    ours_s: float
    machine_s: float

    @classmethod
    def take(cls, server: Proc, ours: list[Proc]) -> CpuSnapshot:
        mine = proc_cpu_s(os.getpid()) + sum(p.cpu_s() for p in ours)
        return cls(time.perf_counter(), server.cpu_s(), mine, machine_busy_s())


@dataclass
class CpuUsage:
    wall_s: float
    server_s: float
    # CPU used by processes that are not part of the benchmark, or stolen by the hypervisor, in cores.
    background_cores: float


def cpu_between(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    wall = max(after.at - before.at, 1e-9)
    foreign = (after.machine_s - before.machine_s) - (after.ours_s - before.ours_s)
    return CpuUsage(wall, after.server_s - before.server_s, max(0.0, foreign) / wall)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gateway", "providers", "routing",
                                "telemetry", "config"], cwd=REPO, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + (" (gateway code modified)" if dirty.strip() else "")


def machine_lines() -> list[str]:
    return [
        f"date        {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine     nproc={os.cpu_count()}  {_cpu_model()}  {platform.system()} {platform.release()}",
        f"python      {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"revision    {_git_revision()}",
    ]


def placement(gw_core: int | None, client_core: int | None) -> str:
    """Pin this process (the load generator) to the client core and say where everything runs."""
    if gw_core is None or client_core is None:
        return "fewer than two usable cores: nothing pinned, numbers are not comparable with other runs"
    try:
        os.sched_setaffinity(0, {client_core})
    except OSError as exc:
        return f"could not pin the load generator to core {client_core}: {exc}"
    return f"gateway on core {gw_core} (taskset); simulator and load generator on core {client_core}"
