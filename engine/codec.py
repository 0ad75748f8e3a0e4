"""The one codec between domain values and plain dicts: profiles and events, field by field.

Field names are the dataclasses' own; times are ISO 8601 in UTC with microseconds unless a
caller passes its own time codec (the stores keep integer microseconds in their columns).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast, get_args

from engine.domain import (
    InvalidEventError,
    InvalidProfileError,
    Language,
    MemoryEvent,
    Role,
    Source,
    Tone,
    UserProfile,
)

EncodeTime = Callable[[datetime], Any]
DecodeTime = Callable[[Any], datetime]

_ROLES: tuple[str, ...] = get_args(Role)
_SOURCES: tuple[str, ...] = get_args(Source)
_INT64_MAX = 2**63 - 1  # every store keeps counts in a signed 64-bit integer
_DECODING_ERRORS = (KeyError, TypeError, ValueError, OverflowError)


def utc(moment: object) -> datetime:
    """`moment` in UTC; the time codec of in-memory copies.

    Raises:
        TypeError: `moment` is not a datetime.
        ValueError: the datetime is naive (a store cannot know which instant it means).
    """
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: only aware times are kept")
    return moment.astimezone(UTC)


def iso_time(moment: datetime) -> str:
    """`moment` as ISO 8601 in UTC with microseconds, e.g. `2025-03-01T09:30:00.123456+00:00`."""
    return utc(moment).isoformat(timespec="microseconds")


def parse_iso_time(text: object) -> datetime:
    """The UTC datetime of an ISO 8601 string that carries an offset."""
    if not isinstance(text, str):
        raise TypeError("times must be ISO 8601 strings")
    return utc(datetime.fromisoformat(text))


def profile_to_dict(profile: UserProfile, *, encode_time: EncodeTime = iso_time) -> dict[str, Any]:
    """The fields of `profile`, topics as a list, times through `encode_time`."""
    updated = profile.summary_updated_at
    return {
        "user_id": profile.user_id,
        "language": profile.language,
        "persona": profile.persona,
        "tone": profile.tone,
        "preferred_topics": list(profile.preferred_topics),
        "memory_summary": profile.memory_summary,
        "created_at": encode_time(profile.created_at),
        "updated_at": encode_time(profile.updated_at),
        "summary_through": profile.summary_through,
        "summary_updated_at": None if updated is None else encode_time(updated),
    }


def profile_from_dict(
    data: Mapping[str, Any], *, decode_time: DecodeTime = parse_iso_time
) -> UserProfile:
    """The profile `profile_to_dict` made `data` from, checked by `UserProfile` itself.

    Raises:
        InvalidProfileError: a field is missing, of the wrong type or outside its values.
    """
    try:
        updated = data["summary_updated_at"]
        return UserProfile(
            user_id=_text(data["user_id"]),
            language=cast(Language, _text(data["language"])),
            persona=_text(data["persona"]),
            tone=cast(Tone, _text(data["tone"])),
            preferred_topics=_topics(data["preferred_topics"]),
            memory_summary=_text(data["memory_summary"]),
            created_at=decode_time(data["created_at"]),
            updated_at=decode_time(data["updated_at"]),
            summary_through=_text(data["summary_through"]),
            summary_updated_at=None if updated is None else decode_time(updated),
        )
    except InvalidProfileError:
        raise
    except _DECODING_ERRORS as exc:
        raise InvalidProfileError(f"a profile cannot be read: {_why(exc)}") from exc


def event_to_dict(event: MemoryEvent, *, encode_time: EncodeTime = iso_time) -> dict[str, Any]:
    """The fields of `event`, its time through `encode_time`."""
    return {
        "user_id": event.user_id,
        "id": event.id,
        "role": event.role,
        "content": event.content,
        "source": event.source,
        "created_at": encode_time(event.created_at),
        "tokens": event.tokens,
        "reply_to": event.reply_to,
    }


def event_from_dict(
    data: Mapping[str, Any], *, decode_time: DecodeTime = parse_iso_time
) -> MemoryEvent:
    """The event `event_to_dict` made `data` from, checked as every store checks events.

    Raises:
        InvalidEventError: a field is missing, of the wrong type or outside its values.
    """
    try:
        event = MemoryEvent(
            id=_text(data["id"]),
            user_id=_text(data["user_id"]),
            role=cast(Role, _member(data["role"], _ROLES)),
            content=_text(data["content"]),
            source=cast(Source, _member(data["source"], _SOURCES)),
            created_at=decode_time(data["created_at"]),
            tokens=_count(data["tokens"]),
            reply_to=_text(data["reply_to"]),
        )
    except _DECODING_ERRORS as exc:
        raise InvalidEventError(f"an event cannot be read: {_why(exc)}") from exc
    if not event.id or not event.user_id:
        raise InvalidEventError("an event needs a user id and an id")
    return event


def checked_event(event: MemoryEvent) -> MemoryEvent:
    """`event` as a store keeps it (time in UTC), after the checks of `event_from_dict`."""
    return event_from_dict(event_to_dict(event, encode_time=utc), decode_time=utc)


def checked_profile(profile: UserProfile) -> UserProfile:
    """`profile` as a store keeps it (times in UTC), after the checks of `profile_from_dict`."""
    return profile_from_dict(profile_to_dict(profile, encode_time=utc), decode_time=utc)


def _why(exc: BaseException) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _topics(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError("preferred_topics must be a list")
    return tuple(_text(topic) for topic in value)


def _member(value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {allowed}")
    return str(value)


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"a token count must be 0..2**63-1, got {value}")
    return value
