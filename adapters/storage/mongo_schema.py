"""The MongoDB side of Butler's store: collections, indexes, schema version, and the mapping
between BSON documents and the domain's profiles and events (fields through `engine.codec`).

Times are kept as integer microseconds since the epoch (`*_us`), exact like SQLite's columns;
events also carry `created_at` as a BSON date (milliseconds) for the TTL and time indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.codec import (
    checked_event,
    event_from_dict,
    event_to_dict,
    profile_from_dict,
    profile_to_dict,
)
from engine.domain import InvalidEventError, InvalidProfileError, MemoryEvent, UserProfile
from engine.errors import StoreCorrupted
from engine.ports import Lease

SCHEMA_VERSION = 5
"""2: llm_cache; 3: origin (idempotent intake), delivered (the outbox); 4: leases;
5: token_usage. `migrate` creates what is missing at any older version."""
PROFILES = "user_profiles"
EVENTS = "user_memory"
CACHE = "llm_cache"
USAGE = "token_usage"
"""One document per user and period: `user_id`, `period` (`d2026-12-03`, `m2026-12`),
`tokens`, grown by `$inc` upserts."""
META = "butler_meta"
LEASES = "leases"
"""One document per key: `_id` the key, `owner`, `token`, `expires_us`, `nudges`. A released
key keeps its document (owner "") so the next holder's token is greater; `_id` is unique."""
DEFAULT_DATABASE = "butler"

Doc = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# name -> (keys, options). `user_memory_by_id` keeps ids unique per user and serves every
# ordered read (ids sort in creation order); `user_memory_by_time` and the TTL index are the
# seed's; `user_memory_replies` finds the assistant events that answer a user's messages.
PROFILE_INDEXES: dict[str, tuple[list[tuple[str, int]], Doc]] = {
    "user_profiles_by_user": ([("user_id", 1)], {"unique": True}),
}
EVENT_INDEXES: dict[str, tuple[list[tuple[str, int]], Doc]] = {
    "user_memory_by_id": ([("user_id", 1), ("id", 1)], {"unique": True}),
    "user_memory_by_time": ([("user_id", 1), ("created_at", -1)], {}),
    "user_memory_replies": ([("user_id", 1), ("role", 1), ("reply_to", 1)], {}),
    # A user message's origin (`tg:<update_id>`) is stored once per user.
    "user_memory_by_origin": (
        [("user_id", 1), ("origin", 1)],
        {"unique": True, "partialFilterExpression": {"origin": {"$gt": ""}}},
    ),
    # The outbox: replies not yet accepted by the front door (`delivered` null).
    "user_memory_owed": ([("user_id", 1), ("delivered", 1), ("id", 1)], {}),
}
CACHE_INDEXES: dict[str, tuple[list[tuple[str, int]], Doc]] = {
    "llm_cache_by_user": ([("user_id", 1)], {}),
    # The server drops an answer once its `expires` date has passed (expireAfterSeconds 0);
    # reads also compare the exact microseconds, so an expired answer is never served.
    "llm_cache_ttl": ([("expires", 1)], {"expireAfterSeconds": 0}),
}
USAGE_INDEXES: dict[str, tuple[list[tuple[str, int]], Doc]] = {
    "token_usage_by_period": ([("user_id", 1), ("period", 1)], {"unique": True}),
}
TTL_INDEX = "user_memory_ttl"
"""Single-field index on `created_at` whose `expireAfterSeconds` is the retention period."""


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime.

    Raises:
        StoreCorrupted: the datetime is naive.
    """
    if moment.utcoffset() is None:
        raise StoreCorrupted(f"naive datetime {moment!r}: the store keeps aware UTC times only")
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def bson_date(micros: int) -> datetime:
    """The BSON date (milliseconds, rounded down) of a time in microseconds, naive UTC as
    PyMongo expects by default."""
    return (_EPOCH + (micros // 1000) * timedelta(milliseconds=1)).replace(tzinfo=None)


# The codec's time fields and the document keys that hold them in microseconds.
_PROFILE_TIMES = {
    "created_at": "created_us",
    "updated_at": "updated_us",
    "summary_updated_at": "summary_updated_us",
}


def event_doc(event: MemoryEvent) -> Doc:
    """The document of `event`, checked as SQLite's CHECK constraints check a row.

    Raises:
        StoreCorrupted: the event holds values the store refuses.
    """
    try:
        fields = event_to_dict(checked_event(event), encode_time=to_micros)
    except InvalidEventError as exc:
        raise StoreCorrupted(f"an event cannot be stored: {exc}") from exc
    micros = fields.pop("created_at")
    delivery = {"delivered": None} if event.role == "assistant" else {}  # owed until marked
    return {**fields, "created_at": bson_date(micros), "created_us": micros, **delivery}


def decode_event(doc: Mapping[str, Any]) -> MemoryEvent:
    """The event of a `user_memory` document.

    Raises:
        StoreCorrupted: the document is not an event this code can read.
    """
    fields = dict(doc)
    fields["created_at"] = fields.pop("created_us", None)
    try:
        return event_from_dict(fields, decode_time=_micros_time)
    except InvalidEventError as exc:
        raise StoreCorrupted(f"an event cannot be read: {exc}") from exc


def profile_doc(profile: UserProfile) -> Doc:
    """The document of `profile`.

    Raises:
        StoreCorrupted: a time is naive.
    """
    fields = profile_to_dict(profile, encode_time=to_micros)
    for name, key in _PROFILE_TIMES.items():
        fields[key] = fields.pop(name)
    return fields


def decode_profile(doc: Mapping[str, Any]) -> UserProfile:
    """The profile of a `user_profiles` document.

    Raises:
        StoreCorrupted: the document holds values no valid profile has.
    """
    fields = dict(doc)
    for name, key in _PROFILE_TIMES.items():
        if key in fields:
            fields[name] = fields.pop(key)
    try:
        return profile_from_dict(fields, decode_time=_micros_time)
    except InvalidProfileError as exc:
        raise StoreCorrupted(f"profile {doc.get('user_id')!r} cannot be read: {exc}") from exc


def _micros_time(value: object) -> datetime:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"a time is held as {type(value).__name__}, not integer microseconds")
    return from_micros(value)


def lease_doc_query(lease: Lease) -> Doc:
    """The filter matching `lease`'s claim (key, owner and token), renewed or not."""
    return {"_id": lease.key, "owner": lease.owner, "token": lease.token}


def decode_lease(doc: Mapping[str, Any]) -> Lease:
    """Raises: StoreCorrupted when the document holds values no lease has."""
    try:
        return Lease(
            str(doc["_id"]),
            str(doc["owner"]),
            int(doc["token"]),
            from_micros(int(doc["expires_us"])),
            int(doc.get("nudges", 0)),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise StoreCorrupted(f"mongodb: lease {doc.get('_id')!r} cannot be read: {exc}") from exc
