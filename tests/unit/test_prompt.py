"""Prompt assembly: persona in the user's language, budgets honoured, the message never cut."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bootstrap.wiring import Templates
from engine.domain import EventIds, Language, MemoryEvent, Role, UserProfile
from engine.errors import MessageTooLong
from engine.ports import ChatMessage
from engine.prompt import (
    MESSAGE_OVERHEAD_TOKENS,
    PLAIN_SYSTEM,
    Budget,
    Prompt,
    PromptBuilder,
    fit_text,
    parse_template,
)
from engine.tokens import CalibratedEstimator

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
COUNTER = CalibratedEstimator()
TEMPLATES = Templates.load()
CYRILLIC = re.compile("[\u0400-\u04ff]")


def builder(budget: Budget | None = None) -> PromptBuilder:
    return PromptBuilder(TEMPLATES.persona, TEMPLATES.memory_summary, COUNTER, budget or Budget())


def profile(
    language: Language = "ru", summary: str = "", topics: tuple[str, ...] = ()
) -> UserProfile:
    p = replace(UserProfile.new("7", NOW, language=language), preferred_topics=topics)
    return p.with_summary(summary, "", NOW) if summary else p


def make_events(contents: Sequence[str]) -> list[MemoryEvent]:
    ids = EventIds()
    events = []
    for i, content in enumerate(contents):
        key, stamp = ids.next(NOW)
        role: Role = "user" if i % 2 == 0 else "assistant"
        events.append(
            MemoryEvent(key, "7", role, content, "text", stamp, tokens=COUNTER.count(content))
        )
    return events


def build(b: PromptBuilder, p: UserProfile, events: Sequence[MemoryEvent], message: str) -> Prompt:
    return b.build(p, events, message, COUNTER.count(message))


class TestPersona:
    def test_russian_profile_gets_the_russian_persona(self) -> None:
        section = builder().persona_section(profile("ru"))
        assert CYRILLIC.search(section.replace("дворецкий", "")) is not None
        assert "по-русски" in section
        assert "Alfred-style дворецкий" in section

    def test_english_profile_gets_the_english_persona(self) -> None:
        section = builder().persona_section(profile("en"))
        assert "Answer in English" in section
        # The only Cyrillic is the user's persona value itself.
        assert CYRILLIC.search(section.replace("Alfred-style дворецкий", "")) is None

    def test_topics_are_rendered(self) -> None:
        p = profile("en", topics=("chess", "tea"))
        assert "chess, tea" in builder().persona_section(p)

    def test_no_topics_render_a_dash(self) -> None:
        assert "Topics the user enjoys: -." in builder().persona_section(profile("en"))

    def test_tone_is_rendered(self) -> None:
        assert "Tone: witty." in builder().persona_section(profile("en"))

    def test_persona_section_is_cut_to_its_budget(self) -> None:
        b = builder(Budget(persona=20))
        assert COUNTER.count(b.persona_section(profile("ru"))) <= 20

    def test_system_message_is_the_persona(self) -> None:
        prompt = build(builder(), profile("en"), [], "Hello")
        assert prompt.messages[0].role == "system"
        assert prompt.messages[0].content == builder().persona_section(profile("en"))


class TestBuild:
    def test_messages_are_system_events_then_the_message(self) -> None:
        events = make_events(["Привет", "Добрый день, сэр", "Как дела?", "Превосходно"])
        prompt = build(builder(), profile(), events, "Что на ужин?")
        assert [m.role for m in prompt.messages] == [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
        ]
        assert [m.content for m in prompt.messages[1:-1]] == [e.content for e in events]
        assert prompt.messages[-1] == ChatMessage("user", "Что на ужин?")
        assert (prompt.events_used, prompt.events_dropped) == (4, 0)
        assert not prompt.summary_truncated

    def test_template_version_is_recorded(self) -> None:
        prompt = build(builder(), profile(), [], "Привет")
        assert prompt.template_version == TEMPLATES.persona.version
        assert prompt.template_version.startswith("persona-")

    def test_request_is_a_reply(self) -> None:
        request = build(builder(), profile(), [], "Привет").request(123)
        assert request.purpose == "reply"
        assert request.max_tokens == 123
        assert request.messages[-1].content == "Привет"

    def test_section_tokens(self) -> None:
        events = make_events(["one", "two"])
        p = profile("en", summary="Likes tea.")
        prompt = build(builder(), p, events, "Hello there")
        t = prompt.tokens
        persona = builder().persona_section(p)
        assert t.persona == COUNTER.count(persona) + MESSAGE_OVERHEAD_TOKENS
        assert t.memory == sum(e.tokens + MESSAGE_OVERHEAD_TOKENS for e in events)
        assert t.message == COUNTER.count("Hello there") + MESSAGE_OVERHEAD_TOKENS
        summary = TEMPLATES.memory_summary.render("en", summary="Likes tea.")
        assert t.summary == COUNTER.count(summary) + MESSAGE_OVERHEAD_TOKENS
        assert t.total == t.persona + t.summary + t.memory + t.message

    def test_summary_goes_into_the_system_message_in_the_profiles_language(self) -> None:
        prompt = build(builder(), profile("ru", summary="Любит чай."), [], "Привет")
        system = prompt.messages[0].content
        assert system.endswith("Любит чай.")
        assert "Что вы помните" in system
        prompt = build(builder(), profile("en", summary="Likes tea."), [], "Hi")
        assert "What you remember of the user" in prompt.messages[0].content

    def test_no_summary_no_summary_tokens(self) -> None:
        prompt = build(builder(), profile(), [], "Привет")
        assert prompt.tokens.summary == 0
        assert len(prompt.messages) == 2

    def test_oldest_events_are_dropped_first(self) -> None:
        events = make_events([f"message number {i} " * 5 for i in range(40)])
        b = builder(Budget(memory=200))
        prompt = build(b, profile("en"), events, "Hi")
        assert 0 < prompt.events_used < len(events)
        kept = [m.content for m in prompt.messages[1:-1]]
        assert kept == [e.content for e in events[-prompt.events_used :]]
        assert prompt.events_dropped == len(events) - prompt.events_used
        assert prompt.tokens.memory <= 200

    def test_an_event_too_big_stops_older_ones_from_being_kept(self) -> None:
        # Contiguity: an older small event is not kept behind a dropped big one.
        events = make_events(["small", "x" * 2000, "question", "recent"])
        prompt = build(builder(Budget(memory=100)), profile("en"), events, "Hi")
        assert [m.content for m in prompt.messages[1:-1]] == ["question", "recent"]

    def test_roles_alternate_when_messages_of_one_role_follow_each_other(self) -> None:
        # Two messages left unanswered (or folded into one turn) before the new one.
        events = make_events(["Добрый вечер", "Чем могу служить?", "Первое", "ответ"])
        unanswered = replace(events[2], id=events[2].id + "0", content="Второе")
        history = [*events[:3], unanswered]
        prompt = build(builder(), profile("ru"), history, "Третье")
        roles = [m.role for m in prompt.messages]
        assert roles == ["system", "user", "assistant", "user"]
        assert prompt.messages[-1].content == "Первое\nВторое\nТретье"

    def test_a_reply_whose_message_was_dropped_is_dropped_too(self) -> None:
        events = make_events(["x" * 400, "ответ на длинное", "вопрос", "ответ"])
        prompt = build(builder(Budget(memory=60)), profile("ru"), events[1:], "Ещё")
        assert [m.role for m in prompt.messages] == ["system", "user", "assistant", "user"]
        assert prompt.messages[1].content == "вопрос"
        assert prompt.events_used == 2
        assert prompt.events_dropped == 1

    def test_summary_is_cut_only_after_every_event_is_gone(self) -> None:
        summary = "Хозяин любит чай и шахматы. " * 8
        events = make_events(["Привет, как дела?"] * 10)
        p = profile("ru", summary=summary)
        message = "я" * 2 * (2000 - 220 - 60)  # leaves little room beside the persona
        prompt = build(builder(), p, events, message)
        assert prompt.events_used == 0
        assert prompt.summary_truncated
        assert prompt.tokens.total <= 2000
        assert prompt.messages[-1].content == message

    def test_a_message_too_long_for_the_budget_raises(self) -> None:
        b = builder()
        p = profile()
        persona_tokens = COUNTER.count(b.persona_section(p)) + MESSAGE_OVERHEAD_TOKENS
        limit = Budget().total - persona_tokens - MESSAGE_OVERHEAD_TOKENS
        b.build(p, [], "x", limit)  # exactly at the limit fits
        with pytest.raises(MessageTooLong) as caught:
            b.build(p, [], "x", limit + 1)
        assert caught.value.tokens == limit + 1
        assert caught.value.budget == limit

    def test_message_section_budget_does_not_cut_the_message(self) -> None:
        message = "Очень длинное сообщение. " * 40  # more than the persona section gets
        prompt = build(builder(), profile(), [], message)
        assert prompt.messages[-1].content == message


class TestBriefAndPlain:
    """Near the token budget the prompt is the summary plus the last 5 events (seed 003);
    without personalization it is a plain system line and the message."""

    def test_a_brief_prompt_keeps_the_summary_and_the_last_five_events(self) -> None:
        events = make_events([f"реплика {i}" for i in range(11)])  # the 5th newest: a message
        p = profile("ru", summary="Хозяин любит чай.")
        full = build(builder(), p, events, "Что нового?")
        brief = builder().build(p, events, "Что нового?", COUNTER.count("Что нового?"),
                                events_limit=5)  # fmt: skip
        assert full.events_used == 11
        # The newest event is a message left unanswered: it joins the new one (roles alternate).
        assert [m.content for m in brief.messages[1:-1]] == [e.content for e in events[-5:-1]]
        assert brief.messages[-1] == ChatMessage("user", "реплика 10\nЧто нового?")
        assert brief.messages[0].content == full.messages[0].content  # persona and summary
        assert "Хозяин любит чай." in brief.messages[0].content
        assert (brief.events_used, brief.events_dropped) == (5, 6)

    def test_a_brief_prompt_of_a_short_history_keeps_it_all(self) -> None:
        events = make_events(["one", "two", "three"])
        brief = builder().build(profile("en"), events, "Hi", COUNTER.count("Hi"), events_limit=5)
        assert (brief.events_used, brief.events_dropped) == (3, 0)

    def test_a_brief_prompt_starts_with_a_message_not_a_reply(self) -> None:
        events = make_events([f"e{i}" for i in range(8)])  # user, assistant, ... assistant
        brief = builder().build(profile("en"), events, "Hi", 1, events_limit=5)
        assert brief.messages[1].role == "user"
        assert brief.events_used == 4  # the reply whose message fell outside went too

    def test_a_plain_prompt_has_no_persona_summary_or_history(self) -> None:
        prompt = builder().plain("Что на ужин?", COUNTER.count("Что на ужин?"))
        assert prompt.messages == (
            ChatMessage("system", PLAIN_SYSTEM),
            ChatMessage("user", "Что на ужин?"),
        )
        assert "дворецкий" not in prompt.messages[0].content
        assert prompt.template_version == "plain"
        assert prompt.tokens.total <= Budget().total

    def test_a_plain_prompt_still_refuses_a_message_too_long(self) -> None:
        with pytest.raises(MessageTooLong):
            builder().plain("x", Budget().total)


words = st.text(
    alphabet=st.sampled_from("".join(map(chr, range(0x0430, 0x0450))) + "abcdefxyz ,.!?0123456789"),
    max_size=300,
)
any_text = st.text(max_size=200)
budgets = st.builds(
    Budget,
    persona=st.integers(30, 300),
    memory=st.integers(0, 1000),
    summary=st.integers(0, 400),
    total=st.integers(150, 2500),
)


@settings(max_examples=300, deadline=None)
@given(
    budget=budgets,
    contents=st.lists(any_text, max_size=30),
    summary=any_text,
    message=st.text(min_size=1, max_size=3000),
    language=st.sampled_from(["ru", "en"]),
)
def test_prompts_fit_the_total_budget(
    budget: Budget, contents: list[str], summary: str, message: str, language: Language
) -> None:
    b = builder(budget)
    p = profile(language, summary=summary if summary.strip() else "")
    events = make_events(contents)
    persona = COUNTER.count(b.persona_section(p)) + MESSAGE_OVERHEAD_TOKENS
    limit = budget.total - persona - MESSAGE_OVERHEAD_TOKENS
    if COUNTER.count(message) > limit:
        with pytest.raises(MessageTooLong) as caught:
            build(b, p, events, message)
        assert (caught.value.tokens, caught.value.budget) == (COUNTER.count(message), limit)
        return
    prompt = build(b, p, events, message)
    t = prompt.tokens
    assert t.total == t.persona + t.summary + t.memory + t.message
    assert t.total <= budget.total
    assert t.memory <= budget.memory
    chat = prompt.messages[1:]
    assert [m.role for m in chat] == ["user", "assistant"] * (len(chat) // 2) + ["user"]
    assert chat[-1].content.endswith(message)  # the message is never cut
    assert prompt.events_used + prompt.events_dropped == len(events)
    tail = events[len(events) - prompt.events_used :] if prompt.events_used else []
    assert not tail or tail[0].role == "user"
    # Nothing kept is lost or reordered by joining a role's run into one message.
    parts = [*(e.content for e in tail), message]
    assert _lines(m.content for m in chat) == _lines(parts)
    assert t.memory == sum(e.tokens + MESSAGE_OVERHEAD_TOKENS for e in tail)


def _lines(contents: Iterable[str]) -> str:
    return "\n".join(part for part in contents if part)


@settings(max_examples=300, deadline=None)
@given(
    budget=budgets,
    contents=st.lists(words, min_size=1, max_size=20),
    summary=words.filter(str.strip),
    message=words.filter(str.strip),
)
def test_events_never_take_room_from_the_summary(
    budget: Budget, contents: list[str], summary: str, message: str
) -> None:
    # The summary claims its room first: events only get what it leaves, so the summary (and
    # whether it was cut) is the same with or without them.
    b = builder(budget)
    p = profile("ru", summary=summary)
    try:
        with_events = build(b, p, make_events(contents), message)
    except MessageTooLong:
        return
    without = build(b, p, [], message)
    assert with_events.messages[0] == without.messages[0]
    assert with_events.tokens.summary == without.tokens.summary
    assert with_events.summary_truncated == without.summary_truncated
    # A summary within its own budget is cut only when the total leaves it no room (give or
    # take the one token of rounding from counting the template and the summary apart).
    fits_alone = COUNTER.count(summary) <= budget.summary - MESSAGE_OVERHEAD_TOKENS
    if with_events.summary_truncated and fits_alone:
        t = with_events.tokens
        whole = COUNTER.count(TEMPLATES.memory_summary.render("ru", summary=summary))
        assert whole + MESSAGE_OVERHEAD_TOKENS + 1 > budget.total - t.persona - t.message


class TestParseTemplate:
    def test_parses_version_and_sections(self) -> None:
        text = "\n".join(
            ["version: v1.2", "## ru", "", "Привет, {name}", "", "## en", "Hello, {name}"]
        )
        t = parse_template(text)
        assert t.version == "v1.2"
        assert t.bodies == {"ru": "Привет, {name}", "en": "Hello, {name}"}
        assert t.render("en", name="sir") == "Hello, sir"

    def test_lines_before_the_first_section_are_ignored(self) -> None:
        t = parse_template("version: 3\nstray\n## en\nbody")
        assert t.bodies == {"en": "body"}

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("", id="empty"),
            pytest.param("## en\nHello", id="no-version"),
            pytest.param("title\nversion: 1\n## en\nHello", id="version-not-first"),
            pytest.param("version:   \n## en\nHello", id="blank-version"),
            pytest.param("version: 1\nHello", id="no-section"),
        ],
    )
    def test_malformed_templates_raise(self, text: str) -> None:
        with pytest.raises(ValueError, match="version"):
            parse_template(text)

    def test_shipped_templates_have_both_languages(self) -> None:
        for template in (TEMPLATES.persona, TEMPLATES.memory_summary, TEMPLATES.summarize):
            assert set(template.bodies) == {"ru", "en"}
            assert template.version


class TestFitText:
    def test_fitting_text_is_returned_whole(self) -> None:
        assert fit_text("hello", 10, COUNTER) == "hello"

    @pytest.mark.parametrize("budget", [0, -5])
    def test_no_budget_no_text(self, budget: int) -> None:
        assert fit_text("hello", budget, COUNTER) == ""
        assert fit_text("hello", budget, COUNTER, keep_end=True) == ""

    def test_prefix_and_suffix(self) -> None:
        text = "1234567890"  # one token per digit
        assert fit_text(text, 3, COUNTER) == "123"
        assert fit_text(text, 3, COUNTER, keep_end=True) == "890"

    def test_nothing_fits(self) -> None:
        assert fit_text("€€", 2, COUNTER) == ""  # each euro sign costs three
        assert fit_text("€€", 2, COUNTER, keep_end=True) == ""

    @given(text=st.text(max_size=200), budget=st.integers(1, 60), keep_end=st.booleans())
    def test_longest_fitting_prefix_or_suffix(self, text: str, budget: int, keep_end: bool) -> None:
        part = fit_text(text, budget, COUNTER, keep_end=keep_end)
        assert COUNTER.count(part) <= budget
        if keep_end:
            assert text.endswith(part)
            longer = text[len(text) - len(part) - 1 :]
        else:
            assert text.startswith(part)
            longer = text[: len(part) + 1]
        if part != text:
            assert COUNTER.count(longer) > budget
