"""Export and import of a whole store as JSON Lines, for backups and moving between stores.

A dump is a header line `{"format": "butler-dump", "version": 1}` then one record per line,
each with a `type` (`profile` or `event`) and the fields `engine.codec` names. Both directions
stream in pages; an import checks the whole file before writing anything and is idempotent
(records replace those with the same user id, or user id and event id).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from engine.codec import event_from_dict, event_to_dict, profile_from_dict, profile_to_dict
from engine.domain import MemoryEvent, UserProfile
from engine.ports import Store

FORMAT = "butler-dump"
VERSION = 1
PAGE = 500


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
    return {"type": "profile", **profile_to_dict(profile)}


def event_record(event: MemoryEvent) -> dict[str, Any]:
    return {"type": "event", **event_to_dict(event)}


def _decode(record: dict[str, Any]) -> UserProfile | MemoryEvent:
    kind = record.get("type")
    if kind == "profile":
        return profile_from_dict(record)
    if kind == "event":
        return event_from_dict(record)
    raise ValueError(f"unknown record type {kind!r}")


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
