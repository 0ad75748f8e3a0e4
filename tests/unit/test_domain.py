"""Profiles validate their fields; event ids sort by time and never repeat."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain import (
    DEFAULT_PERSONA,
    MAX_PERSONA_CHARS,
    MAX_TOPIC_CHARS,
    MAX_TOPICS,
    EventIds,
    InvalidProfileError,
    UserProfile,
)

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def profile(**changes: Any) -> UserProfile:
    fields: dict[str, Any] = {
        "user_id": "42",
        "language": "ru",
        "persona": DEFAULT_PERSONA,
        "tone": "witty",
        "preferred_topics": (),
        "memory_summary": "",
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(changes)
    return UserProfile(**fields)


def test_new_profile_has_the_butler_defaults() -> None:
    p = UserProfile.new("42", NOW)
    assert p.persona == "Alfred-style дворецкий"
    assert p.language == "ru"
    assert p.tone == "witty"
    assert p.preferred_topics == ()
    assert p.memory_summary == ""
    assert p.summary_through == ""
    assert p.summary_updated_at is None
    assert p.created_at == p.updated_at == NOW


def test_new_profile_takes_a_language() -> None:
    assert UserProfile.new("42", NOW, language="en").language == "en"


@pytest.mark.parametrize("language", ["ru", "en"])
@pytest.mark.parametrize("tone", ["witty", "formal", "casual"])
def test_valid_languages_and_tones_are_accepted(language: str, tone: str) -> None:
    p = profile(language=language, tone=tone)
    assert (p.language, p.tone) == (language, tone)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"user_id": ""}, id="empty-user-id"),
        pytest.param({"language": "de"}, id="language-de"),
        pytest.param({"language": "RU"}, id="language-upper"),
        pytest.param({"language": ""}, id="language-empty"),
        pytest.param({"tone": "rude"}, id="tone"),
        pytest.param({"persona": ""}, id="persona-empty"),
        pytest.param({"persona": "   \n"}, id="persona-blank"),
        pytest.param({"persona": "x" * (MAX_PERSONA_CHARS + 1)}, id="persona-too-long"),
        pytest.param({"preferred_topics": ("chess",) * (MAX_TOPICS + 1)}, id="too-many-topics"),
        pytest.param({"preferred_topics": ("chess", "")}, id="empty-topic"),
        pytest.param({"preferred_topics": (" ",)}, id="blank-topic"),
        pytest.param({"preferred_topics": ("t" * (MAX_TOPIC_CHARS + 1),)}, id="long-topic"),
    ],
)
def test_invalid_fields_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidProfileError):
        profile(**changes)


def test_invalid_profile_error_is_a_value_error() -> None:
    assert issubclass(InvalidProfileError, ValueError)


def test_limits_themselves_are_allowed() -> None:
    p = profile(
        persona="x" * MAX_PERSONA_CHARS,
        preferred_topics=tuple("t" * MAX_TOPIC_CHARS for _ in range(MAX_TOPICS)),
    )
    assert len(p.persona) == MAX_PERSONA_CHARS
    assert len(p.preferred_topics) == MAX_TOPICS


def test_with_summary_sets_summary_fields_and_keeps_the_rest() -> None:
    p = profile(preferred_topics=("chess",), language="en")
    later = NOW + timedelta(hours=1)
    q = p.with_summary("Likes chess.", "00abc", later)
    assert q.memory_summary == "Likes chess."
    assert q.summary_through == "00abc"
    assert q.summary_updated_at == later
    assert q.updated_at == later
    assert q.created_at == NOW
    assert (q.user_id, q.language, q.persona, q.tone, q.preferred_topics) == (
        p.user_id,
        p.language,
        p.persona,
        p.tone,
        p.preferred_topics,
    )
    assert p.memory_summary == ""  # the original is untouched


def _micros(stamp: datetime) -> int:
    return (stamp - EPOCH) // timedelta(microseconds=1)


def test_ids_increase_when_the_clock_stands_still() -> None:
    ids = EventIds()
    made = [ids.next(NOW) for _ in range(5)]
    keys = [k for k, _ in made]
    assert keys == sorted(keys)
    assert len(set(keys)) == 5
    stamps = [s for _, s in made]
    assert stamps[0] == NOW
    assert [_micros(s) - _micros(NOW) for s in stamps] == [0, 1, 2, 3, 4]


def test_ids_increase_when_the_clock_goes_backwards() -> None:
    ids = EventIds()
    first, t1 = ids.next(NOW)
    second, t2 = ids.next(NOW - timedelta(hours=1))
    assert second > first
    assert t2 > t1


def test_id_layout_is_sixteen_hex_micros_and_eight_random_hex() -> None:
    key, stamp = EventIds().next(NOW)
    assert len(key) == 24
    int(key, 16)  # all hex
    assert key == key.lower()
    assert int(key[:16], 16) == _micros(NOW)
    assert stamp == NOW


times = st.datetimes(
    # Hypothesis takes naive bounds and attaches the zone itself.
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(st.lists(times, min_size=1, max_size=50))
def test_ids_are_strictly_increasing_and_encode_their_timestamps(clock: list[datetime]) -> None:
    ids = EventIds()
    made = [ids.next(now) for now in clock]
    keys = [k for k, _ in made]
    stamps = [s for _, s in made]
    assert all(a < b for a, b in itertools.pairwise(keys))
    assert all(a < b for a, b in itertools.pairwise(stamps))
    for (key, stamp), now in zip(made, clock, strict=True):
        assert int(key[:16], 16) == _micros(stamp)
        assert stamp >= now  # never earlier than the clock said
        assert stamp.tzinfo is not None


@given(st.lists(times, min_size=2, max_size=30, unique=True))
def test_ids_sort_like_timestamps(clock: list[datetime]) -> None:
    # Separate generators (two processes) for each time: order follows the time alone.
    made = [EventIds().next(now) for now in clock]
    by_id = sorted(made, key=lambda pair: pair[0])
    by_time = sorted(made, key=lambda pair: pair[1])
    assert by_id == by_time
