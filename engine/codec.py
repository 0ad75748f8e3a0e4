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


def utc(moment: object) -> datetime:
    """`moment` in UTC; the time codec of in-memory copies.

    Raises:
        TypeError: `moment` is not a datetime.
        ValueError: the datetime is naive (a store cannot know which instant it means).
    """
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    if moment.utcoffset() is None:
        raise ValueError(f"the time {moment.isoformat()} has no UTC offset")
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
        InvalidProfileError: a field is missing, of the wrong type or outside its values; the
            message starts with the field's name.
    """
    try:
        updated = _field(data, "summary_updated_at")
        return UserProfile(
            user_id=_text(data, "user_id"),
            language=cast(Language, _text(data, "language")),
            persona=_text(data, "persona"),
            tone=cast(Tone, _text(data, "tone")),
            preferred_topics=_topics(data, "preferred_topics"),
            memory_summary=_text(data, "memory_summary"),
            created_at=_time(data, "created_at", decode_time),
            updated_at=_time(data, "updated_at", decode_time),
            summary_through=_text(data, "summary_through"),
            summary_updated_at=None
            if updated is None
            else _time(data, "summary_updated_at", decode_time),
        )
    except _FieldError as exc:
        raise InvalidProfileError(str(exc)) from exc


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
        "origin": event.origin,
    }


def event_from_dict(
    data: Mapping[str, Any], *, decode_time: DecodeTime = parse_iso_time
) -> MemoryEvent:
    """The event `event_to_dict` made `data` from, checked as every store checks events.

    Raises:
        InvalidEventError: a field is missing, of the wrong type or outside its values; the
            message starts with the field's name.
    """
    try:
        event = MemoryEvent(
            id=_text(data, "id"),
            user_id=_text(data, "user_id"),
            role=cast(Role, _member(data, "role", _ROLES)),
            content=_text(data, "content"),
            source=cast(Source, _member(data, "source", _SOURCES)),
            created_at=_time(data, "created_at", decode_time),
            tokens=_count(data, "tokens"),
            reply_to=_text(data, "reply_to"),
            # Absent in records written before idempotent intake (schema 2, old dumps).
            origin=_text(data, "origin") if "origin" in data else "",
        )
    except _FieldError as exc:
        raise InvalidEventError(str(exc)) from exc
    if not event.id or not event.user_id:
        raise InvalidEventError("an event needs a user id and an id")
    return event


def checked_event(event: MemoryEvent) -> MemoryEvent:
    """`event` as a store keeps it (time in UTC), after the checks of `event_from_dict`.

    Raises:
        InvalidEventError: as `event_from_dict` does.
    """
    return event_from_dict(event_to_dict(event, encode_time=_same), decode_time=utc)


def checked_profile(profile: UserProfile) -> UserProfile:
    """`profile` as a store keeps it (times in UTC), after the checks of `profile_from_dict`.

    Raises:
        InvalidProfileError: as `profile_from_dict` does.
    """
    return profile_from_dict(profile_to_dict(profile, encode_time=_same), decode_time=utc)


def _same(moment: datetime) -> datetime:
    return moment


class _FieldError(ValueError):
    """One field that cannot be decoded; the message starts with its name."""


def _field(data: Mapping[str, Any], key: str) -> object:
    if key not in data:
        raise _FieldError(f"{key} is missing")
    return data[key]


def _text(data: Mapping[str, Any], key: str) -> str:
    value = _field(data, key)
    if not isinstance(value, str):
        raise _FieldError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _topics(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = _field(data, key)
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise _FieldError(f"{key} must be a list of strings")
    return tuple(value)


def _member(data: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = _field(data, key)
    if value not in allowed:
        raise _FieldError(f"{key} must be one of {allowed}, not {value!r}")
    return str(value)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = _field(data, key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT64_MAX:
        raise _FieldError(f"{key} must be an integer in 0..2**63-1, not {value!r}")
    return value


def _time(data: Mapping[str, Any], key: str, decode: DecodeTime) -> datetime:
    try:
        return decode(_field(data, key))
    except _FieldError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise _FieldError(f"{key}: {exc}") from exc
