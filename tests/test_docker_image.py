"""The container image, built and run for real, as README.md's "Container image" section tells a user to.

Needs a Docker daemon and, as no image registry is reachable here, the stand-in base image:
docker/ensure-docker.sh and docker/build-base.sh provide both (`make docker-ready`, which `make test` runs
first) and the fixture runs them again, so this module never skips: without Docker it fails, saying why.
The container runs as documented: read-only root, a tmpfs on /tmp, the /data volume, two workers, and on
the host's network bound to 127.0.0.1 (the daemon here has no bridge network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support import ROOT, free_port, wait_for

# Building the base image takes minutes the first time; pytest's default per-test limit would end it.
pytestmark = pytest.mark.timeout(1800)

BASE_IMAGE = os.environ.get("CUTOVER_BASE_IMAGE", "cutover-base:bookworm")
IMAGE = "cutover:smoke-test"
LABEL = "org.cutover.smoke-test"
DEMO_KEY = "sk-cutover-demo"
# Where Debian keeps a machine's own CAs: this one's include its TLS-intercepting proxy's, which pip
# inside the build needs to reach PyPI. They go in as the documented build input, docker/certs/*.crt.
LOCAL_CAS = Path(os.environ.get("CUTOVER_EXTRA_CA_DIR", "/usr/local/share/ca-certificates"))
MAX_IMAGE_BYTES = 400_000_000


def _run(command: Sequence[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except FileNotFoundError as exc:
        pytest.fail(f"{command[0]} is not installed: {exc}")
    if check and done.returncode != 0:
        output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        pytest.fail(f"`{' '.join(command)}` exited with {done.returncode}:\n{output}")
    return done


def _build_context(into: Path) -> Path:
    """The checkout (less what is heavy and never sent: .dockerignore still decides), with this machine's CAs."""
    heavy = shutil.ignore_patterns(".git", ".venv", "*_cache", "__pycache__", "*.egg-info", "build", "results",
                                   ".cutover")
    context = into / "context"
    shutil.copytree(ROOT, context, ignore=heavy)
    for certificate in sorted(LOCAL_CAS.rglob("*.crt")):
        shutil.copy(certificate, context / "docker" / "certs" / f"local-{certificate.name}")
    return context


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    _run(["bash", "docker/ensure-docker.sh"], timeout=600)
    _run(["bash", "docker/build-base.sh", BASE_IMAGE], timeout=1200)
    context = _build_context(tmp_path_factory.mktemp("docker"))
    started = time.monotonic()
    _run(["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--label", LABEL,
          "-t", IMAGE, str(context)], timeout=1200)
    print(f"\nimage {IMAGE} on {BASE_IMAGE} built in {time.monotonic() - started:.1f} s")
    # The smoke test's earlier builds, untagged by this one.
    _run(["docker", "image", "prune", "-f", "--filter", f"label={LABEL}"], timeout=120)
    return IMAGE


@dataclass
class Container:
    name: str
    port: int

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self, template: str) -> str:
        return _run(["docker", "inspect", "-f", template, self.name], timeout=30).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def logs(self) -> str:
        done = _run(["docker", "logs", self.name], timeout=30)
        return done.stdout + done.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return _run(["docker", "exec", self.name, *command], timeout=30, check=False)

    def answers(self, path: str) -> bool:
        if not self.running():
            raise AssertionError(f"{self.name} exited with {self.inspect('{{.State.ExitCode}}')}:\n{self.logs()}")
        try:
            return httpx.get(f"{self.root_url}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_with_sigterm(self) -> tuple[int, float]:
        """SIGTERM as `docker stop` sends it; the exit code and how long the container took to exit."""
        started = time.monotonic()
        _run(["docker", "kill", "--signal", "TERM", self.name], timeout=30)
        try:
            code = int(_run(["docker", "wait", self.name], timeout=10).stdout.strip())
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs 10 s after SIGTERM:\n{self.logs()}") from None
        return code, time.monotonic() - started


def _start(image: str, name: str, *env: str) -> Container:
    container = Container(name, free_port())
    _run(["docker", "rm", "-f", "-v", name], timeout=60, check=False)  # a run that was killed leaves it behind
    _run(["docker", "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
          "-e", "CUTOVER_HOST=127.0.0.1", "-e", f"CUTOVER_PORT={container.port}",
          *(arg for pair in (("-e", e) for e in env) for arg in pair), image], timeout=60)
    wait_for(lambda: container.answers("/healthz"), timeout=60, what=f"{name} to answer /healthz", every=0.1)
    return container


@pytest.fixture(scope="module")
def served(image: str) -> Iterator[Container]:
    # Two workers: read-only, they need the tmpfs for their shared metrics directory.
    container = _start(image, f"cutover-smoke-{os.getpid()}", "CUTOVER_WORKERS=2")
    yield container
    _run(["docker", "rm", "-f", "-v", container.name], timeout=60, check=False)


def _error_lines(log: str) -> list[str]:
    bad = []
    for line in log.splitlines():
        if line.startswith("{"):
            if json.loads(line).get("level") in ("error", "critical"):
                bad.append(line)
        elif "Traceback" in line or "ERROR" in line or "Error" in line:
            bad.append(line)
    return bad


def test_the_image_is_small_and_carries_no_build_leftovers(image: str) -> None:
    size = int(_run(["docker", "image", "inspect", "-f", "{{.Size}}", image], timeout=30).stdout)
    print(f"\nimage {image}: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES
    listing = _run(["docker", "run", "--rm", "--network", "none", image, "ls", "-A", "/app"], timeout=60).stdout
    assert sorted(listing.split()) == sorted(
        ["README.md", "pyproject.toml", "config", "gateway", "metering", "migration", "planner", "providers",
         "routing", "simulator", "store", "telemetry"]
    )


def test_health_and_readiness(served: Container) -> None:
    assert httpx.get(f"{served.root_url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{served.root_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.json()["store"] == "ok"


def test_a_chat_completion_and_a_stream_with_the_demo_key(served: Container) -> None:
    with openai.OpenAI(base_url=f"{served.root_url}/v1", api_key=DEMO_KEY, max_retries=0, timeout=30) as client:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]
        reply = client.chat.completions.create(model="gpt-4", messages=messages)
        assert (reply.choices[0].message.content or "").startswith("[simulated]")
        assert reply.usage is not None and reply.usage.completion_tokens > 0

        stream = client.chat.completions.create(
            model="gpt-4", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("[simulated]") and len(chunks) > 3
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_wrong_key_gets_401(served: Container) -> None:
    with openai.OpenAI(base_url=f"{served.root_url}/v1", api_key="sk-wrong", max_retries=0, timeout=30) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hello"}])
    assert refused.value.status_code == 401


def test_it_runs_as_a_user_on_a_read_only_root_and_keeps_its_state_in_data(served: Container) -> None:
    # PID 1 is the server itself (the shell of the CMD exec'd it), not a shell running as someone else.
    status = served.exec("cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4
    assert "cutover serve" in served.exec("cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    refused = served.exec("touch", "/app/written")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert "demo-state.sqlite" in served.exec("ls", "/data").stdout.split()


def test_the_healthcheck_turns_healthy(served: Container) -> None:
    def healthy() -> bool:
        status = served.inspect("{{.State.Health.Status}}")
        if status == "unhealthy":
            raise AssertionError(f"unhealthy: {served.inspect('{{json .State.Health}}')}")
        return status == "healthy"

    # The first check runs one interval (10 s) after the start.
    wait_for(healthy, timeout=60, what="the HEALTHCHECK to pass", every=0.5)


def test_sigterm_stops_it_cleanly_within_10_s(served: Container) -> None:
    # Last in this module: the container the tests above used stops here.
    code, took = served.stop_with_sigterm()
    log = served.logs()
    assert code == 0, log
    print(f"\nstopped by SIGTERM in {took:.2f} s")
    assert _error_lines(log) == [], log


def test_an_unwritable_state_directory_fails_readiness_and_still_stops_cleanly(image: str) -> None:
    # /app is root's and read-only: the demo's store cannot be created there.
    container = _start(image, f"cutover-smoke-unwritable-{os.getpid()}", "CUTOVER_STATE_DIR=/app/state")
    try:
        answer = httpx.get(f"{container.root_url}/readyz", timeout=10)
        assert answer.status_code == 503, answer.text
        assert "store=not writable (sqlite store /app/state/demo-state.sqlite" in answer.json()["error"]["message"]
        code, _ = container.stop_with_sigterm()
        log = container.logs()
        assert code == 0, log
        # One line names the problem; no failing controller round, no failed shutdown.
        assert [json.loads(line)["message"] for line in _error_lines(log)] == [
            "the store refuses writes; /readyz answers 503 until it is fixed"
        ], log
    finally:
        _run(["docker", "rm", "-f", "-v", container.name], timeout=60, check=False)
