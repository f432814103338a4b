"""Make a file or directory read-only for this very process, root included, and give it back afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """A directory in which nothing can be created, or a file that cannot be written, while inside."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield path
        finally:
            path.chmod(mode)
        return
    # Root ignores permission bits (CI runs as root); the immutable attribute stops root too.
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(
            f"cannot make {path} read-only for root: chattr +i failed ({made.stderr.strip()}); "
            "the test needs a filesystem with the immutable attribute (ext4, xfs, btrfs) for its temporary files"
        )
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)
