"""Where a result came from: the code version recorded beside every benchmark, run and agent."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> str:
    """Short git commit of the checkout this package runs from ('unknown' outside git)."""
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL,
                                       cwd=Path(__file__).resolve().parent).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
