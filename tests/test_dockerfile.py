"""The image gets every package the wheel installs: a package missing from the Dockerfile's COPY lines would
build an image that fails at its first import (store/, migration/, planner/ and metering/ once were)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dockerfile_copies_every_installed_package() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"]
    packages = {pattern.removesuffix("*") for pattern in include}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE))
    assert packages == copied
    assert all((ROOT / package / "__init__.py").exists() for package in packages)
