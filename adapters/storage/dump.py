"""Export and import of a whole store as JSON Lines, for backups and moving between stores.

A dump is a header line `{"format": "butler-dump", "version": 1}` then one record per line,
each with a `type`: `profile` or `event`. Both directions stream in pages; an import checks
the whole file before writing anything and is idempotent (records replace those with the same
user id, or user id and event id).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO, cast, get_args

from engine.domain import Language, MemoryEvent, Role, Source, Tone, UserProfile
from engine.ports import Store

FORMAT = "butler-dump"
VERSION = 1
PAGE = 500
_ROLES = get_args(Role)
_SOURCES = get_args(Source)


class DumpError(ValueError):
    """A dump file that cannot be imported; says which line and why."""


class DumpableStore(Store, Protocol):
    """A store that can list every event in a stable order, page by page."""

    async def events_page(self, *, after: tuple[str, str], limit: int) -> list[MemoryEvent]:
        """Events ordered by (user id, id), starting after the key `after`."""
        ...


@dataclass(frozen=True, slots=True)
class DumpCounts:
    """How many records a dump moved."""

    profiles: int = 0
    events: int = 0


async def export_store(store: DumpableStore, path: Path) -> DumpCounts:
    """Write every profile and event of `store` to `path` (replaced atomically when done).

    A store in use may change during the export: each record is exported as it was when its
    page was read.
    """
    partial = path.with_name(f".{path.name}.partial")
    profiles = events = 0
    try:
        with partial.open("w", encoding="utf-8") as out:
            _write(out, {"format": FORMAT, "version": VERSION})
            after = ""
            while page := await store.list_profiles(limit=PAGE, after=after):
                for profile in page:
                    _write(out, profile_record(profile))
                profiles += len(page)
                after = page[-1].user_id
            key = ("", "")
            while chunk := await store.events_page(after=key, limit=PAGE):
                for event in chunk:
                    _write(out, event_record(event))
                events += len(chunk)
                key = (chunk[-1].user_id, chunk[-1].id)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return DumpCounts(profiles, events)


async def import_store(store: Store, path: Path) -> DumpCounts:
    """Check every line of `path`, then write its records into `store`.

    Raises:
        DumpError: the file is not a Butler dump or a line is invalid (nothing is written).
        OSError: the file cannot be read.
    """
    checked = DumpCounts()
    for record in read_dump(path):  # the first pass only checks
        if isinstance(record, UserProfile):
            checked = DumpCounts(checked.profiles + 1, checked.events)
        else:
            checked = DumpCounts(checked.profiles, checked.events + 1)
    profiles: list[UserProfile] = []
    events: list[MemoryEvent] = []
    for record in read_dump(path):
        if isinstance(record, UserProfile):
            profiles.append(record)
            if len(profiles) >= PAGE:
                await _save_profiles(store, profiles)
        else:
            events.append(record)
            if len(events) >= PAGE:
                await _append(store, events)
    await _save_profiles(store, profiles)
    await _append(store, events)
    return checked


async def _save_profiles(store: Store, profiles: list[UserProfile]) -> None:
    await asyncio.gather(*(store.save_profile(profile) for profile in profiles))
    profiles.clear()


async def _append(store: Store, events: list[MemoryEvent]) -> None:
    """Store a batch; imported replies are history, never owed to the user again."""
    if events:
        await store.append(events)
        await asyncio.gather(
            *(
                store.mark_delivered(e.user_id, e.id, "imported")
                for e in events
                if e.role == "assistant"
            )
        )
    events.clear()


def read_dump(path: Path) -> Iterator[UserProfile | MemoryEvent]:
    """The records of a dump file, in file order.

    Raises:
        DumpError: the header or a line is invalid.
    """
    with path.open(encoding="utf-8") as lines:
        header = _parse(lines.readline(), 1)
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise DumpError(f"line 1: not a {FORMAT} version {VERSION} header")
        for number, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            record = _parse(line, number)
            try:
                yield _decode(record)
            except (KeyError, TypeError, ValueError) as exc:
                raise DumpError(f"line {number}: {exc}") from exc


def profile_record(profile: UserProfile) -> dict[str, Any]:
    return {
        "type": "profile",
        "user_id": profile.user_id,
        "language": profile.language,
        "persona": profile.persona,
        "tone": profile.tone,
        "preferred_topics": list(profile.preferred_topics),
        "memory_summary": profile.memory_summary,
        "created_at": _time(profile.created_at),
        "updated_at": _time(profile.updated_at),
        "summary_through": profile.summary_through,
        "summary_updated_at": None
        if profile.summary_updated_at is None
        else _time(profile.summary_updated_at),
    }


def event_record(event: MemoryEvent) -> dict[str, Any]:
    return {
        "type": "event",
        "user_id": event.user_id,
        "id": event.id,
        "role": event.role,
        "content": event.content,
        "source": event.source,
        "created_at": _time(event.created_at),
        "tokens": event.tokens,
        "reply_to": event.reply_to,
        "origin": event.origin,
    }


def _decode(record: dict[str, Any]) -> UserProfile | MemoryEvent:
    kind = record.get("type")
    if kind == "profile":
        topics = record["preferred_topics"]
        if not isinstance(topics, list):
            raise TypeError("preferred_topics must be a list")
        updated = record["summary_updated_at"]
        return UserProfile(
            user_id=_str(record, "user_id"),
            language=cast(Language, _str(record, "language")),
            persona=_str(record, "persona"),
            tone=cast(Tone, _str(record, "tone")),
            preferred_topics=tuple(_str({"topic": t}, "topic") for t in topics),
            memory_summary=_str(record, "memory_summary"),
            created_at=_parse_time(record["created_at"]),
            updated_at=_parse_time(record["updated_at"]),
            summary_through=_str(record, "summary_through"),
            summary_updated_at=None if updated is None else _parse_time(updated),
        )
    if kind == "event":
        role, source, tokens = record["role"], record["source"], record["tokens"]
        if role not in _ROLES or source not in _SOURCES:
            raise ValueError(f"unknown role or source: {role!r}, {source!r}")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise ValueError(f"tokens must be a non-negative integer, got {tokens!r}")
        event = MemoryEvent(
            id=_str(record, "id"),
            user_id=_str(record, "user_id"),
            role=role,
            content=_str(record, "content"),
            source=source,
            created_at=_parse_time(record["created_at"]),
            tokens=tokens,
            reply_to=_str(record, "reply_to"),
            origin=_str(record, "origin") if "origin" in record else "",
        )
        if not event.id or not event.user_id:
            raise ValueError("an event needs a user id and an id")
        return event
    raise ValueError(f"unknown record type {kind!r}")


def _str(record: dict[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError("times must be ISO 8601 strings")
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return moment.astimezone(UTC)


def _parse(line: str, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DumpError(f"line {number}: not JSON: {exc.msg}") from exc
    if not isinstance(record, dict):
        raise DumpError(f"line {number}: a record must be a JSON object")
    return record


def _write(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    out.write("\n")
