"""The image gets every package the wheel installs: a package missing from the Dockerfile's COPY lines would
build an image that fails at its first import (store/, migration/, planner/ and metering/ once were), and one
missing from .dockerignore's allowlist would not even reach the build. tests/test_docker_image.py builds and
runs the image; these checks need no Docker."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _packages() -> set[str]:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"]
    return {pattern.removesuffix("*") for pattern in include}


def test_the_dockerfile_copies_every_installed_package() -> None:
    packages = _packages()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", DOCKERFILE, flags=re.MULTILINE))
    assert packages == copied
    assert all((ROOT / package / "__init__.py").exists() for package in packages)


def test_the_build_context_lets_every_copied_package_through() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert _packages() | {"pyproject.toml", "README.md"} <= allowed


def test_dependencies_are_installed_before_any_source_is_copied() -> None:
    # So that editing the sources rebuilds only the small layers after it.
    lines = DOCKERFILE.splitlines()
    installs = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ")]
    before = [lines[i] for i in copies if i < installs]
    assert before == ["COPY docker/certs/ /usr/local/share/ca-certificates/cutover/",
                      "COPY pyproject.toml /tmp/cutover/pyproject.toml"]
