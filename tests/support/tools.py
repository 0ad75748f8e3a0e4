"""External programs the suites drive for real (installed by `tests/setup-system.sh`), and
the one rule for what a test does when one is missing: fail under CI, skip elsewhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]

INSTALL = {
    "espeak-ng": "sudo apt-get install -y espeak-ng",
    "ffmpeg": "sudo apt-get install -y ffmpeg",
    "promtool": "sudo apt-get install -y prometheus",
    "chromium": "sudo apt-get install -y chromium chromium-driver",
    "chromedriver": "sudo apt-get install -y chromium-driver",
    "node": "sudo apt-get install -y nodejs npm",
    "telegram-test-api-is-installed": "bash tests/setup-system.sh  # npm, into tests/node",
}
"""The install line to run for each tool (tests/setup-system.sh runs them all)."""


def in_ci() -> bool:
    """Whether this run is CI's: `CI` set to anything but empty, 0 or false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str, install: str) -> NoReturn:
    """A test needs `what`, which is absent: fail under CI with the line to run, else skip."""
    message = f"{what} is not installed; run: {install}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(command: str) -> str:
    """The path of `command`; a missing tool fails under CI and skips elsewhere.

    CI must never pass by skipping: `tests/setup-system.sh` installs every tool there.
    """
    found = shutil.which(command)
    if found is None:
        found = _node_bin(command)
    if found is not None:
        return found
    missing(command, INSTALL.get(command, "bash tests/setup-system.sh"))


def _node_bin(command: str) -> str | None:
    candidate = ROOT / "tests" / "node" / "node_modules" / ".bin" / command
    return str(candidate) if candidate.exists() else None
