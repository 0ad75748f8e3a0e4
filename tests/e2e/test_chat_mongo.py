"""`butler chat` and `butler db` with `BUTLER_STORE=mongodb://...`: real processes, a real
MongoDB-protocol server (`secantusd-py`), a real OpenAI-style server."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import pytest
from pymongo import MongoClient

from engine.persona import variants
from tests.e2e.test_chat_cli import (
    BUTLER,
    PERSONA_MARK,
    ROOT,
    LLMServer,
    _env,
    admin_show,
    chat,
)
from tests.support.secantus import SecantusServer

pytestmark = pytest.mark.slow


@pytest.fixture
def llm(llm_server: LLMServer) -> LLMServer:
    return llm_server


def database(uri: str) -> Any:
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=5000, serverMonitoringMode="poll"
    )
    return client.get_default_database()


def butler(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BUTLER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=check
    )


def test_chat_keeps_everything_in_mongodb(
    tmp_path: Path, llm: LLMServer, secantus: SecantusServer
) -> None:
    uri = secantus.uri(f"e2e_{uuid.uuid4().hex[:12]}")
    env = _env(tmp_path, llm, BUTLER_STORE=uri)
    replies, _ = chat(env, "Добрый вечер", "Меня зовут Бэзил, я люблю чай")
    assert len(replies) == 2
    assert all(r.startswith(PERSONA_MARK) for r in replies), replies
    chat(env, "Как меня зовут?")
    contents = [m["content"] for m in llm.chat_requests()[-1]["messages"]]
    assert "Меня зовут Бэзил, я люблю чай" in contents, "memory did not survive the restart"
    assert admin_show(env)["memory_events"] == 6
    db = database(uri)
    try:
        assert db.user_profiles.count_documents({"user_id": "alice"}) == 1
        assert db.user_memory.count_documents({"user_id": "alice"}) == 6
        names = {index["name"] for index in db.user_memory.list_indexes()}
        assert {"user_memory_by_time", "user_memory_ttl"} <= names
    finally:
        db.client.close()
    assert not (tmp_path / "data" / "butler.sqlite3").exists(), "a SQLite file was made too"


class Lines:
    """A chat process's stdout read on a thread, so a test waits with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._queue.put(line)

    def next(self, timeout_s: float = 60) -> str:
        return self._queue.get(timeout=timeout_s).strip()


def test_database_killed_mid_turn_apologises_then_answers_once(
    tmp_path: Path, llm: LLMServer
) -> None:
    server = SecantusServer(tmp_path / "mongo")
    server.start()
    uri = server.uri(serverSelectionTimeoutMS=1000)
    env = _env(tmp_path, llm, BUTLER_STORE=uri)
    try:
        replies, _ = chat(env, "Доброе утро")
        assert len(replies) == 1
        hits_before = llm.control()["hits"]
        llm.control({"mode": "slow", "slow_delay": 3})
        proc = subprocess.Popen(
            [*BUTLER, "chat", "--user", "alice"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdin is not None
        lines = Lines(proc)
        try:
            proc.stdin.write("Поручение во время аварии\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 30
            while llm.control()["hits"] <= hits_before:  # the turn is at the model
                assert time.monotonic() < deadline, "the message never reached the model"
                time.sleep(0.02)
            server.kill()  # the reply cannot be stored
            assert lines.next() in variants("store_down", "ru")
            proc.stdin.write("Поручение, которое некуда записать\n")  # refused, not lost
            proc.stdin.flush()
            assert lines.next() in variants("store_down", "ru")
            llm.control({"mode": "ok"})
            server.start()  # the actor's recovery sweep answers the stored message
            answer = lines.next()
            assert answer.startswith(PERSONA_MARK)
            assert "You said: Поручение во время аварии" in answer
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
        db = database(uri)
        try:
            asked = [d["id"] for d in db.user_memory.find({"role": "user"})]
            answers = [d["reply_to"] for d in db.user_memory.find({"role": "assistant"})]
        finally:
            db.client.close()
        assert len(asked) == 2, "only the accepted messages are stored"
        assert sorted(answers) == sorted(asked), "a message got no reply or two"
    finally:
        server.stop()


def test_db_commands_move_a_sqlite_deployment_to_mongodb(
    tmp_path: Path, llm: LLMServer, secantus: SecantusServer
) -> None:
    sqlite_env = _env(tmp_path, llm)
    chat(sqlite_env, "Запомните: я пью чай без сахара", "И ещё: шахматы по средам")
    dump = tmp_path / "butler.jsonl"
    exported = butler(sqlite_env, "db", "export", str(dump))
    assert "exported 1 profiles and 4 events" in exported.stdout

    uri = secantus.uri(f"move_{uuid.uuid4().hex[:12]}")
    mongo_env = _env(tmp_path, llm, BUTLER_STORE=uri)
    assert "migrated" in butler(mongo_env, "db", "migrate").stdout
    assert "imported 1 profiles and 4 events" in butler(mongo_env, "db", "import", str(dump)).stdout
    butler(mongo_env, "db", "import", str(dump))  # idempotent
    assert admin_show(mongo_env) == admin_show(sqlite_env)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "butler-dump", "version": 1}\nnot json\n', encoding="utf-8")
    refused = butler(mongo_env, "db", "import", str(bad), check=False)
    assert refused.returncode == 2
    assert "line 2: not JSON" in refused.stderr
    assert "nothing was written" in refused.stderr
