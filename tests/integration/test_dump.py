"""JSONL export and import between a real SQLite file and a real MongoDB-protocol server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.storage.dump import (
    DumpableStore,
    DumpCounts,
    DumpError,
    export_store,
    import_store,
)
from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from engine.domain import EventIds, MemoryEvent, UserProfile
from tests.support.secantus import SecantusServer

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)


async def everything(store: DumpableStore) -> tuple[list[UserProfile], list[MemoryEvent]]:
    profiles = await store.list_profiles(limit=10_000)
    events: list[MemoryEvent] = []
    key = ("", "")
    while page := await store.events_page(after=key, limit=7):  # small pages: many turns
        events.extend(page)
        key = (page[-1].user_id, page[-1].id)
    return profiles, events


async def fill(store: DumpableStore) -> tuple[list[UserProfile], list[MemoryEvent]]:
    """Profiles with summaries, topics and odd characters; events of every kind, including
    a user with events but no profile."""
    ids = EventIds()
    moscow = timezone(timedelta(hours=3))
    profiles = [
        UserProfile.new(f"user-{n:03d}", T0 + timedelta(days=n), "en" if n % 3 else "ru")
        for n in range(23)
    ]
    profiles[1] = replace(
        profiles[1].with_summary("Любит чай 🫖\u0000 «крепкий»", "0000", T0),
        tone="formal",
        preferred_topics=("шахматы ♟️", "tea"),
        created_at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=moscow),
    )
    events: list[MemoryEvent] = []
    for n, profile in enumerate(profiles):
        await store.save_profile(profile)
        for i in range(n % 5 + 1):
            asked, stamp = ids.next(T0 + timedelta(minutes=n * 10 + i))
            events.append(
                MemoryEvent(asked, profile.user_id, "user", f"вопрос {i} 🙂", "text", stamp, 5)
            )
            if i % 2 == 0:
                answer, at = ids.next(stamp)
                events.append(
                    MemoryEvent(
                        answer, profile.user_id, "assistant", f"ответ {i}", "text", at, 7, asked
                    )
                )
    voice, stamp = ids.next(T0)
    events.append(MemoryEvent(voice, "no-profile", "user", "", "voice", stamp, 0))
    await store.append(events)
    return profiles, events


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(tmp_path / "source.db") as store:
        yield store


@pytest.fixture
async def mongo(secantus: SecantusServer) -> AsyncIterator[MongoStore]:
    async with await MongoStore.open(secantus.uri(f"dump_{uuid.uuid4().hex[:12]}")) as store:
        yield store


async def test_sqlite_to_mongodb_round_trips_every_profile_and_event(
    sqlite: SqliteStore, mongo: MongoStore, tmp_path: Path
):
    profiles, events = await fill(sqlite)
    dump = tmp_path / "butler.jsonl"
    assert await export_store(sqlite, dump) == DumpCounts(len(profiles), len(events))
    assert await import_store(mongo, dump) == DumpCounts(len(profiles), len(events))
    source = await everything(sqlite)
    assert await everything(mongo) == source
    assert sorted(source[0], key=lambda p: p.user_id) == sorted(profiles, key=lambda p: p.user_id)
    assert sorted(source[1], key=lambda e: (e.user_id, e.id)) == sorted(
        events, key=lambda e: (e.user_id, e.id)
    )
    # Idempotent: importing again duplicates nothing.
    await import_store(mongo, dump)
    assert await everything(mongo) == source
    # And back: the MongoDB export is the same file, byte for byte.
    again = tmp_path / "again.jsonl"
    await export_store(mongo, again)
    assert again.read_bytes() == dump.read_bytes()
    async with await SqliteStore.open(tmp_path / "restored.db") as restored:
        await import_store(restored, again)
        assert await everything(restored) == source


async def test_a_bad_line_is_named_and_nothing_is_written(
    sqlite: SqliteStore, mongo: MongoStore, tmp_path: Path
):
    await fill(sqlite)
    dump = tmp_path / "butler.jsonl"
    await export_store(sqlite, dump)
    lines = dump.read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[-1]) | {"tokens": -3}
    lines[-1] = json.dumps(broken)
    dump.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DumpError, match=f"line {len(lines)}: tokens"):
        await import_store(mongo, dump)
    assert await everything(mongo) == ([], [])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "line 1: not JSON"),
        ('{"format": "something-else", "version": 1}\n', "line 1: not a butler-dump"),
        ('{"format": "butler-dump", "version": 1}\n[1, 2]\n', "line 2: a record must be"),
        ('{"format": "butler-dump", "version": 1}\n{"type": "car"}\n', "line 2: unknown record"),
        (
            '{"format": "butler-dump", "version": 1}\n'
            '{"type": "event", "user_id": "u", "id": "1", "role": "user", "content": "",'
            ' "source": "text", "created_at": "2025-01-01T00:00:00", "tokens": 1,'
            ' "reply_to": ""}\n',
            "no UTC offset",
        ),
    ],
)
async def test_files_that_are_not_dumps_are_refused(
    mongo: MongoStore, tmp_path: Path, content: str, problem: str
):
    dump = tmp_path / "bad.jsonl"
    dump.write_text(content, encoding="utf-8")
    with pytest.raises(DumpError, match=problem):
        await import_store(mongo, dump)
    assert await everything(mongo) == ([], [])


async def test_an_empty_store_exports_a_header_only(sqlite: SqliteStore, tmp_path: Path):
    dump = tmp_path / "empty.jsonl"
    assert await export_store(sqlite, dump) == DumpCounts(0, 0)
    assert dump.read_text(encoding="utf-8") == '{"format":"butler-dump","version":1}\n'
    assert partial_files(tmp_path) == []


def partial_files(folder: Path) -> list[Path]:
    return list(folder.glob(".*partial"))
