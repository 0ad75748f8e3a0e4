"""Every Prometheus rule file, the scrape config and every rule unit test, through promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.tools import ROOT, require

PROM = ROOT / "ops" / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
TESTS = sorted((PROM / "tests").glob("*_test.yml"))


def promtool(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [require("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_layout_is_there() -> None:
    assert (PROM / "prometheus.yml").is_file()
    assert PROM / "rules" / "butler.yml" in RULES
    assert PROM / "tests" / "butler_test.yml" in TESTS


@pytest.mark.parametrize("rules", RULES, ids=lambda p: p.name)
def test_rules_are_valid(rules: Path) -> None:
    promtool("check", "rules", str(rules))


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.scale.yml"])
def test_scrape_config_is_valid(config: str) -> None:
    promtool("check", "config", str(PROM / config))


@pytest.mark.parametrize("unit", TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(unit: Path) -> None:
    # Rule files are named relative to the test file, so run from its folder.
    out = promtool("test", "rules", unit.name, cwd=unit.parent)
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    runbook = (ROOT / "ops" / "RUNBOOK.md").read_text(encoding="utf-8").lower()
    tested = set()
    for unit in TESTS:
        for case in yaml.safe_load(unit.read_text())["tests"]:
            tested |= {a["alertname"] for a in case["alert_rule_test"] if a["exp_alerts"]}
    for rules in RULES:
        for group in yaml.safe_load(rules.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert")
                if name:
                    assert name in tested, f"{name} never fires in a unit test"
                    assert f"### {name.lower()}" in runbook, f"{name} has no RUNBOOK section"
