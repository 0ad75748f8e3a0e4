"""Migrations of files and databases written by older schemas. Schema 3 on schema 2: replies
made before the outbox were sent as they were made, so the migration marks them delivered
instead of sending them again. Schema 4 on schema 3: a `leases` table, the data untouched."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from adapters.storage.sqlite_schema import SCHEMA_VERSION
from tests.support.secantus import SecantusServer

pytestmark = pytest.mark.anyio

# The v2 tables as v2 created them (no origin, no delivered).
V2_MEMORY = """CREATE TABLE user_memory (
    user_id TEXT NOT NULL CHECK (user_id <> ''),
    id TEXT NOT NULL CHECK (id <> ''),
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('text', 'voice')),
    created_at INTEGER NOT NULL,
    tokens INTEGER NOT NULL CHECK (tokens >= 0),
    reply_to TEXT NOT NULL
)"""
ROWS = [
    ("u1", "0001", "user", "вопрос", "text", 1, 2, ""),
    ("u1", "0002", "assistant", "ответ", "text", 2, 2, "0001"),
    ("u1", "0003", "user", "ещё вопрос", "text", 3, 2, ""),
]


async def test_sqlite_v2_replies_are_not_owed_after_the_migration(tmp_path: Path):
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(V2_MEMORY)
    conn.executemany("INSERT INTO user_memory VALUES (?, ?, ?, ?, ?, ?, ?, ?)", ROWS)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = await SqliteStore.open(path)
    try:
        assert await store.owed_replies("u1") == []
        assert [e.id for e in await store.unanswered("u1")] == ["0003"]
        assert all(e.origin == "" for e in await store.unanswered("u1"))
    finally:
        await store.close()
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


async def test_sqlite_v3_gains_leases_and_keeps_its_events(tmp_path: Path):
    path = tmp_path / "v3.sqlite3"
    store = await SqliteStore.open(path)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE leases")
    conn.execute("PRAGMA user_version = 3")
    conn.executemany(
        "INSERT INTO user_memory (user_id, id, role, content, source, created_at, tokens,"
        " reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ROWS,
    )
    conn.commit()
    conn.close()
    store = await SqliteStore.open(path)
    try:
        assert [e.id for e in await store.unanswered("u1")] == ["0003"]
        now = datetime(2025, 3, 1, tzinfo=UTC)
        lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=15, now=now)
        assert lease.token == 1
    finally:
        await store.close()
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == 4


async def test_mongodb_v2_replies_are_not_owed_after_the_migration(secantus: SecantusServer):
    uri = secantus.uri("butler_migration_v2")
    store = await MongoStore.open(uri)
    await store.close()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    try:
        db = client.get_default_database()
        await db["butler_meta"].update_one({"_id": "schema"}, {"$set": {"version": 2}})
        await db["user_memory"].insert_many(
            [
                {
                    "user_id": u,
                    "id": i,
                    "role": r,
                    "content": c,
                    "source": s,
                    "created_us": t,
                    "tokens": n,
                    "reply_to": to,
                }
                for u, i, r, c, s, t, n, to in ROWS
            ]
        )
    finally:
        await client.close()
    store = await MongoStore.open(uri)
    try:
        assert await store.owed_replies("u1") == []
        assert [e.id for e in await store.unanswered("u1")] == ["0003"]
    finally:
        await store.close()
