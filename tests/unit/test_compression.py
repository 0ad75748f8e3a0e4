"""Compression policy: which events to fold, which summaries to refuse, when to retry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from adapters.bootstrap.wiring import Templates
from engine.compression import (
    Backoff,
    CompressionPolicy,
    known_facts,
    mentions,
    reject_reason,
    script_share,
    select,
    summary_request,
)
from engine.domain import EventIds, Language, MemoryEvent, Role, UserProfile
from engine.tokens import CalibratedEstimator

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
COUNTER = CalibratedEstimator()
SUMMARIZE = Templates.load().summarize


def make_events(n: int) -> list[MemoryEvent]:
    ids = EventIds()
    out = []
    for i in range(n):
        key, stamp = ids.next(NOW)
        role: Role = "user" if i % 2 == 0 else "assistant"
        out.append(MemoryEvent(key, "7", role, f"line {i}", "text", stamp, tokens=3))
    return out


def profile(language: Language = "ru", summary: str = "", through: str = "") -> UserProfile:
    p = UserProfile.new("7", NOW, language=language)
    return replace(p, memory_summary=summary, summary_through=through)


def ids(events: Sequence[MemoryEvent]) -> list[str]:
    return [e.id for e in events]


class TestSelect:
    def test_without_summary_everything_is_fresh(self) -> None:
        events = make_events(5)
        s = select(events, profile())
        assert s.covered == ()
        assert ids(s.to_summarise) == ids(events)

    def test_events_up_to_summary_through_are_covered(self) -> None:
        events = make_events(6)
        s = select(events, profile(summary="old", through=events[2].id))
        assert list(s.covered) == ids(events[:3])  # inclusive
        assert ids(s.to_summarise) == ids(events[3:])

    def test_everything_covered(self) -> None:
        events = make_events(4)
        s = select(events, profile(summary="old", through=events[-1].id))
        assert list(s.covered) == ids(events)
        assert s.to_summarise == ()

    def test_stop_before_keeps_the_pending_message_and_everything_after(self) -> None:
        events = make_events(6)
        s = select(events, profile(), stop_before=events[3].id)
        assert s.covered == ()
        assert ids(s.to_summarise) == ids(events[:3])

    def test_stop_before_and_summary_through_together(self) -> None:
        events = make_events(8)
        p = profile(summary="old", through=events[1].id)
        s = select(events, p, stop_before=events[5].id)
        assert list(s.covered) == ids(events[:2])
        assert ids(s.to_summarise) == ids(events[2:5])

    def test_stop_before_the_first_event_selects_nothing(self) -> None:
        events = make_events(3)
        s = select(events, profile(summary="old", through=events[-1].id), stop_before=events[0].id)
        assert (s.covered, s.to_summarise) == ((), ())

    def test_no_candidates(self) -> None:
        s = select([], profile())
        assert (s.covered, s.to_summarise) == ((), ())


class TestRejectReason:
    def test_empty(self) -> None:
        assert reject_reason("", "ru", COUNTER, 300) == "empty"
        assert reject_reason("  \n ", "en", COUNTER, 300) == "empty"

    def test_over_budget(self) -> None:
        text = "Хозяин любит чай. " * 100
        assert COUNTER.count(text) > 300
        assert reject_reason(text, "ru", COUNTER, 300) == "over_budget"

    def test_exactly_at_budget_is_ok(self) -> None:
        text = "Хозяин любит чай."
        assert reject_reason(text, "ru", COUNTER, COUNTER.count(text)) is None

    def test_russian_summary_in_english_is_wrong_language(self) -> None:
        text = "The master likes tea and chess."
        assert reject_reason(text, "ru", COUNTER, 300) == "wrong_language"

    def test_english_summary_in_cyrillic_is_wrong_language(self) -> None:
        text = "Хозяин любит чай и шахматы."
        assert reject_reason(text, "en", COUNTER, 300) == "wrong_language"

    def test_mostly_english_with_some_cyrillic_is_wrong_for_english(self) -> None:
        text = "The master likes tea, чай и шахматы"  # over a fifth of the letters Cyrillic
        assert reject_reason(text, "en", COUNTER, 300) == "wrong_language"

    def test_no_letters_is_wrong_language(self) -> None:
        assert reject_reason("12345 !!!", "ru", COUNTER, 300) == "wrong_language"
        assert reject_reason("12345 !!!", "en", COUNTER, 300) == "wrong_language"

    @pytest.mark.parametrize(
        ("text", "language"),
        [
            ("Хозяин любит чай, шахматы и книги про Python.", "ru"),
            ("The master likes tea and chess; his sister is Анна.", "en"),
        ],
    )
    def test_ok(self, text: str, language: Language) -> None:
        assert reject_reason(text, language, COUNTER, 300) is None


class TestKnownFacts:
    def test_names_and_mentioned_topics_of_the_previous_summary(self) -> None:
        p = replace(
            profile(summary="Сводка: хозяин живёт в Москве с сестрой Анной. Любит шахматы."),
            preferred_topics=("шахматы", "джаз"),
        )
        # "Сводка" and "Любит" open sentences; "джаз" is a topic the summary never named.
        assert known_facts(p) == ("шахматы", "Москве", "Анной")

    def test_no_previous_summary_means_no_facts(self) -> None:
        p = replace(profile(), preferred_topics=("чай",))
        assert known_facts(p) == ()

    @pytest.mark.parametrize(
        ("text", "fact", "expected"),
        [
            ("Хозяин был в Москве", "Москва", True),  # case ending
            ("Хозяин говорил с Анной", "Анна", True),
            ("Bob likes jazz", "bob", True),
            ("Хозяин любит чай", "Анна", False),
            ("The master plays chess online", "online chess", True),
            ("The master plays chess", "online chess", False),
        ],
    )
    def test_mentions(self, text: str, fact: str, expected: bool) -> None:
        assert mentions(text, fact) is expected


class TestLostFacts:
    def test_a_summary_that_drops_a_name_is_rejected(self) -> None:
        facts = known_facts(profile(summary="Сводка: сестра хозяина — Анна, живёт в Туле."))
        assert facts == ("Анна", "Туле")
        kept = "Хозяин обсуждал поездку к Анне в Тулу."
        lost = "Хозяин обсуждал поездку к сестре."
        assert reject_reason(kept, "ru", COUNTER, 300, facts=facts) is None
        assert reject_reason(lost, "ru", COUNTER, 300, facts=facts) == "lost_facts"

    def test_language_is_judged_before_facts(self) -> None:
        text = "The master visited Anna."
        assert reject_reason(text, "ru", COUNTER, 300, facts=("Анна",)) == "wrong_language"


def test_script_share() -> None:
    assert script_share("абв abc") == (0.5, 0.5)
    assert script_share("123 !") == (0.0, 0.0)
    cyr, lat = script_share("äöü")  # letters of neither script
    assert (cyr, lat) == (0.0, 0.0)


class TestSummaryRequest:
    def test_renders_previous_summary_and_events(self) -> None:
        events = make_events(3)
        policy = CompressionPolicy(summary_budget=200)
        request = summary_request(SUMMARIZE, profile("ru", summary="Любит чай."), events, policy)
        assert request.purpose == "summary"
        assert request.max_tokens == 200
        system, user = request.messages
        assert system.role == "system"
        assert "Любит чай." in system.content
        assert "не длиннее 50 слов" in system.content  # a quarter of the budget in words
        assert user.role == "user"
        assert user.content == "user: line 0\nassistant: line 1\nuser: line 2"

    def test_no_previous_summary_renders_a_dash(self) -> None:
        request = summary_request(SUMMARIZE, profile("en"), make_events(1), CompressionPolicy())
        assert "Previous summary: -" in request.messages[0].content
        assert "in English" in request.messages[0].content
        assert request.max_tokens == CompressionPolicy().summary_budget

    def test_low_temperature(self) -> None:
        request = summary_request(SUMMARIZE, profile(), make_events(1), CompressionPolicy())
        assert request.temperature < 0.7


class TestPolicy:
    def test_defaults(self) -> None:
        p = CompressionPolicy()
        assert (p.threshold, p.keep_last, p.summary_budget) == (50, 20, 300)

    @pytest.mark.parametrize(("count", "due"), [(0, False), (50, False), (51, True), (500, True)])
    def test_due_past_the_threshold(self, count: int, due: bool) -> None:
        assert CompressionPolicy().due(count) is due


class TestBackoff:
    def test_fresh_backoff_is_ready(self) -> None:
        assert Backoff(60, 3600).ready(0.0)

    def test_delays_double_up_to_the_cap(self) -> None:
        b = Backoff(base_s=60, max_s=300)
        delays = []
        for _ in range(6):
            b.failed(1000.0)
            delays.append(b.not_before - 1000.0)
        assert delays == [60, 120, 240, 300, 300, 300]
        assert b.failures == 6

    def test_ready_only_after_the_delay(self) -> None:
        b = Backoff(base_s=10, max_s=100)
        b.failed(50.0)
        assert not b.ready(59.9)
        assert b.ready(60.0)

    def test_success_resets(self) -> None:
        b = Backoff(base_s=10, max_s=100)
        b.failed(0.0)
        b.failed(0.0)
        b.succeeded()
        assert b.failures == 0
        assert b.ready(0.0)
        b.failed(0.0)
        assert b.not_before == 10.0
