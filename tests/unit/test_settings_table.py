"""The one table of `BUTLER_*` variables: its defaults are everyone's defaults, the docs are
generated from it, no code reads a variable it lacks, and `butler` reports bad values plainly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap.settings import Settings, configuration_table
from adapters.bootstrap.variables import REMOVED, VARIABLES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
BEGIN, END = "<!-- BEGIN configuration_table() -->\n", "<!-- END configuration_table() -->"


def attribute(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


@pytest.mark.parametrize("var", [v for v in VARIABLES if not v.derive], ids=lambda v: v.name)
def test_the_tables_default_is_the_dataclasses_default(var: Any) -> None:
    from_env = Settings.from_env({"HOME": "/tmp"})
    # Built without the table: Settings' own field defaults and those of Budget,
    # CompressionPolicy, ActorSettings, SttSettings and TelegramSettings.
    constructed = Settings(data_dir=Path("/d"), store="/d/b.sqlite3")
    expected = var.parse(var.default)
    for path in var.fields:
        assert attribute(from_env, path) == expected, path
        assert attribute(constructed, path) == expected, path


def test_derived_defaults() -> None:
    s = Settings.from_env({"XDG_DATA_HOME": "/x"})
    assert s.data_dir == Path("/x/butler")
    assert s.store == "/x/butler/butler.sqlite3"
    assert s.admin_url == Settings(data_dir=s.data_dir, store=s.store).admin_url
    assert s.actors.model_name == "http://127.0.0.1:8080/v1"  # the cache key's model
    assert Settings.from_env({"BUTLER_LLM_MODEL": "alfred"}).actors.model_name == "alfred"


def test_each_variable_is_named_once_and_fills_a_real_attribute() -> None:
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    assert not set(names) & set(REMOVED)
    constructed = Settings(data_dir=Path("/d"), store="/d/b.sqlite3")
    for var in VARIABLES:
        assert var.name.startswith("BUTLER_")
        assert var.doc
        assert var.fields
        assert bool(var.derive) == bool(var.derived)
        assert not (var.derive and var.default)
        for path in var.fields:
            attribute(constructed, path)  # AttributeError names a typo


def test_no_code_reads_a_variable_the_table_lacks() -> None:
    known = {v.name for v in VARIABLES}
    for folder in ("engine", "actors", "adapters", "ops"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in {".py", ".yaml", ".yml", ".md", ""} or not path.is_file():
                continue
            for name in re.findall(r"BUTLER_[A-Z0-9_]+", path.read_text("utf-8")):
                if name.endswith("_") or name in REMOVED:  # a prefix (`BUTLER_BUDGET_*`)
                    continue
                assert name in known, f"{path}: {name}"


def test_the_committed_docs_hold_the_generated_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text
    assert END in text
    committed = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert committed == configuration_table(), (
        "docs/configuration.md is stale: paste the output of python -c "
        "'from adapters.bootstrap.settings import configuration_table as t; print(t(), end=\"\")'"
    )
    for var in VARIABLES:
        assert f"| `{var.name}` |" in committed


def test_butler_prints_one_line_per_bad_variable_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "BUTLER_DATA_DIR": str(tmp_path),
        "BUTLER_BUDGET_TOTAL": "10",
        "BUTLER_LOG_LEVEL": "verbose",
        "BUTLER_STORE": "postgres://user:hunter2@db/butler",
        "BUTLER_LLM_ULR": "http://x/v1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "adapters.entrypoints.cli", "admin", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines[:3]] == [
        "BUTLER_STORE",
        "BUTLER_LOG_LEVEL",
        "BUTLER_BUDGET_TOTAL",
    ]
    assert all(line.startswith("butler: BUTLER_") for line in lines[:3])
    assert lines[3:] == ["butler: warning: unknown BUTLER_LLM_ULR (did you mean BUTLER_LLM_URL?)"]
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr
    assert done.stdout == ""
    assert not list(tmp_path.iterdir())  # nothing was created: it stopped before the store


def test_butler_warns_of_an_unknown_name_and_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "BUTLER_DATA_DIR": str(tmp_path),
        "BUTLER_ADMIN_ADDR": "127.0.0.1:1",  # no service there: the store is read directly
        "BUTLER_LLM_ULR": "http://x/v1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "adapters.entrypoints.cli", "admin", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "butler: warning: unknown BUTLER_LLM_ULR (did you mean BUTLER_LLM_URL?)"
        in done.stderr.splitlines()
    )
