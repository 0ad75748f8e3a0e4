"""Migrations of files and databases written by older schemas. Schema 3 on schema 2: replies
made before the outbox were sent as they were made, so the migration marks them delivered
instead of sending them again. Schema 4 on schema 3: a `leases` table, the data untouched.
Schema 5 (token usage) on stores at 3 or 4: what they hold stays, usage starts."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from adapters.storage import mongo_schema, sqlite_schema
from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from adapters.storage.sqlite_schema import SCHEMA_VERSION
from engine.budget import Usage
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
    assert version == SCHEMA_VERSION
    assert version == sqlite_schema.SCHEMA_VERSION


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


NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
# Schema 4 as the leases branch adds it: a table this code does not use, which must survive.
V4_LEASES = """CREATE TABLE leases (
    key TEXT NOT NULL PRIMARY KEY CHECK (key <> ''), owner TEXT NOT NULL,
    token INTEGER NOT NULL CHECK (token > 0), expires_at INTEGER NOT NULL,
    nudges INTEGER NOT NULL DEFAULT 0 CHECK (nudges >= 0))"""


@pytest.mark.parametrize("version", [3, 4])
async def test_sqlite_at_3_or_4_comes_up_to_5_with_usage(tmp_path: Path, version: int):
    path = tmp_path / f"v{version}.sqlite3"
    store = await SqliteStore.open(path)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE token_usage")
    conn.execute("DROP TABLE leases")
    if version == 4:
        conn.execute(V4_LEASES)
        conn.execute("INSERT INTO leases VALUES ('user:u1', 'host:1:ab', 3, 0, 0)")
    conn.executemany(
        "INSERT INTO user_memory (user_id, id, role, content, source, created_at, tokens,"
        " reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ROWS[:1],
    )
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    store = await SqliteStore.open(path)
    try:
        assert [e.id for e in await store.unanswered("u1")] == ["0001"]
        await store.add_usage("u1", 12, now=NOW)
        assert await store.usage("u1", now=NOW) == Usage(12, 12)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    leases = conn.execute("SELECT count(*) FROM leases").fetchone()
    conn.close()
    assert found == sqlite_schema.SCHEMA_VERSION == 5
    assert leases == (1 if version == 4 else 0,)  # a v4 lease row kept; v3 gains the table


async def test_mongodb_at_4_comes_up_to_5_with_usage(secantus: SecantusServer):
    uri = secantus.uri("butler_migration_v4")
    store = await MongoStore.open(uri)
    await store.close()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    try:
        db = client.get_default_database()
        await db["token_usage"].drop()
        await db["butler_meta"].update_one({"_id": "schema"}, {"$set": {"version": 4}})
    finally:
        await client.close()
    store = await MongoStore.open(uri)
    try:
        await store.add_usage("u1", 12, now=NOW)
        await store.add_usage("u1", 1, now=NOW)
        assert await store.usage("u1", now=NOW) == Usage(13, 13)
    finally:
        await store.close()
    client = AsyncMongoClient(uri)
    try:
        db = client.get_default_database()
        meta = await db["butler_meta"].find_one({"_id": "schema"})
        names = [index["name"] async for index in await db["token_usage"].list_indexes()]
    finally:
        await client.close()
    assert meta is not None
    assert meta["version"] == mongo_schema.SCHEMA_VERSION == 5
    assert "token_usage_by_period" in names
