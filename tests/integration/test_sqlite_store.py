"""What only SQLite has: WAL mode, indexes and plans, schema versions, group commit, locks."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.storage import sqlite as sqlite_module
from adapters.storage.sqlite import SqliteStore
from engine.domain import EventIds, MemoryEvent, UserProfile
from engine.errors import StoreCorrupted, StoreUnavailable

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "butler.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(path) as opened:
        yield opened


@pytest.fixture
def raw(path: Path, store: SqliteStore) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the store's file."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def event(user_id: str, ids: EventIds, *, tokens: int = 1) -> MemoryEvent:
    event_id, stamp = ids.next(T0)
    return MemoryEvent(event_id, user_id, "user", f"hi from {user_id}", "text", stamp, tokens)


async def on_db_thread(store: SqliteStore, sql: str) -> list[tuple[object, ...]]:
    """Run `sql` on the store's own connection (for per-connection pragmas)."""
    return await store._db.call(lambda conn: conn.execute(sql).fetchall(), write=False)


async def test_the_file_is_in_wal_mode_with_normal_sync(
    store: SqliteStore, raw: sqlite3.Connection
):
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert await on_db_thread(store, "PRAGMA synchronous") == [(1,)]  # NORMAL
    assert await on_db_thread(store, "PRAGMA busy_timeout") == [(5000,)]


async def test_tables_and_indexes_exist(store: SqliteStore, raw: sqlite3.Connection):
    memory = {row[1]: row for row in raw.execute("PRAGMA index_list('user_memory')")}
    assert memory.keys() == {
        "user_memory_by_id",
        "user_memory_by_time",
        "user_memory_replies",
        "user_memory_by_origin",
        "user_memory_owed",
    }
    assert memory["user_memory_by_id"][2] == 1  # unique
    assert memory["user_memory_by_origin"][2] == 1  # unique, where an origin is given
    assert memory["user_memory_replies"][4] == 1  # partial: assistant events only
    assert memory["user_memory_owed"][4] == 1  # partial: replies not yet delivered
    for name, columns in (
        ("user_memory_by_id", ["user_id", "id"]),
        ("user_memory_by_time", ["user_id", "created_at"]),
        ("user_memory_replies", ["user_id", "reply_to"]),
        ("user_memory_by_origin", ["user_id", "origin"]),
        ("user_memory_owed", ["user_id", "id"]),
    ):
        assert [row[2] for row in raw.execute(f"PRAGMA index_info('{name}')")] == columns
    profiles = list(raw.execute("PRAGMA index_list('user_profiles')"))
    assert [(row[2], row[3]) for row in profiles] == [(1, "pk")]  # unique by user_id
    assert raw.execute("PRAGMA user_version").fetchone() == (5,)
    leases = {row[1] for row in raw.execute("PRAGMA table_info('leases')")}
    assert leases == {"key", "owner", "token", "expires_at", "nudges"}
    cache = {row[1] for row in raw.execute("PRAGMA index_list('llm_cache')")}
    assert {"llm_cache_by_user", "llm_cache_by_expiry"} <= cache
    usage = [row[1] for row in raw.execute("PRAGMA table_info('token_usage')")]
    assert usage == ["user_id", "period", "tokens"]
    (pk,) = [row for row in raw.execute("PRAGMA index_list('token_usage')") if row[3] == "pk"]
    assert [row[2] for row in raw.execute(f"PRAGMA index_info('{pk[1]}')")] == ["user_id", "period"]


@pytest.mark.parametrize(
    ("query", "params", "index"),
    [
        (sqlite_module._UNANSWERED, ("u1",), "user_memory_replies"),
        # The user's events through an index, sorted by conversation position: at most the
        # compression threshold plus the kept tail (~70 by default), so the sort is small.
        (sqlite_module._RECENT_EVENTS, ("u1", "z", 20), "USING INDEX user_memory_by_"),
        (sqlite_module._EVENTS_BEFORE, ("u1", 20), "user_memory_by_id"),
        (sqlite_module._COUNT_EVENTS, ("u1",), "INDEX"),
        (sqlite_module._DELETE_EVENT, ("u1", "x"), "user_memory_by_id"),
    ],
)
async def test_queries_search_an_index(
    raw: sqlite3.Connection, query: str, params: tuple[object, ...], index: str
):
    plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {query}", params)]
    assert any(index in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan


async def test_reopening_keeps_data_and_schema(path: Path, store: SqliteStore):
    ids = EventIds()
    first = event("u1", ids)
    await store.append([first], profile=UserProfile.new("u1", T0))
    await store.close()
    async with await SqliteStore.open(path) as again:
        assert await again.events_before("u1", keep_last=0) == [first]
        assert await again.get_profile("u1") == UserProfile.new("u1", T0)


async def test_a_newer_schema_is_refused(path: Path, store: SqliteStore):
    await store.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreCorrupted, match="99"):
        await SqliteStore.open(path)


async def test_a_file_that_is_not_a_database_is_corrupted(tmp_path: Path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, sir. " * 200)
    with pytest.raises(StoreCorrupted):
        await SqliteStore.open(junk)


async def test_an_unreadable_row_is_corrupted(store: SqliteStore, raw: sqlite3.Connection):
    await store.save_profile(UserProfile.new("u1", T0))
    raw.execute("UPDATE user_profiles SET language = 'klingon' WHERE user_id = 'u1'")
    with pytest.raises(StoreCorrupted, match="u1"):
        await store.get_profile("u1")


async def test_a_locked_database_is_unavailable(store: SqliteStore, raw: sqlite3.Connection):
    await on_db_thread(store, "PRAGMA busy_timeout = 20")
    raw.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.save_profile(UserProfile.new("u1", T0))
    finally:
        raw.execute("ROLLBACK")
    await store.save_profile(UserProfile.new("u1", T0))


async def test_queued_writes_share_one_commit_and_a_failing_one_fails_alone(store: SqliteStore):
    ids = EventIds()
    entered, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(timeout=10)

    held = store._db.submit(hold, write=False)
    assert entered.wait(timeout=10)  # the thread is busy: what follows queues up
    before = store._db.write_batches
    good = [event(f"u{i}", ids) for i in range(5)]
    bad = replace(event("u-bad", ids), tokens=-1)
    writes = [store.append(good[:2]), store.append([bad]), store.append(good[2:])]
    bad_profile = UserProfile.new("u-worse", T0)
    object.__setattr__(bad_profile, "user_id", "")  # as if validation had been skipped
    writes.append(store.append([], profile=bad_profile))

    async def let_go() -> None:
        release.set()

    outcomes = await asyncio.gather(*writes, let_go(), return_exceptions=True)
    await held
    assert outcomes[0] is None
    assert isinstance(outcomes[1], StoreCorrupted)
    assert outcomes[2] is None
    assert isinstance(outcomes[3], StoreCorrupted)
    assert store._db.write_batches == before + 1
    for made in good:
        assert await store.events_before(made.user_id, keep_last=0) == [made]
    assert await store.events_before("u-bad", keep_last=0) == []


async def test_jobs_of_one_batch_run_in_submission_order(store: SqliteStore):
    ids = EventIds()
    entered, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(timeout=10)

    held = store._db.submit(hold, write=False)
    assert entered.wait(timeout=10)
    first, second = event("u1", ids), event("u1", ids)

    async def let_go() -> None:
        release.set()

    before, _, between, _, after, _ = await asyncio.gather(
        store.events_before("u1", keep_last=0),
        store.append([first]),
        store.events_before("u1", keep_last=0),
        store.append([second]),
        store.events_before("u1", keep_last=0),
        let_go(),
    )
    await held
    assert (before, between, after) == ([], [first], [first, second])


async def test_naive_datetimes_are_refused_before_reaching_the_file(store: SqliteStore):
    with pytest.raises(ValueError, match="naive"):
        await store.purge_older_than(datetime(2025, 1, 1))  # noqa: DTZ001


async def test_timestamps_are_stored_as_utc_microseconds(
    store: SqliteStore, raw: sqlite3.Connection
):
    ids = EventIds()
    made = replace(event("u1", ids), created_at=T0 + timedelta(microseconds=5))
    await store.append([made])
    (stored,) = raw.execute("SELECT created_at FROM user_memory").fetchone()
    assert stored == (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) + 5


async def test_a_cancelled_caller_leaves_the_store_working(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
):
    ids = EventIds()
    entered, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(timeout=10)

    held = store._db.submit(hold, write=False)
    assert entered.wait(timeout=10)
    made = event("u1", ids)
    reading = asyncio.ensure_future(store.get_profile("u1"))
    writing = asyncio.ensure_future(store.append([made]))

    async def give_up() -> None:  # runs after both tasks queued their jobs (tasks start FIFO)
        reading.cancel()
        writing.cancel()
        release.set()

    await asyncio.ensure_future(give_up())
    await held
    with pytest.raises(asyncio.CancelledError):
        await writing
    # The write was queued before its caller gave up: it commits all the same.
    assert await store.events_before("u1", keep_last=0) == [made]
    assert reading.cancelled()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_profile_rows_keep_their_columns(store: SqliteStore, raw: sqlite3.Connection):
    """Rows written before the shared codec still load, and saving writes the same columns."""
    micros = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    old_row = ("old", "en", "Jeeves", "formal", '["чай", "chess"]', "кратко", micros, micros + 1)
    raw.execute(
        "INSERT INTO user_profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*old_row, "00ff", micros + 2),
    )
    loaded = await store.get_profile("old")
    assert loaded == replace(
        UserProfile.new("old", T0, "en").with_summary(
            "кратко", "00ff", T0 + timedelta(microseconds=2)
        ),
        persona="Jeeves",
        tone="formal",
        preferred_topics=("чай", "chess"),
        updated_at=T0 + timedelta(microseconds=1),
    )
    await store.save_profile(replace(loaded, user_id="new"))
    (written,) = raw.execute("SELECT * FROM user_profiles WHERE user_id = 'new'").fetchall()
    assert written == ("new", *old_row[1:], "00ff", micros + 2)
