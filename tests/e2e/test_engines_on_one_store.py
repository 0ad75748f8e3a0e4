"""Two Butler service processes on one store (a SQLite file; a MongoDB-protocol database),
messages for the same users told to both, a slow model; one is killed with SIGKILL mid-stream.
Counted in the store, not in deliveries: every acknowledged message is kept, none is answered
twice, and what the dead one left unanswered is answered by the survivor, at once for users
who write again, and within its lease's time to live for a user who does not."""

from __future__ import annotations

import queue
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.e2e.test_chat_cli import ROOT, LLMServer, _env
from tests.support.secantus import SecantusServer

pytestmark = pytest.mark.slow

USERS = [f"user-{i}" for i in range(6)]
LONELY = "lonely"  # writes only to the process that dies, and never again


@dataclass
class Engine:
    """One `tests.support.engine_driver` process; its output lines, read on a thread."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[list[str]] = field(default_factory=queue.Queue)
    seen: list[list[str]] = field(default_factory=list)

    def tell(self, user_id: str, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{user_id}\t{text}\n")
        self.proc.stdin.flush()

    def wait_for(self, kind: str, count: int = 1, timeout: float = 60.0) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while sum(1 for line in self.seen if line[0] == kind) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out waiting for {count} {kind!r} lines: {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                continue
        return [line for line in self.seen if line[0] == kind]

    def drain_output(self) -> None:
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())


def start_engine(env: dict[str, str]) -> Engine:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.engine_driver"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    engine = Engine(proc)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            engine.lines.put(line.rstrip("\n").split("\t"))

    threading.Thread(target=read, daemon=True).start()
    engine.wait_for("ready")
    return engine


@dataclass(frozen=True)
class Where:
    """The store both engines use, and how the test reads it directly."""

    store: str
    events: Callable[[], list[dict[str, Any]]]


# Two service processes on one SQLite file. The same on one MongoDB database runs in
# tests/integration/test_ownership_stores.py (two engines through the real wiring, each its
# own connection): here, on the Python MongoDB-protocol test server under a loaded 2-core
# CI machine, the two processes' lease traffic outran the server and the run timed out.
@pytest.fixture(params=["sqlite"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    if request.param == "sqlite":
        path = tmp_path / "shared.sqlite3"

        def rows() -> list[dict[str, Any]]:
            if not path.exists():
                return []
            with sqlite3.connect(path) as db:
                db.row_factory = sqlite3.Row
                query = "SELECT user_id, id, role, reply_to FROM user_memory"
                return [dict(row) for row in db.execute(query)]

        yield Where(str(path), rows)
        return
    server: SecantusServer = request.getfixturevalue("secantus")
    database = f"engines_{uuid.uuid4().hex[:12]}"
    client: MongoClient[dict[str, Any]] = MongoClient(
        server.uri(database), serverMonitoringMode="poll", socketTimeoutMS=30_000
    )
    try:
        projection = {"_id": 0, "user_id": 1, "id": 1, "role": 1, "reply_to": 1}
        yield Where(
            server.uri(database),
            lambda: list(client[database]["user_memory"].find({}, projection)),
        )
    finally:
        client.drop_database(database)
        client.close()


def replies_per_message(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = {row["id"]: 0 for row in rows if row["role"] == "user"}
    for row in rows:
        if row["role"] == "assistant":
            counts[row["reply_to"]] = counts.get(row["reply_to"], 0) + 1
    return counts


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_two_engines_and_a_sigkill_answer_each_message_once(
    tmp_path: Path, llm_server: LLMServer, where: Where
) -> None:
    # One turn per message (no coalescing window), so replies are counted per message.
    env = _env(
        tmp_path,
        llm_server,
        BUTLER_STORE=where.store,
        BUTLER_LEASE_TTL_S="3",
        BUTLER_COALESCE_MS="0",
    )
    llm_server.control({"mode": "slow"})  # every turn held in the model until released
    doomed, survivor = start_engine(env), start_engine(env)
    try:
        for round_ in range(3):
            for i, user_id in enumerate(USERS):
                (doomed if (i + round_) % 2 else survivor).tell(user_id, f"first {round_}")
        doomed.tell(LONELY, "anyone there?")
        doomed.wait_for("accepted", 3 * len(USERS) // 2 + 1)
        survivor.wait_for("accepted", 3 * len(USERS) // 2)
        # One turn in flight per user (each served by one engine), the others waiting.
        wait_until(lambda: llm_server.control()["hits"] >= len(USERS) + 1, "turns in flight")
        doomed.proc.kill()  # SIGKILL: mid-turn, leases held, messages unanswered
        doomed.proc.wait(timeout=10)
        doomed.drain_output()
        llm_server.control({"mode": "slow", "slow_delay": 0.05})  # held turns answer now

        for user_id in USERS:
            survivor.tell(user_id, "after the kill")
        survivor.wait_for("accepted", 3 * len(USERS) // 2 + len(USERS))

        def all_answered() -> bool:
            counts = replies_per_message(where.events())
            return bool(counts) and all(counts.values())

        wait_until(all_answered, "every stored message to be answered")
    finally:
        for engine in (doomed, survivor):
            if engine.proc.poll() is None:
                engine.proc.kill()
                engine.proc.wait(timeout=10)
            for stream in (engine.proc.stdin, engine.proc.stdout):
                if stream is not None:
                    stream.close()
    rows = where.events()
    acknowledged = {line[2] for e in (doomed, survivor) for line in e.seen if line[0] == "accepted"}
    stored = {row["id"] for row in rows if row["role"] == "user"}
    assert acknowledged <= stored, "an acknowledged message was lost"
    assert len(stored) == 4 * len(USERS) + 1
    counts = replies_per_message(rows)
    assert set(counts.values()) == {1}, f"answered twice or never: {counts}"
    assert any(row["user_id"] == LONELY and row["role"] == "assistant" for row in rows)
