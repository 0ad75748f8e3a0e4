"""What only MongoDB has: indexes and TTL, transactions or their absence, a server killed
mid-write, error mapping. Against a real MongoDB-protocol server (`secantusd-py`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from bson.errors import InvalidDocument
from pymongo import AsyncMongoClient
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from adapters.storage.mongo import MongoStore
from adapters.storage.mongo_schema import SCHEMA_VERSION
from adapters.storage.mongo_setup import client_options, map_error, supports_transactions
from engine.budget import Usage
from engine.domain import EventIds, MemoryEvent, UserProfile
from engine.errors import LeaseLost, StoreCorrupted, StoreUnavailable
from tests.support.secantus import SecantusServer

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, tzinfo=UTC)
NINETY_DAYS_S = 90 * 86_400
Doc = dict[str, Any]
TRANSIENT = "TransientTransactionError"


def events_for(user_id: str, ids: EventIds, count: int, start: datetime = T0) -> list[MemoryEvent]:
    made = []
    for i in range(count):
        event_id, stamp = ids.next(start + timedelta(seconds=i))
        made.append(MemoryEvent(event_id, user_id, "user", f"m{i}", "text", stamp, 1))
    return made


@pytest.fixture
def uri(secantus: SecantusServer) -> str:
    return secantus.uri(f"it_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def store(uri: str) -> AsyncIterator[MongoStore]:
    async with await MongoStore.open(uri) as opened:
        yield opened


@pytest.fixture
async def raw(uri: str) -> AsyncIterator[Any]:
    """A plain PyMongo handle on the store's database."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(uri, serverMonitoringMode="poll")
    try:
        yield client.get_default_database()
    finally:
        await client.close()


async def indexes(raw: Any, collection: str) -> dict[str, Doc]:
    cursor = await raw[collection].list_indexes()
    return {index["name"]: dict(index) async for index in cursor}


async def test_indexes_exist_with_their_keys_uniqueness_and_ttl(store: MongoStore, raw: Any):
    profiles = await indexes(raw, "user_profiles")
    assert dict(profiles["user_profiles_by_user"]["key"]) == {"user_id": 1}
    assert profiles["user_profiles_by_user"]["unique"] is True
    memory = await indexes(raw, "user_memory")
    assert set(memory) == {
        "_id_",
        "user_memory_by_id",
        "user_memory_by_time",
        "user_memory_replies",
        "user_memory_ttl",
        "user_memory_by_origin",
        "user_memory_owed",
    }
    by_origin = memory["user_memory_by_origin"]
    assert list(by_origin["key"].items()) == [("user_id", 1), ("origin", 1)]
    assert by_origin["unique"] is True
    assert by_origin["partialFilterExpression"] == {"origin": {"$gt": ""}}
    by_time = list(memory["user_memory_by_time"]["key"].items())
    assert by_time == [("user_id", 1), ("created_at", -1)]
    assert list(memory["user_memory_by_id"]["key"].items()) == [("user_id", 1), ("id", 1)]
    assert memory["user_memory_by_id"]["unique"] is True
    assert dict(memory["user_memory_ttl"]["key"]) == {"created_at": 1}
    assert memory["user_memory_ttl"]["expireAfterSeconds"] == NINETY_DAYS_S
    assert (await raw["butler_meta"].find_one({"_id": "schema"}))["version"] == SCHEMA_VERSION


async def test_opening_again_is_idempotent_and_retunes_the_ttl(
    store: MongoStore, raw: Any, uri: str
):
    before = await indexes(raw, "user_memory")
    async with await MongoStore.open(uri):
        assert await indexes(raw, "user_memory") == before
    async with await MongoStore.open(uri, retention_days=30):
        ttl = (await indexes(raw, "user_memory"))["user_memory_ttl"]
        assert ttl["expireAfterSeconds"] == 30 * 86_400


async def test_a_newer_schema_is_refused(raw: Any, uri: str):
    await raw["butler_meta"].insert_one({"_id": "schema", "version": SCHEMA_VERSION + 1})
    with pytest.raises(StoreCorrupted, match="newer"):
        await MongoStore.open(uri)


async def test_the_ttl_index_expires_old_events_on_the_server(store: MongoStore, raw: Any):
    ids = EventIds()
    now = datetime.now(UTC)
    old = events_for("u1", ids, 2, now - timedelta(days=91))
    fresh = events_for("u1", ids, 2, now - timedelta(days=1))
    await store.append([*old, *fresh])
    await raw.client.admin.command("secantusAdmin.pruneTtl")  # the sweeper's pass, now
    assert await store.events_before("u1", keep_last=0) == fresh


async def test_purge_is_exact_to_the_microsecond(store: MongoStore):
    ids = EventIds()
    cutoff = T0 + timedelta(microseconds=1500)
    events = [
        replace(e, created_at=T0 + timedelta(microseconds=us))
        for e, us in zip(events_for("u1", ids, 3), (1499, 1500, 1501), strict=True)
    ]
    await store.append(events)
    assert await store.purge_older_than(cutoff) == 1
    assert await store.events_before("u1", keep_last=0) == events[1:]


async def test_a_document_that_is_not_an_event_is_corrupted(store: MongoStore, raw: Any):
    await raw["user_memory"].insert_one({"user_id": "u1", "id": "1", "role": "robot"})
    await raw["user_profiles"].insert_one({"user_id": "u2", "language": "ru"})
    with pytest.raises(StoreCorrupted):
        await store.load_turn("u1", limit=5, before="z")
    with pytest.raises(StoreCorrupted):
        await store.get_profile("u2")


async def test_multi_document_writes_use_transactions_on_a_replica_set(store: MongoStore):
    assert store.transactions
    ids = EventIds()
    events = events_for("u1", ids, 6)
    await store.append(events, profile=UserProfile.new("u1", T0))
    summarised = UserProfile.new("u1", T0).with_summary("кратко", events[2].id, T0)
    assert await store.apply_summary(summarised, [e.id for e in events[:3]]) == 3
    assert await store.events_before("u1", keep_last=0) == events[3:]
    await store.erase_user("u1")
    assert await store.get_profile("u1") is None


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[SecantusServer]:
    server = SecantusServer(tmp_path / "standalone", standalone=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_without_transactions_a_summary_is_saved_before_its_events_go(
    standalone: SecantusServer,
):
    async with await MongoStore.open(standalone.uri()) as store:
        assert not store.transactions
        ids = EventIds()
        events = events_for("u1", ids, 6)
        await store.append(events, profile=UserProfile.new("u1", T0))
        summarised = UserProfile.new("u1", T0).with_summary("кратко", events[2].id, T0)
        doomed = [e.id for e in events[:3]]
        # A summary whose deletions never ran (a crash in between) covers leftovers only.
        await store.save_profile(summarised)
        assert await store.apply_summary(summarised, doomed) == 3
        assert await store.get_profile("u1") == summarised
        assert await store.events_before("u1", keep_last=0) == events[3:]
        await store.erase_user("u1")
        assert await store.events_before("u1", keep_last=0) == []


async def test_fenced_writes_racing_a_takeover_commit_only_under_the_lease(
    store: MongoStore, uri: str, raw: Any
):
    """Each fenced write updates the lease's document in its own transaction: the writes that
    committed are exactly those counted on the lease, and none committed after the takeover."""
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=15, now=T0)
    fenced = store.fenced(lease)
    ids = EventIds()
    events = events_for("u1", ids, 30)
    async with await MongoStore.open(uri) as other:
        takeover = other.acquire_lease(
            "user:u1", "proc-b", ttl_s=15, now=T0 + timedelta(seconds=60)
        )
        writes = [fenced.append([event]) for event in events]
        # The takeover starts after the first half of the writes, before the second half.
        outcomes = await asyncio.gather(
            *writes[:15], takeover, *writes[15:], return_exceptions=True
        )
        outcomes = outcomes[:15] + outcomes[16:]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, LeaseLost | StoreUnavailable) for o in failed), failed
    written = [e for e, o in zip(events, outcomes, strict=False) if o is None]
    assert await store.events_before("u1", keep_last=0) == written
    doc = await raw["leases"].find_one({"_id": "user:u1"})
    assert doc["owner"] == "proc-b"
    assert doc.get("fenced_writes", 0) == len(written)
    with pytest.raises(LeaseLost):
        await fenced.append(events_for("u1", ids, 1, T0 + timedelta(hours=1)))


async def test_without_transactions_a_fenced_write_checks_the_lease_first(
    standalone: SecantusServer,
):
    async with await MongoStore.open(standalone.uri()) as store:
        assert not store.transactions
        lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=15, now=T0)
        ids = EventIds()
        await store.fenced(lease).append(events_for("u1", ids, 1))
        await store.acquire_lease("user:u1", "proc-b", ttl_s=15, now=T0 + timedelta(seconds=60))
        late = events_for("u1", ids, 1, T0 + timedelta(seconds=1))
        with pytest.raises(LeaseLost):
            await store.fenced(lease).append(late)
        assert len(await store.events_before("u1", keep_last=0)) == 1


async def test_a_killed_server_is_unavailable_and_nothing_acknowledged_is_lost(tmp_path: Path):
    server = SecantusServer(tmp_path / "killed")
    server.start()
    store = await MongoStore.open(server.uri(serverSelectionTimeoutMS=1000))
    acknowledged: list[MemoryEvent] = []
    failures: list[BaseException] = []
    flowing, stop = asyncio.Event(), asyncio.Event()
    ids = EventIds()

    async def writer(user_id: str) -> None:
        while not stop.is_set():
            (event,) = events_for(user_id, ids, 1, datetime.now(UTC))
            try:
                await store.append([event])
            except StoreUnavailable as exc:
                failures.append(exc)
                return
            acknowledged.append(event)
            if len(acknowledged) >= 40:
                flowing.set()

    try:
        with anyio.fail_after(60):
            async with asyncio.TaskGroup() as group:
                for n in range(8):
                    group.create_task(writer(f"user-{n}"))
                await flowing.wait()
                server.kill()  # SIGKILL with writes in flight
            assert len(failures) == 8, "every writer must hear of the outage"
            with pytest.raises(StoreUnavailable):
                await store.load_turn("user-0", limit=5, before="z")
            server.start()  # same port, same data folder: the same store object recovers
            stored = {
                event.id: event
                for n in range(8)
                for event in await store.events_before(f"user-{n}", keep_last=0)
            }
            lost = [event for event in acknowledged if stored.get(event.id) != event]
            assert not lost, f"{len(lost)} acknowledged events were lost"
            (event,) = events_for("user-0", ids, 1, datetime.now(UTC))
            await store.append([event])
    finally:
        await store.close()
        server.stop()


async def test_an_unusable_uri_is_refused_as_permanent():
    with pytest.raises(StoreCorrupted, match="URI"):
        await MongoStore.open("mongodb://127.0.0.1:1,127.0.0.1:2/?directConnection=true")


def test_uri_options_win_over_the_defaults():
    options = client_options("mongodb://h/db?serverselectiontimeoutms=250&appName=x")
    assert "serverSelectionTimeoutMS" not in options
    assert options["connectTimeoutMS"] == 5000


def test_transactions_are_read_from_the_hello_reply():
    assert supports_transactions({"setName": "rs0", "logicalSessionTimeoutMinutes": 30})
    assert supports_transactions({"msg": "isdbgrid", "logicalSessionTimeoutMinutes": 30})
    assert not supports_transactions({"logicalSessionTimeoutMinutes": 30})
    assert not supports_transactions({"setName": "rs0"})


@pytest.mark.parametrize(
    ("error", "mapped"),
    [
        (ServerSelectionTimeoutError("no servers"), StoreUnavailable),
        (AutoReconnect("connection reset"), StoreUnavailable),
        (OperationFailure("write conflict", code=112), StoreUnavailable),
        (OperationFailure("shutting down", code=91), StoreUnavailable),
        (OperationFailure("auth failed", code=18), StoreUnavailable),
        (OperationFailure("lost", code=1, details={"errorLabels": [TRANSIENT]}), StoreUnavailable),
        (InvalidOperation("the client is closed"), StoreUnavailable),
        (DuplicateKeyError("E11000", code=11000), StoreCorrupted),
        (OperationFailure("bad value", code=2), StoreCorrupted),
        (InvalidDocument("key must not contain '.'"), StoreCorrupted),
        (ConfigurationError("bad option"), StoreCorrupted),
    ],
)
def test_errors_are_mapped_at_the_edge(error: Exception, mapped: type[Exception]):
    assert type(map_error(error)) is mapped


async def test_profile_and_event_documents_keep_their_keys(store: MongoStore, raw: Any):
    """Documents written before the shared codec still load, and saving writes the same keys."""
    micros = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    old_profile = {
        "user_id": "old",
        "language": "en",
        "persona": "Jeeves",
        "tone": "formal",
        "preferred_topics": ["чай", "chess"],
        "memory_summary": "кратко",
        "created_us": micros,
        "updated_us": micros + 1,
        "summary_through": "00ff",
        "summary_updated_us": None,
    }
    old_event = {
        "user_id": "old",
        "id": "00fe",
        "role": "user",
        "content": "Добрый вечер",
        "source": "voice",
        "created_at": T0.replace(tzinfo=None),
        "created_us": micros + 7,
        "tokens": 3,
        "reply_to": "",
    }
    await raw["user_profiles"].insert_one(dict(old_profile))
    await raw["user_memory"].insert_one(dict(old_event))
    loaded = await store.get_profile("old")
    assert loaded is not None
    assert (loaded.persona, loaded.preferred_topics, loaded.summary_updated_at) == (
        "Jeeves",
        ("чай", "chess"),
        None,
    )
    assert loaded.updated_at == T0 + timedelta(microseconds=1)
    (event,) = await store.events_before("old", keep_last=0)
    assert (event.content, event.source, event.tokens) == ("Добрый вечер", "voice", 3)
    assert event.created_at == T0 + timedelta(microseconds=7)
    await store.save_profile(replace(loaded, user_id="new"))
    await store.append([replace(event, user_id="new")])
    written = await raw["user_profiles"].find_one({"user_id": "new"}, {"_id": 0})
    assert written == old_profile | {"user_id": "new"}
    stored = await raw["user_memory"].find_one({"user_id": "new"}, {"_id": 0})
    assert stored == old_event | {"user_id": "new", "origin": ""}  # schema 3 adds the origin


async def test_a_usage_upsert_that_loses_an_insert_race_still_counts_once(
    store: MongoStore, raw: Any, monkeypatch: pytest.MonkeyPatch
):
    """Two processes' first adds of a period both miss and both insert: the unique index
    refuses one (E11000). The loser's operations from the refused one on run again as updates,
    so every add counts once: here the rival's 7 and our 5 on the day, our 5 on the month."""
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    collection = store._usage
    real_bulk = collection.bulk_write

    async def raced(ops: list[Any], **kwargs: Any) -> Any:
        await real_bulk(ops[:1], **kwargs)  # the delete of older periods ran
        await raw["token_usage"].insert_one({"user_id": "u1", "period": "d2026-12-03", "tokens": 7})
        details = {"writeErrors": [{"index": 1, "code": 11000, "errmsg": "E11000 duplicate key"}]}
        raise BulkWriteError(details)

    monkeypatch.setattr(collection, "bulk_write", raced)
    await store.add_usage("u1", 5, now=now)
    monkeypatch.undo()
    assert await store.usage("u1", now=now) == Usage(day=12, month=5)
    await store.add_usage("u1", 1, now=now)  # and the normal path goes on from there
    assert await store.usage("u1", now=now) == Usage(day=13, month=6)
