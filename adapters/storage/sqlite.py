"""`SqliteStore`: the `Store` port on one SQLite file in WAL mode, owned by one thread.

Every public method is exactly one job on that thread; concurrent writes share a commit.
"""

from __future__ import annotations

import copy
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from adapters.storage.sqlite_schema import (
    LeaseRow,
    connect,
    decode_events,
    decode_lease,
    decode_profile,
    event_row,
    lease_row,
    profile_row,
    to_micros,
)
from adapters.storage.sqlite_thread import DbThread
from engine import leases as rules
from engine.budget import Usage, period_keys
from engine.domain import MemoryEvent, MemorySlice, TurnContext, UserProfile
from engine.errors import DuplicateMessage, LeaseLost, StoreUnavailable
from engine.ports import Lease, Store

T = TypeVar("T")

_UPSERT_PROFILE = """
    INSERT INTO user_profiles (user_id, language, persona, tone, preferred_topics,
        memory_summary, created_at, updated_at, summary_through, summary_updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user_id) DO UPDATE SET language = excluded.language,
        persona = excluded.persona, tone = excluded.tone,
        preferred_topics = excluded.preferred_topics, memory_summary = excluded.memory_summary,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        summary_through = excluded.summary_through,
        summary_updated_at = excluded.summary_updated_at"""
# Not INSERT OR IGNORE: that would also swallow CHECK and NOT NULL failures.
_CREATE_PROFILE = """
    INSERT INTO user_profiles (user_id, language, persona, tone, preferred_topics,
        memory_summary, created_at, updated_at, summary_through, summary_updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user_id) DO NOTHING"""
_SELECT_PROFILE = """
    SELECT user_id, language, persona, tone, preferred_topics, memory_summary, created_at,
        updated_at, summary_through, summary_updated_at
    FROM user_profiles WHERE user_id = ?"""
_LIST_PROFILES = """
    SELECT user_id, language, persona, tone, preferred_topics, memory_summary, created_at,
        updated_at, summary_through, summary_updated_at
    FROM user_profiles WHERE user_id > ? ORDER BY user_id LIMIT ?"""
# The same as INSERT OR REPLACE on (user_id, id), but CHECK failures still fail.
_UPSERT_EVENT = """
    INSERT INTO user_memory
        (user_id, id, role, content, source, created_at, tokens, reply_to, origin)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user_id, id) DO UPDATE SET role = excluded.role, content = excluded.content,
        source = excluded.source, created_at = excluded.created_at, tokens = excluded.tokens,
        reply_to = excluded.reply_to, origin = excluded.origin"""
_BY_ORIGIN = "SELECT id FROM user_memory WHERE user_id = ? AND origin = ? AND origin <> ''"
_OWED = """
    SELECT id, role, content, source, created_at, tokens, reply_to, origin
    FROM user_memory WHERE user_id = ? AND role = 'assistant' AND delivered IS NULL
    ORDER BY id"""
_MARK_DELIVERED = """
    UPDATE user_memory SET delivered = ?
    WHERE user_id = ? AND id = ? AND role = 'assistant' AND delivered IS NULL"""
_RECENT_EVENTS = """
    SELECT id, role, content, source, created_at, tokens, reply_to, origin FROM (
        SELECT *, CASE WHEN role = 'assistant' AND reply_to <> '' THEN reply_to ELSE id END
            AS position
        FROM user_memory WHERE user_id = ?)
    WHERE position < ? ORDER BY position DESC, role = 'assistant' DESC, id DESC LIMIT ?"""
"""The conversation before a message, in `MemoryEvent.position` order (newest first)."""
_COUNT_EVENTS = "SELECT count(*) FROM user_memory WHERE user_id = ?"
_UNANSWERED = """
    SELECT id, role, content, source, created_at, tokens, reply_to, origin
    FROM user_memory AS u
    WHERE u.user_id = ? AND u.role = 'user' AND NOT EXISTS (
        SELECT 1 FROM user_memory AS a
        WHERE a.user_id = u.user_id AND a.role = 'assistant'
            AND a.reply_to IN (u.id, NULLIF(u.reply_to, '')))
    ORDER BY u.id"""
"""A user event with no reply naming it or the message it was folded into."""
_EVENTS_BEFORE = """
    SELECT id, role, content, source, created_at, tokens, reply_to, origin
    FROM user_memory WHERE user_id = ? ORDER BY id DESC LIMIT -1 OFFSET ?"""
_EVENTS_PAGE = """
    SELECT user_id, id, role, content, source, created_at, tokens, reply_to, origin
    FROM user_memory WHERE (user_id, id) > (?, ?) ORDER BY user_id, id LIMIT ?"""
_DELETE_EVENT = "DELETE FROM user_memory WHERE user_id = ? AND id = ?"
_PURGE = "DELETE FROM user_memory WHERE created_at < ?"
_CACHE_PUT = """
    INSERT INTO llm_cache (key, user_id, answer, expires_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET user_id = excluded.user_id, answer = excluded.answer,
        expires_at = excluded.expires_at"""
_LEASE = "SELECT key, owner, token, expires_at, nudges FROM leases WHERE key = ?"
_FENCE = "SELECT 1 FROM leases WHERE key = ? AND owner = ? AND token = ?"
_PUT_LEASE = """
    INSERT INTO leases (key, owner, token, expires_at, nudges) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, token = excluded.token,
        expires_at = excluded.expires_at, nudges = excluded.nudges"""
# A prefix match by range (not LIKE, whose wildcards a key may hold): key >= p AND key < p+max.
_LIVE_LEASES = """
    SELECT key, owner, token, expires_at, nudges FROM leases
    WHERE key >= ? AND key < ? AND owner <> '' AND expires_at > ? ORDER BY key"""
_ADD_USAGE = """
    INSERT INTO token_usage (user_id, period, tokens) VALUES (?, ?, ?)
    ON CONFLICT (user_id, period) DO UPDATE SET tokens = tokens + excluded.tokens"""
_OLD_USAGE = "DELETE FROM token_usage WHERE user_id = ? AND period NOT IN (?, ?)"
_USAGE = "SELECT period, tokens FROM token_usage WHERE user_id = ? AND period IN (?, ?)"
_USERS_OVER = """
    SELECT user_id, count(*) AS n FROM user_memory GROUP BY user_id HAVING n > ?
    ORDER BY n DESC, user_id LIMIT ?"""


class SqliteStore:
    """Profiles in `user_profiles`, events in `user_memory`; see `sqlite_schema` for both.

    Open with `await SqliteStore.open(path)` (or `async with await SqliteStore.open(path)`)
    and `await store.close()`. Errors surface as `StoreUnavailable` (closed, locked, disk) or
    `StoreCorrupted` (refused or unreadable data). Cancelling a caller does not undo a write
    already queued. Leases live in `leases`; each lease call, and each fenced write with its
    check, is one job, so one `BEGIN IMMEDIATE` transaction: SQLite's write lock makes it
    atomic against every other process on the file.
    """

    def __init__(self, db: DbThread, path: Path | None = None) -> None:
        self._db = db
        self._path = path
        self._identity = _identity(path) if path is not None else None
        """(st_dev, st_ino) of the file opened: unlinked or replaced, the path names another."""
        self._lost: str | None = None
        self._root = self
        """The store opened (a fenced view shares its thread and its state)."""
        self._fence: Lease | None = None
        """The lease a fenced view checks before each of its writes; None: not a view."""

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        """Open (creating if needed) the database at `path` and start its thread.

        Raises:
            StoreUnavailable: the file cannot be opened or created.
            StoreCorrupted: the file is not a Butler database this code can use.
        """
        db = DbThread(lambda: connect(str(path)), name=f"sqlite-store:{Path(path).name}")
        await db.start()
        return cls(db, Path(path))

    def fenced(self, lease: Lease) -> Store:
        """A view whose writes each check `lease` in their own transaction (see the port)."""
        view = copy.copy(self._root)
        view._fence = lease
        return view

    async def check(self) -> None:
        """Raise StoreUnavailable (for good) once the file opened is no longer at its path.

        SQLite goes on writing into an unlinked file without a word, and a restart opens a new
        empty one: everything accepted in between would be gone.
        """
        if self._root is not self:
            await self._root.check()
            return
        if self._lost is None and self._identity is not None and self._path is not None:
            now = _identity(self._path)
            if now != self._identity:
                what = "removed" if now is None else "replaced"
                self._lost = f"sqlite: the database file {self._path} was {what} under the service"
                self._db.refuse(self._lost)
        if self._lost is not None:
            raise StoreUnavailable(self._lost)

    async def close(self) -> None:
        """Finish queued jobs, then close the file; calling it again does nothing. A fenced
        view closes nothing."""
        if self._root is self:
            await self._db.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get_profile(self, user_id: str) -> UserProfile | None:
        return await self._read(lambda conn: _profile(conn, user_id))

    async def save_profile(self, profile: UserProfile) -> None:
        row = profile_row(profile)
        await self._guarded(lambda conn: _execute(conn, _UPSERT_PROFILE, row))

    async def list_profiles(self, *, limit: int, after: str = "") -> list[UserProfile]:
        """Profiles ordered by user id, starting after `after`."""
        params = (after, max(limit, 0))
        return await self._read(lambda conn: _profiles(conn, params))

    async def erase_user(self, user_id: str) -> None:
        """Delete the user's profile and every event of theirs."""
        await self._guarded(lambda conn: _erase(conn, user_id))

    async def append(
        self, events: Sequence[MemoryEvent], *, profile: UserProfile | None = None
    ) -> None:
        """Store `events` (replacing any with the same id) and create `profile` if absent.

        Raises:
            DuplicateMessage: a user event's origin is stored under another id already.
        """
        rows = [event_row(event) for event in events]
        created = None if profile is None else profile_row(profile)
        await self._guarded(lambda conn: _append(conn, rows, created))

    async def owed_replies(self, user_id: str) -> list[MemoryEvent]:
        """Assistant events of the user not yet marked delivered, oldest first."""
        return await self._read(lambda conn: _events(conn, _OWED, user_id, (user_id,)))

    async def mark_delivered(self, user_id: str, event_id: str, receipt: str) -> None:
        """Record the reply as handed over; a second mark keeps the first receipt."""
        params = (receipt, user_id, event_id)  # a fact, even from a former holder: not fenced
        await self._write(lambda conn: _execute(conn, _MARK_DELIVERED, params))

    async def load_turn(self, user_id: str, *, limit: int, before: str) -> TurnContext:
        """The profile, the `limit` newest events of the conversation before message
        `before` (in `MemoryEvent.position` order), and the count."""
        return await self._read(lambda conn: _turn(conn, user_id, max(limit, 0), before))

    async def unanswered(self, user_id: str) -> list[MemoryEvent]:
        """User events no reply answers (theirs, or their batch's), oldest first."""
        return await self._read(lambda conn: _events(conn, _UNANSWERED, user_id, (user_id,)))

    async def events_before(self, user_id: str, *, keep_last: int) -> list[MemoryEvent]:
        """Every event except the `keep_last` newest, oldest first."""
        params = (user_id, max(keep_last, 0))
        return await self._read(lambda conn: _events(conn, _EVENTS_BEFORE, user_id, params)[::-1])

    async def apply_summary(self, profile: UserProfile, event_ids: Sequence[str]) -> int:
        """Save `profile`, then delete the user's events `event_ids`, in one transaction.

        Returns:
            How many events were deleted.
        """
        row = profile_row(profile)
        keys = [(profile.user_id, event_id) for event_id in event_ids]
        return await self._guarded(lambda conn: _summarise(conn, row, keys))

    async def purge_older_than(self, cutoff: datetime) -> int:
        """Delete events created before `cutoff`; returns how many."""
        micros = to_micros(cutoff)
        return await self._write(lambda conn: _execute(conn, _PURGE, (micros,)))

    async def cached_answer(self, key: str, *, now: datetime) -> str | None:
        params = (key, to_micros(now))
        return await self._read(lambda conn: _cached(conn, params))

    async def cache_answer(
        self, key: str, user_id: str, text: str, *, expires_at: datetime
    ) -> None:
        params = (key, user_id, text, to_micros(expires_at))
        await self._guarded(lambda conn: _execute(conn, _CACHE_PUT, params))

    async def purge_cache(self, now: datetime) -> int:
        micros = to_micros(now)
        return await self._write(
            lambda conn: _execute(conn, "DELETE FROM llm_cache WHERE expires_at <= ?", (micros,))
        )

    async def users_over(self, threshold: int, *, limit: int) -> list[tuple[str, int]]:
        """Users holding more than `threshold` events, most events first."""
        params = (threshold, max(limit, 0))
        return await self._read(lambda conn: _counts(conn, params))

    async def add_usage(self, user_id: str, tokens: int, *, now: datetime) -> None:
        """Add `tokens` to the user's day and month of `now`; older periods are dropped.

        Raises:
            ValueError: `tokens` is negative.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be 0 or more, got {tokens}")
        keys = period_keys(now)
        await self._write(lambda conn: _add_usage(conn, user_id, tokens, keys))

    async def usage(self, user_id: str, *, now: datetime) -> Usage:
        params = (user_id, *period_keys(now))
        return await self._read(lambda conn: _usage(conn, params))

    async def reset_usage(self, user_id: str) -> None:
        sql = "DELETE FROM token_usage WHERE user_id = ?"
        await self._write(lambda conn: _execute(conn, sql, (user_id,)))

    async def events_page(self, *, after: tuple[str, str], limit: int) -> list[MemoryEvent]:
        """Events ordered by (user id, id), starting after the key `after` (for dumps)."""
        params = (*after, max(limit, 1))
        return await self._read(lambda conn: _page(conn, params))

    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float, now: datetime) -> Lease:
        """Take `key` if free or expired (token + 1), or renew it for its holder.

        Raises:
            OwnedElsewhere: another owner holds `key` unexpired.
        """

        def acquire(conn: sqlite3.Connection) -> Lease:
            lease = rules.taken(_lease(conn, key), key, owner, ttl_s=ttl_s, now=now)
            conn.execute(_PUT_LEASE, lease_row(lease))
            return lease

        return await self._write(acquire)

    async def renew_lease(self, lease: Lease, *, ttl_s: float, now: datetime) -> Lease:
        """Extend `lease`. Raises: LeaseLost when its key has another holder or token."""

        def renew(conn: sqlite3.Connection) -> Lease:
            kept = rules.renewed(_lease(conn, lease.key), lease, ttl_s=ttl_s, now=now)
            conn.execute(_PUT_LEASE, lease_row(kept))
            return kept

        return await self._write(renew)

    async def renew_leases(
        self, leases: Sequence[Lease], *, ttl_s: float, now: datetime
    ) -> list[Lease | None]:
        """Each of `leases` renewed, or None where it was lost: one transaction."""
        rules.expiry(now, ttl_s)  # refuses a bad time to live before the job

        def renew(conn: sqlite3.Connection) -> list[Lease | None]:
            renewed: list[Lease | None] = []
            for lease in leases:
                current = _lease(conn, lease.key)
                if current is None or not current.same_claim(lease):
                    renewed.append(None)
                    continue
                kept = rules.renewed(current, lease, ttl_s=ttl_s, now=now)
                conn.execute(_PUT_LEASE, lease_row(kept))
                renewed.append(kept)
            return renewed

        return await self._write(renew)

    async def release_lease(self, lease: Lease) -> None:
        """Free the key if `lease` still holds it."""

        def release(conn: sqlite3.Connection) -> None:
            freed = rules.released(_lease(conn, lease.key), lease)
            if freed is not None:
                conn.execute(_PUT_LEASE, lease_row(freed))

        await self._write(release)

    async def leases(self, prefix: str, *, now: datetime) -> list[Lease]:
        """Unexpired leases whose key starts with `prefix`, ordered by key."""
        params = (prefix, prefix + "\U0010ffff", to_micros(now))
        return await self._read(
            lambda conn: [decode_lease(row) for row in conn.execute(_LIVE_LEASES, params)]
        )

    async def nudge_lease(self, key: str, *, now: datetime) -> Lease | None:
        """Count a nudge on the live lease of `key`; None when nobody holds it."""

        def nudge(conn: sqlite3.Connection) -> Lease | None:
            current = _lease(conn, key)
            if current is None or not rules.is_live(current, now):
                return None
            conn.execute("UPDATE leases SET nudges = nudges + 1 WHERE key = ?", (key,))
            return _lease(conn, key)

        return await self._write(nudge)

    async def _guarded(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """A write; in a fenced view, checked against the lease in the same transaction."""
        fence = self._fence
        if fence is None:
            return await self._write(work)

        claim = (fence.key, fence.owner, fence.token)

        def checked(conn: sqlite3.Connection) -> T:
            if conn.execute(_FENCE, claim).fetchone() is None:
                raise LeaseLost(fence.key)
            return work(conn)

        return await self._write(checked)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.call(work, write=False)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.call(work, write=True)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> int:
    return conn.execute(sql, params).rowcount


def _lease(conn: sqlite3.Connection, key: str) -> Lease | None:
    row: LeaseRow | None = conn.execute(_LEASE, (key,)).fetchone()
    return None if row is None else decode_lease(row)


def _profile(conn: sqlite3.Connection, user_id: str) -> UserProfile | None:
    row = conn.execute(_SELECT_PROFILE, (user_id,)).fetchone()
    return None if row is None else decode_profile(row)


def _profiles(conn: sqlite3.Connection, params: tuple[str, int]) -> list[UserProfile]:
    return [decode_profile(row) for row in conn.execute(_LIST_PROFILES, params)]


def _events(
    conn: sqlite3.Connection, sql: str, user_id: str, params: Sequence[object]
) -> list[MemoryEvent]:
    """Events of `user_id` selected by `sql` (which leaves user_id out: it is known)."""
    return decode_events(user_id, conn.execute(sql, params).fetchall())


def _page(conn: sqlite3.Connection, params: tuple[str, str, int]) -> list[MemoryEvent]:
    rows = conn.execute(_EVENTS_PAGE, params).fetchall()
    return [event for row in rows for event in decode_events(row[0], [row[1:]])]


def _turn(conn: sqlite3.Connection, user_id: str, limit: int, before: str) -> TurnContext:
    profile = _profile(conn, user_id)
    events = _events(conn, _RECENT_EVENTS, user_id, (user_id, before, limit))
    events.reverse()
    (count,) = conn.execute(_COUNT_EVENTS, (user_id,)).fetchone()
    summary = "" if profile is None else profile.memory_summary
    return TurnContext(profile, MemorySlice(tuple(events), summary, count))


def _append(
    conn: sqlite3.Connection, rows: Sequence[Sequence[object]], profile: Sequence[object] | None
) -> None:
    for row in rows:
        user_id, event_id, origin = row[0], row[1], row[8]
        if origin:
            found = conn.execute(_BY_ORIGIN, (user_id, origin)).fetchone()
            if found is not None and found[0] != event_id:
                raise DuplicateMessage(str(found[0]))
    if profile is not None:
        conn.execute(_CREATE_PROFILE, profile)
    conn.executemany(_UPSERT_EVENT, rows)


def _summarise(
    conn: sqlite3.Connection, profile: Sequence[object], keys: list[tuple[str, str]]
) -> int:
    conn.execute(_UPSERT_PROFILE, profile)
    deleted = 0
    for key in keys:
        deleted += conn.execute(_DELETE_EVENT, key).rowcount
    return deleted


def _cached(conn: sqlite3.Connection, params: tuple[str, int]) -> str | None:
    row = conn.execute(
        "SELECT answer FROM llm_cache WHERE key = ? AND expires_at > ?", params
    ).fetchone()
    return None if row is None else str(row[0])


def _add_usage(conn: sqlite3.Connection, user_id: str, tokens: int, keys: tuple[str, str]) -> None:
    conn.execute(_OLD_USAGE, (user_id, *keys))
    conn.executemany(_ADD_USAGE, [(user_id, key, tokens) for key in keys])


def _usage(conn: sqlite3.Connection, params: tuple[str, str, str]) -> Usage:
    found = dict(conn.execute(_USAGE, params).fetchall())
    return Usage(day=int(found.get(params[1], 0)), month=int(found.get(params[2], 0)))


def _erase(conn: sqlite3.Connection, user_id: str) -> None:
    conn.execute("DELETE FROM token_usage WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM llm_cache WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM user_memory WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM user_profiles WHERE user_id = ?", (user_id,))


def _counts(conn: sqlite3.Connection, params: tuple[int, int]) -> list[tuple[str, int]]:
    return [(user_id, count) for user_id, count in conn.execute(_USERS_OVER, params)]
