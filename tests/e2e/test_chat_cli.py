"""`butler chat` end to end: real processes, a real SQLite file, a real OpenAI-style server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.persona import variants
from tests.support.ports import closed_url

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
BUTLER = [sys.executable, "-m", "adapters.entrypoints.cli"]
PERSONA_MARK = "[system: Ты — Alfred-style дворецкий"


@dataclass
class LLMServer:
    port: int
    control_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def control(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}/_control",
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.control()["requests"] if "messages" in r]


def _env(tmp_path: Path, server: LLMServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env.update(
        BUTLER_DATA_DIR=str(tmp_path / "data"),
        BUTLER_LLM_URL=server.url,
        BUTLER_LLM_RETRIES="0",
        # No running service may answer `butler admin` (the default address is a fixed port).
        BUTLER_ADMIN_URL=closed_url(),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def chat(env: dict[str, str], *lines: str, user: str = "alice") -> tuple[list[str], str]:
    """Run one scripted `butler chat` process; returns its reply lines and stderr."""
    done = subprocess.run(
        [*BUTLER, "chat", "--user", user],
        cwd=ROOT,
        env=env,
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines(), done.stderr


class ChatProcess:
    """A `butler chat` process fed line by line, for tests that act between messages."""

    def __init__(self, env: dict[str, str], user: str = "alice") -> None:
        self.proc = subprocess.Popen(
            [*BUTLER, "chat", "--user", user],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def send(self, text: str) -> None:
        self.stdin.write(text + "\n")
        self.stdin.flush()

    def ask(self, text: str) -> str:
        self.send(text)
        return self.stdout.readline().strip()

    def finish(self) -> int:
        """Close stdin (end of conversation) and wait for a clean exit."""
        self.stdin.close()
        code = self.proc.wait(timeout=30)
        self.stdout.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.stdin.close()
        self.stdout.close()


def admin_show(env: dict[str, str], user: str = "alice") -> dict[str, Any]:
    done = subprocess.run(
        [*BUTLER, "admin", "show", user, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "no service answers" in done.stderr, "read from a running service, not the store"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_persona_and_memory_across_processes(tmp_path: Path, llm_server: LLMServer) -> None:
    env = _env(tmp_path, llm_server)
    replies, _ = chat(env, "Добрый вечер", "Меня зовут Бэзил, я люблю чай")
    assert len(replies) == 2
    assert all(r.startswith(PERSONA_MARK) for r in replies), replies
    assert "You said: Меня зовут Бэзил" in replies[1]

    replies, _ = chat(env, "Как меня зовут?")
    assert len(replies) == 1
    last = llm_server.chat_requests()[-1]["messages"]
    contents = [m["content"] for m in last]
    assert "Меня зовут Бэзил, я люблю чай" in contents, "memory did not survive the restart"
    assert contents[-1] == "Как меня зовут?"
    shown = admin_show(env)
    assert shown["user_id"] == "alice"
    assert shown["state"] == "idle"
    assert shown["memory_events"] == 6
    assert shown["profile"]["persona"] == "Alfred-style дворецкий"
    assert shown["profile"]["language"] == "ru"


def test_compression_after_more_than_fifty_events(tmp_path: Path, llm_server: LLMServer) -> None:
    env = _env(tmp_path, llm_server)
    replies, _ = chat(env, *(f"Поручение номер {i}" for i in range(30)))
    assert len(replies) == 30
    shown = admin_show(env)
    # 60 events were written; compression kept the newest 20 once the count passed 50.
    assert shown["memory_events"] < 50
    assert shown["profile"]["memory_summary"].startswith("Сводка:")
    summaries = [r for r in llm_server.chat_requests() if "сводку" in r["messages"][0]["content"]]
    assert summaries, "no summarisation request reached the model"
    replies, _ = chat(env, "Что вы помните?")
    system = llm_server.chat_requests()[-1]["messages"][0]["content"]
    assert "Сводка: хозяин беседовал" in system, "the summary is not in the next prompt"


def test_degraded_answer_and_recovery(tmp_path: Path, llm_server: LLMServer) -> None:
    env = _env(tmp_path, llm_server, BUTLER_LLM_COOLDOWN_S="0.2")
    llm_server.control({"mode": "down"})
    replies, stderr = chat(env, "Вы здесь?")
    assert len(replies) == 1
    assert replies[0] in variants("degraded", "ru")
    assert "BUTLER_LLM_URL" in stderr, "no hint on how to point butler at an LLM server"

    # One process: down, then back; the butler recovers by itself (half-open probe).
    process = ChatProcess(env)
    try:
        assert process.ask("Алло?") in variants("degraded", "ru")
        llm_server.control({"mode": "ok"})
        deadline = time.monotonic() + 30
        answer = process.ask("А теперь?")
        while not answer.startswith(PERSONA_MARK):
            assert time.monotonic() < deadline, "the butler never left degraded mode"
            answer = process.ask("А теперь?")
        assert "You said: А теперь?" in answer
    finally:
        assert process.finish() == 0


def test_kill_mid_turn_loses_nothing_and_answers_once(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    env = _env(tmp_path, llm_server)
    replies, _ = chat(env, "Доброе утро")
    assert len(replies) == 1
    hits_before = llm_server.control()["hits"]
    llm_server.control({"mode": "slow", "slow_delay": 60})
    process = ChatProcess(env)
    process.send("Поручение, прерванное на полуслове")
    deadline = time.monotonic() + 30
    while llm_server.control()["hits"] <= hits_before:  # the turn is in flight
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the message never reached the model")
        time.sleep(0.02)
    process.kill()  # SIGKILL: no drain, no goodbye
    llm_server.control({"mode": "ok"})

    replies, _ = chat(env, "Вы меня слышите?")
    # The interrupted message is answered first (asked of the model again), then the new one.
    assert len(replies) == 2, replies
    assert "You said: Поручение, прерванное на полуслове" in replies[0]
    assert "You said: Вы меня слышите?" in replies[1]
    with sqlite3.connect(tmp_path / "data" / "butler.sqlite3") as db:
        users = db.execute("SELECT id FROM user_memory WHERE role = 'user'").fetchall()
        answers = db.execute(
            "SELECT reply_to, COUNT(*) FROM user_memory WHERE role = 'assistant' GROUP BY reply_to"
        ).fetchall()
    assert len(users) == 3
    assert sorted(a for a, _ in answers) == sorted(u for (u,) in users)
    assert {n for _, n in answers} == {1}, "a message got two replies"


def test_a_refused_key_is_named_in_the_hint(tmp_path: Path, llm_server: LLMServer) -> None:
    llm_server.control({"mode": "error401"})
    env = _env(tmp_path, llm_server, BUTLER_LLM_API_KEY="sk-wrong")
    replies, err = chat(env, "Добрый вечер")
    assert len(replies) == 1  # a canned (degraded) answer, not a crash
    [hint] = [line for line in err.splitlines() if "refused" in line]
    assert "BUTLER_LLM_API_KEY" in hint
    assert "sk-wrong" not in err
    assert "Traceback" not in err
