"""The MongoDB side of Butler's store: collections, indexes, schema version, and the codec
between BSON documents and the domain's profiles and events.

Times are kept as integer microseconds since the epoch (`*_us`), exact like SQLite's columns;
events also carry `created_at` as a BSON date (milliseconds) for the TTL and time indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from engine.domain import Language, MemoryEvent, Role, Source, Tone, UserProfile
from engine.errors import StoreCorrupted

SCHEMA_VERSION = 3  # 2: llm_cache; 3: origin (idempotent intake), delivered (the outbox)
PROFILES = "user_profiles"
EVENTS = "user_memory"
CACHE = "llm_cache"
META = "butler_meta"
DEFAULT_DATABASE = "butler"

Doc = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ROLES = ("user", "assistant")
_SOURCES = ("text", "voice")
_INT64_MAX = 2**63 - 1

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


def event_doc(event: MemoryEvent) -> Doc:
    """The document of `event`, checked as SQLite's CHECK constraints check a row.

    Raises:
        StoreCorrupted: the event holds values the store refuses.
    """
    if not event.user_id or not event.id:
        raise StoreCorrupted("an event needs a user id and an id")
    if event.role not in _ROLES or event.source not in _SOURCES:
        raise StoreCorrupted(f"an event's role or source is unknown: {event.role}/{event.source}")
    if not 0 <= event.tokens <= _INT64_MAX:
        raise StoreCorrupted(f"an event's token count is out of range: {event.tokens}")
    micros = to_micros(event.created_at)
    return {
        "user_id": event.user_id,
        "id": event.id,
        "role": event.role,
        "content": event.content,
        "source": event.source,
        "created_at": bson_date(micros),
        "created_us": micros,
        "tokens": event.tokens,
        "reply_to": event.reply_to,
        "origin": event.origin,
        **({"delivered": None} if event.role == "assistant" else {}),
    }


def decode_event(doc: Mapping[str, Any]) -> MemoryEvent:
    """The event of a `user_memory` document.

    Raises:
        StoreCorrupted: the document is not an event this code can read.
    """
    try:
        return MemoryEvent(
            id=_text(doc["id"]),
            user_id=_text(doc["user_id"]),
            role=cast(Role, _member(doc["role"], _ROLES)),
            content=_text(doc["content"]),
            source=cast(Source, _member(doc["source"], _SOURCES)),
            created_at=from_micros(_integer(doc["created_us"])),
            tokens=_integer(doc["tokens"]),
            reply_to=_text(doc["reply_to"]),
            origin=_text(doc.get("origin", "")),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise StoreCorrupted(f"an event cannot be read: {exc!r}") from exc


def profile_doc(profile: UserProfile) -> Doc:
    """The document of `profile`.

    Raises:
        StoreCorrupted: a time is naive.
    """
    updated = profile.summary_updated_at
    return {
        "user_id": profile.user_id,
        "language": profile.language,
        "persona": profile.persona,
        "tone": profile.tone,
        "preferred_topics": list(profile.preferred_topics),
        "memory_summary": profile.memory_summary,
        "created_us": to_micros(profile.created_at),
        "updated_us": to_micros(profile.updated_at),
        "summary_through": profile.summary_through,
        "summary_updated_us": None if updated is None else to_micros(updated),
    }


def decode_profile(doc: Mapping[str, Any]) -> UserProfile:
    """The profile of a `user_profiles` document.

    Raises:
        StoreCorrupted: the document holds values no valid profile has.
    """
    try:
        updated = doc["summary_updated_us"]
        return UserProfile(
            user_id=_text(doc["user_id"]),
            language=cast(Language, doc["language"]),
            persona=_text(doc["persona"]),
            tone=cast(Tone, doc["tone"]),
            preferred_topics=_topics(doc["preferred_topics"]),
            memory_summary=_text(doc["memory_summary"]),
            created_at=from_micros(_integer(doc["created_us"])),
            updated_at=from_micros(_integer(doc["updated_us"])),
            summary_through=_text(doc["summary_through"]),
            summary_updated_at=None if updated is None else from_micros(_integer(updated)),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise StoreCorrupted(f"profile {doc.get('user_id')!r} cannot be read: {exc!r}") from exc


def _member(value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {allowed}")
    return str(value)


def _topics(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError("preferred_topics is not a list")
    return tuple(_text(topic) for topic in value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value
