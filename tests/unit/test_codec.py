"""The one profile and event codec: stable field names, ISO times in UTC, the domain's checks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from engine.codec import (
    checked_event,
    checked_profile,
    event_from_dict,
    event_to_dict,
    profile_from_dict,
    profile_to_dict,
)
from engine.domain import InvalidEventError, InvalidProfileError, MemoryEvent, UserProfile

MOSCOW = timezone(timedelta(hours=3))
T0 = datetime(2025, 3, 1, 12, 30, 0, 5, tzinfo=MOSCOW)
PROFILE = replace(
    UserProfile.new("u1", T0, "en").with_summary("likes tea", "00ff", T0 + timedelta(days=1)),
    preferred_topics=("tea", "шахматы ♟️"),
)
EVENT = MemoryEvent("0001", "u1", "assistant", "Certainly, sir.", "voice", T0, 4, "0000")


def test_a_profile_becomes_json_ready_fields_with_utc_iso_times():
    data = profile_to_dict(PROFILE)
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "user_id": "u1",
        "language": "en",
        "persona": PROFILE.persona,
        "tone": "witty",
        "preferred_topics": ["tea", "шахматы ♟️"],
        "memory_summary": "likes tea",
        "created_at": "2025-03-01T09:30:00.000005+00:00",
        "updated_at": "2025-03-02T09:30:00.000005+00:00",
        "summary_through": "00ff",
        "summary_updated_at": "2025-03-02T09:30:00.000005+00:00",
    }


def test_profiles_and_events_round_trip():
    back = profile_from_dict(profile_to_dict(PROFILE))
    assert back == PROFILE
    assert back.created_at.tzinfo == UTC
    fresh = UserProfile.new("u2", T0)
    assert profile_from_dict(profile_to_dict(fresh)).summary_updated_at is None
    assert event_from_dict(event_to_dict(EVENT)) == EVENT


def test_a_caller_may_bring_its_own_time_codec():
    micros = profile_to_dict(PROFILE, encode_time=lambda t: int(t.timestamp() * 1e6))
    assert micros["created_at"] == 1740821400000005
    back = profile_from_dict(
        micros, decode_time=lambda us: datetime.fromtimestamp(us / 1e6, UTC).replace(microsecond=5)
    )
    assert back.created_at == PROFILE.created_at


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"language": "klingon"}, "language must be one of"),
        ({"tone": 3}, "tone must be a string"),
        ({"preferred_topics": "tea"}, "preferred_topics must be a list"),
        ({"preferred_topics": [""]}, "topics of 1.."),
        ({"created_at": "2025-03-01T09:30:00"}, "created_at: .* has no UTC offset"),
        ({"updated_at": 17}, "updated_at: times must be ISO 8601"),
        ({"user_id": ""}, "user_id must not be empty"),
    ],
)
def test_a_bad_profile_field_is_named(change: dict[str, Any], problem: str):
    with pytest.raises(InvalidProfileError, match=problem):
        profile_from_dict(profile_to_dict(PROFILE) | change)


def test_a_missing_profile_field_is_named():
    data = profile_to_dict(PROFILE)
    del data["summary_through"]
    with pytest.raises(InvalidProfileError, match="summary_through is missing"):
        profile_from_dict(data)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"role": "system"}, "role must be one of"),
        ({"source": "video"}, "source must be one of"),
        ({"tokens": -1}, "tokens must be an integer"),
        ({"tokens": 2**63}, "tokens must be an integer"),
        ({"tokens": True}, "tokens must be an integer"),
        ({"content": None}, "content must be a string"),
        ({"id": ""}, "needs a user id and an id"),
    ],
)
def test_a_bad_event_field_is_named(change: dict[str, Any], problem: str):
    with pytest.raises(InvalidEventError, match=problem):
        event_from_dict(event_to_dict(EVENT) | change)


def test_checked_copies_are_in_utc_and_refuse_what_stores_refuse():
    assert checked_profile(PROFILE).updated_at.utcoffset() == timedelta(0)
    assert checked_event(EVENT) == EVENT
    assert checked_event(EVENT).created_at.tzinfo == UTC
    with pytest.raises(InvalidEventError, match=r"created_at: .* has no UTC offset"):
        checked_event(replace(EVENT, created_at=T0.replace(tzinfo=None)))
    with pytest.raises(InvalidEventError, match="tokens"):
        checked_event(replace(EVENT, tokens=-5))
