"""External programs the suites drive for real (installed by `tests/setup-system.sh`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def require(command: str) -> str:
    """The path of `command`; a missing tool fails under CI and skips elsewhere.

    CI must never pass by skipping: `tests/setup-system.sh` installs every tool there.
    """
    found = shutil.which(command)
    if found is None:
        found = _node_bin(command)
    if found is not None:
        return found
    message = f"{command} is not installed (run: bash tests/setup-system.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _node_bin(command: str) -> str | None:
    candidate = ROOT / "tests" / "node" / "node_modules" / ".bin" / command
    return str(candidate) if candidate.exists() else None
