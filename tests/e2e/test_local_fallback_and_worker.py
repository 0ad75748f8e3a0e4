"""End to end: `butler chat` answers from the local model when the server is dead, and
`butler worker --once` compresses an eligible user's memory in the SQLite file."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from engine.persona import variants
from tests.e2e.test_chat_cli import BUTLER, ROOT, LLMServer, admin_show, chat
from tests.support.local_model import require_local_model

pytestmark = pytest.mark.slow


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env.update(
        BUTLER_DATA_DIR=str(tmp_path / "data"),
        BUTLER_LLM_URL=_dead_url(),
        BUTLER_LLM_RETRIES="0",
        BUTLER_ADMIN_URL=_dead_url().removesuffix("/v1"),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def test_dead_primary_means_replies_from_the_local_model(tmp_path: Path) -> None:
    model = require_local_model()
    env = _env(tmp_path, BUTLER_LLM_LOCAL_MODEL=str(model), BUTLER_BUDGET_REPLY="24")
    replies, stderr = chat(env, "Good evening, what is for dinner?", "Спасибо!")
    assert len(replies) == 2
    canned = set(variants("degraded", "ru")) | set(variants("error", "ru"))
    assert not set(replies) & canned, replies
    assert all(r.strip() for r in replies)
    assert "no language model answers" not in stderr  # the chain can answer: no hint


def test_without_a_local_model_the_dead_primary_degrades(tmp_path: Path) -> None:
    replies, _ = chat(_env(tmp_path), "Вы здесь?")
    assert replies[0] in variants("degraded", "ru")


def test_bad_local_model_path_is_a_clear_error(tmp_path: Path) -> None:
    env = _env(tmp_path, BUTLER_LLM_LOCAL_MODEL=str(tmp_path / "nope"))
    done = subprocess.run(
        [*BUTLER, "chat"],
        cwd=ROOT,
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "BUTLER_LLM_LOCAL_MODEL" in done.stderr
    assert "not a CTranslate2 model directory" in done.stderr


def test_worker_once_compresses_an_eligible_user(tmp_path: Path, llm_server: LLMServer) -> None:
    # Build a history under a high threshold, then lower it so the user is eligible; no
    # service runs, so the worker compresses through a registry of its own.
    env = _env(
        tmp_path,
        BUTLER_LLM_URL=llm_server.url,
        BUTLER_MEMORY_THRESHOLD="1000",
        BUTLER_MEMORY_KEEP="4",
    )
    chat(env, *(f"Сообщение номер {i}" for i in range(5)))
    assert admin_show(env)["memory_events"] == 10
    worker_env = {
        **env,
        "BUTLER_MEMORY_THRESHOLD": "8",
        "BUTLER_WORKER_METRICS_FILE": str(tmp_path / "worker.prom"),
    }
    done = subprocess.run(
        [*BUTLER, "worker", "--once"],
        cwd=ROOT,
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = admin_show(worker_env)
    assert shown["memory_events"] == 4
    assert shown["profile"]["memory_summary"].startswith("Сводка:")
    metrics = (tmp_path / "worker.prom").read_text()
    assert "personalized_memory_worker_runs_total 1.0" in metrics
    assert "butler_memory_worker_requests_total 1.0" in metrics
    assert "butler_memory_worker_consecutive_failures 0.0" in metrics
    # Nothing left to do: a second run asks nobody and still succeeds.
    again = subprocess.run(
        [*BUTLER, "worker", "--once"],
        cwd=ROOT,
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    metrics = (tmp_path / "worker.prom").read_text()
    assert "personalized_memory_worker_runs_total 2.0" in metrics
    assert "butler_memory_worker_requests_total 1.0" in metrics
