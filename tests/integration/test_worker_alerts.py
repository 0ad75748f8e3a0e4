"""The worker's alert rules pass their promtool unit tests (real promtool)."""

from __future__ import annotations

import subprocess

from tests.support.tools import ROOT, require


def test_worker_rules_are_valid_and_their_unit_tests_pass():
    promtool = require("promtool")
    rules = ROOT / "ops" / "prometheus" / "rules" / "worker.yml"
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = ROOT / "ops" / "prometheus" / "tests" / "worker_test.yml"
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
