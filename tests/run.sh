#!/usr/bin/env bash
# Sets up .venv on a fresh machine (idempotent) and runs lint, types and every test suite.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-system.sh
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m coverage run -m pytest "$@"
.venv/bin/python -m coverage report --fail-under=80
