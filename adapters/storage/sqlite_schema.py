"""The SQLite file of Butler's store: connection settings, versioned schema, and the mapping
between its rows and the domain's profiles (fields through `engine.codec`) and events.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import cast

from engine.codec import profile_from_dict, profile_to_dict
from engine.domain import MemoryEvent, Role, Source, UserProfile
from engine.errors import StoreCorrupted
from engine.ports import Lease

SCHEMA_VERSION = 5
"""2: llm_cache; 3: origin (idempotent intake), delivered (the outbox); 4: leases;
5: token_usage. Every step is `CREATE ... IF NOT EXISTS` in `_DDL` (or a column added by
`_migrate`), so a file at any older version comes up to 5."""
BUSY_TIMEOUT_MS = 5000

# Timestamps are integer microseconds since the Unix epoch, UTC: exact, compact, ordered.
# Language and tone get no CHECK: adding a tone must not need a table rebuild; reads validate.
# Events live in a rowid table with a unique (user_id, id) index: measured against a WITHOUT
# ROWID table keyed on (user_id, id), appends cost ~40% less (rows of a few hundred bytes
# append at the table's end) and the planner picks the replies index for `unanswered`.
_DDL = (
    """CREATE TABLE IF NOT EXISTS user_profiles (
        user_id TEXT NOT NULL PRIMARY KEY CHECK (user_id <> ''),
        language TEXT NOT NULL,
        persona TEXT NOT NULL,
        tone TEXT NOT NULL,
        preferred_topics TEXT NOT NULL,
        memory_summary TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        summary_through TEXT NOT NULL,
        summary_updated_at INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS user_memory (
        user_id TEXT NOT NULL CHECK (user_id <> ''),
        id TEXT NOT NULL CHECK (id <> ''),
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('text', 'voice')),
        created_at INTEGER NOT NULL,
        tokens INTEGER NOT NULL CHECK (tokens >= 0),
        reply_to TEXT NOT NULL,
        origin TEXT NOT NULL DEFAULT '',
        delivered TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS user_memory_by_id ON user_memory (user_id, id)",
    "CREATE INDEX IF NOT EXISTS user_memory_by_time ON user_memory (user_id, created_at)",
    """CREATE INDEX IF NOT EXISTS user_memory_replies ON user_memory (user_id, reply_to)
        WHERE role = 'assistant'""",
    # A user message's origin (`tg:<update_id>`) is stored once per user: a repeat is refused.
    """CREATE UNIQUE INDEX IF NOT EXISTS user_memory_by_origin ON user_memory (user_id, origin)
        WHERE origin <> ''""",
    # The outbox: replies stored but not yet accepted by the front door.
    """CREATE INDEX IF NOT EXISTS user_memory_owed ON user_memory (user_id, id)
        WHERE role = 'assistant' AND delivered IS NULL""",
    """CREATE TABLE IF NOT EXISTS llm_cache (
        key TEXT NOT NULL PRIMARY KEY,
        user_id TEXT NOT NULL CHECK (user_id <> ''),
        answer TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS llm_cache_by_user ON llm_cache (user_id)",
    "CREATE INDEX IF NOT EXISTS llm_cache_by_expiry ON llm_cache (expires_at)",
    # Who serves a key (`user:<id>`, `partition:<n>`) and its fencing token. A released key
    # keeps its row (owner '') so that the next holder's token is greater.
    """CREATE TABLE IF NOT EXISTS leases (
        key TEXT NOT NULL PRIMARY KEY CHECK (key <> ''),
        owner TEXT NOT NULL,
        token INTEGER NOT NULL CHECK (token > 0),
        expires_at INTEGER NOT NULL,
        nudges INTEGER NOT NULL DEFAULT 0 CHECK (nudges >= 0)
    )""",
    # Tokens per user and period (`engine.budget.period_keys`: `d2026-12-03`, `m2026-12`).
    """CREATE TABLE IF NOT EXISTS token_usage (
        user_id TEXT NOT NULL CHECK (user_id <> ''),
        period TEXT NOT NULL CHECK (period <> ''),
        tokens INTEGER NOT NULL CHECK (tokens >= 0),
        PRIMARY KEY (user_id, period)
    ) WITHOUT ROWID""",
)

ProfileRow = tuple[str, str, str, str, str, str, int, int, str, int | None]
EventRow = tuple[str, Role, str, Source, int, int, str, str]
"""(id, role, content, source, created_at, tokens, reply_to, origin); CHECKs keep role and
source."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def connect(path: str) -> sqlite3.Connection:
    """Open `path` in WAL mode and bring its schema to `SCHEMA_VERSION`.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
        StoreCorrupted: the file's schema is newer than this code.
    """
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_version(conn)
        if 0 < version < 3:
            _add_delivery_columns(conn)
        for statement in _DDL:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreCorrupted(f"schema version {version} is newer than {SCHEMA_VERSION}")
    return int(version)


def _add_delivery_columns(conn: sqlite3.Connection) -> None:
    """Version 3: `origin` and `delivered`. Replies written before it were sent as they were
    made (there was no outbox), so they are marked delivered rather than sent again."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(user_memory)")}
    if "origin" not in columns:
        conn.execute("ALTER TABLE user_memory ADD COLUMN origin TEXT NOT NULL DEFAULT ''")
    if "delivered" not in columns:
        conn.execute("ALTER TABLE user_memory ADD COLUMN delivered TEXT")
        conn.execute("UPDATE user_memory SET delivered = 'before-outbox' WHERE role = 'assistant'")


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime."""
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the store keeps aware UTC times only")
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def event_row(event: MemoryEvent) -> tuple[str, str, str, str, str, int, int, str, str]:
    """Parameters for the event upsert: (user_id, id) first, then the other columns."""
    return (
        event.user_id,
        event.id,
        event.role,
        event.content,
        event.source,
        to_micros(event.created_at),
        event.tokens,
        event.reply_to,
        event.origin,
    )


def decode_events(user_id: str, rows: list[EventRow]) -> list[MemoryEvent]:
    """The events of `user_id` from rows of (id, role, content, source, created_at, tokens,
    reply_to, origin), in row order.

    Raises:
        StoreCorrupted: a row holds values no event has.
    """
    try:
        return [
            MemoryEvent(
                row[0],
                user_id,
                row[1],
                row[2],
                row[3],
                _EPOCH + row[4] * _MICROSECOND,
                row[5],
                row[6],
                row[7],
            )
            for row in rows
        ]
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreCorrupted(f"an event cannot be read: {exc}") from exc


_PROFILE_COLUMNS = (
    "user_id",
    "language",
    "persona",
    "tone",
    "preferred_topics",
    "memory_summary",
    "created_at",
    "updated_at",
    "summary_through",
    "summary_updated_at",
)
"""The columns of `user_profiles`, in order: the codec's field names, topics as JSON text."""


def profile_row(profile: UserProfile) -> ProfileRow:
    """Parameters in the column order of `user_profiles`."""
    fields = profile_to_dict(profile, encode_time=to_micros)
    fields["preferred_topics"] = json.dumps(fields["preferred_topics"], ensure_ascii=False)
    return cast(ProfileRow, tuple(fields[column] for column in _PROFILE_COLUMNS))


def decode_profile(row: ProfileRow) -> UserProfile:
    """The profile of a row with the columns of `user_profiles`, in order.

    Raises:
        StoreCorrupted: the row holds values no valid profile has.
    """
    fields: dict[str, object] = dict(zip(_PROFILE_COLUMNS, row, strict=True))
    try:
        fields["preferred_topics"] = json.loads(row[4])
        return profile_from_dict(fields, decode_time=_micros_time)
    except (ValueError, TypeError) as exc:
        raise StoreCorrupted(f"profile {row[0]!r} cannot be read: {exc}") from exc


def _micros_time(value: object) -> datetime:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"a time column holds {type(value).__name__}, not an integer")
    return from_micros(value)


LeaseRow = tuple[str, str, int, int, int]
"""(key, owner, token, expires_at, nudges): the columns of `leases`, in order."""


def lease_row(lease: Lease) -> LeaseRow:
    return (lease.key, lease.owner, lease.token, to_micros(lease.expires_at), lease.nudges)


def decode_lease(row: LeaseRow) -> Lease:
    """Raises: StoreCorrupted when the row holds values no lease has."""
    try:
        return Lease(str(row[0]), str(row[1]), int(row[2]), _micros_time(row[3]), int(row[4]))
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreCorrupted(f"lease {row[0]!r} cannot be read: {exc}") from exc
