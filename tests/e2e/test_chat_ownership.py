"""Two real `butler chat` processes for one user on one data directory, a slow model between
them: the second refuses in one line with exit code 3, a paused one loses the user after the
lease's time to live and writes nothing when it wakes, and no message gets two replies."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_chat_cli import BUTLER, ROOT, LLMServer, _env

pytestmark = pytest.mark.slow


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_chat(env: dict[str, str], user: str = "twin") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BUTLER, "chat", "--user", user],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_chat(
    env: dict[str, str], *lines: str, user: str = "twin"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BUTLER, "chat", "--user", user],
        cwd=ROOT,
        env=env,
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def store_rows(tmp_path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(the user messages' contents, (reply_to, replies) per answered message)."""
    with sqlite3.connect(tmp_path / "data" / "butler.sqlite3") as db:
        users = [c for (c,) in db.execute("SELECT content FROM user_memory WHERE role = 'user'")]
        answers = db.execute(
            "SELECT reply_to, COUNT(*) FROM user_memory WHERE role = 'assistant' GROUP BY reply_to"
        ).fetchall()
    return users, answers


def lease_expired(tmp_path: Path, key: str) -> bool:
    with sqlite3.connect(tmp_path / "data" / "butler.sqlite3") as db:
        row = db.execute("SELECT expires_at FROM leases WHERE key = ?", (key,)).fetchone()
    return row is not None and row[0] < time.time_ns() // 1000


def test_a_second_chat_for_the_same_user_refuses_in_one_line(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    env = _env(tmp_path, llm_server)
    llm_server.control({"mode": "slow"})  # held until released
    with start_chat(env) as first:
        try:
            assert first.stdin is not None
            assert first.stdout is not None
            first.stdin.write("Первое поручение\n")
            first.stdin.flush()
            wait_until(llm_server.chat_requests, "the first turn to reach the model")

            second = run_chat(env, "Второе поручение")  # typed in the other terminal meanwhile
            assert second.returncode == 3, second.stderr
            assert second.stdout == ""
            [said] = [line for line in second.stderr.splitlines() if line.strip()]
            assert said.startswith("butler: another Butler process (")
            assert f":{first.pid}:" in said  # the owner id names the serving process
            assert "'twin'" in said
            assert "Traceback" not in second.stderr

            llm_server.control({"mode": "ok"})
            assert "You said: Первое поручение" in first.stdout.readline()
            first.stdin.close()
            assert first.wait(timeout=30) == 0
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=10)
    users, answers = store_rows(tmp_path)
    assert users == ["Первое поручение"]  # the refused message was not kept
    assert [n for _, n in answers] == [1]


def test_a_paused_chat_loses_its_user_after_the_ttl_and_writes_nothing(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    env = _env(tmp_path, llm_server, BUTLER_LEASE_TTL_S="1")
    llm_server.control({"mode": "slow"})
    with start_chat(env) as paused:
        try:
            assert paused.stdin is not None
            assert paused.stdout is not None
            assert paused.stderr is not None
            paused.stdin.write("Поручение до паузы\n")
            paused.stdin.flush()
            wait_until(llm_server.chat_requests, "the turn to reach the model")
            os.kill(paused.pid, signal.SIGSTOP)  # alive, holding the lease, renewing nothing
            wait_until(lambda: lease_expired(tmp_path, "user:twin"), "the paused lease to expire")
            llm_server.control({"mode": "ok"})  # the paused turn's answer waits in its socket

            taker = run_chat(env, "Вы здесь?")
            assert taker.returncode == 0, taker.stderr
            replies = taker.stdout.splitlines()
            assert len(replies) == 2, replies  # the stored message first, then the new one
            assert "You said: Поручение до паузы" in replies[0]
            assert "You said: Вы здесь?" in replies[1]

            os.kill(paused.pid, signal.SIGCONT)
            assert paused.wait(timeout=30) == 3
            assert paused.stdout.read() == ""  # its late answer was never shown nor stored
            assert "took user 'twin' over" in paused.stderr.read()
        finally:
            if paused.poll() is None:
                os.kill(paused.pid, signal.SIGCONT)
                paused.kill()
                paused.wait(timeout=10)
    users, answers = store_rows(tmp_path)
    assert sorted(users) == sorted(["Поручение до паузы", "Вы здесь?"])
    assert len(answers) == 2
    assert {n for _, n in answers} == {1}, "a message got two replies"
