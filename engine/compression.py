"""Memory compression policy: when to compress, what to summarise, what a good summary is.

The actor writes the summary into the profile first (with the id of the newest event it
covers), then deletes exactly those events. A crash in between leaves events the profile
already covers; the next run deletes them without summarising again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.domain import Language, MemoryEvent, UserProfile
from engine.ports import ChatMessage, CompletionRequest, TokenCounter
from engine.prompt import Template


@dataclass(frozen=True, slots=True)
class CompressionPolicy:
    """Thresholds from seed 001: compress past 50 events, keep the last 20, summary <= 300."""

    threshold: int = 50
    keep_last: int = 20
    summary_budget: int = 300
    timeout_s: float = 60.0
    retry_base_s: float = 60.0
    retry_max_s: float = 3600.0

    def due(self, event_count: int) -> bool:
        return event_count > self.threshold


@dataclass(frozen=True, slots=True)
class Selection:
    """Events already covered by the stored summary, and events to summarise now."""

    covered: tuple[str, ...]
    to_summarise: tuple[MemoryEvent, ...]


def select(
    candidates: Sequence[MemoryEvent], profile: UserProfile, *, stop_before: str = ""
) -> Selection:
    """Split the events older than the kept tail.

    Args:
        candidates: every event but the newest `keep_last`, oldest first.
        stop_before: id of the oldest message still owed a reply; it and everything after it
            stay raw, so a pending message is never summarised away.
    """
    covered: list[str] = []
    fresh: list[MemoryEvent] = []
    for event in candidates:
        if stop_before and event.id >= stop_before:
            break
        if profile.summary_through and event.id <= profile.summary_through:
            covered.append(event.id)
        else:
            fresh.append(event)
    return Selection(tuple(covered), tuple(fresh))


def summary_request(
    template: Template,
    profile: UserProfile,
    events: Sequence[MemoryEvent],
    policy: CompressionPolicy,
) -> CompletionRequest:
    """Ask the model to fold `events` into the previous summary, in the profile's language."""
    lines = "\n".join(f"{e.role}: {e.content}" for e in events)
    instruction = template.render(
        profile.language,
        previous=profile.memory_summary or "-",
        max_words=str(policy.summary_budget // 4),
    )
    return CompletionRequest(
        messages=(ChatMessage("system", instruction), ChatMessage("user", lines)),
        max_tokens=policy.summary_budget,
        temperature=0.2,
        purpose="summary",
    )


def script_share(text: str) -> tuple[float, float]:
    """Shares of Cyrillic and Latin among the letters of `text`."""
    cyr = lat = 0
    for ch in text:
        if not ch.isalpha():
            continue
        if "\u0400" <= ch <= "\u04ff":
            cyr += 1
        elif ch.isascii():
            lat += 1
    letters = cyr + lat
    if letters == 0:
        return 0.0, 0.0
    return cyr / letters, lat / letters


_SENTENCE = re.compile(r"(?:^|[.!?:;]\s+|\n\s*)(\w+)")
_WORD = re.compile(r"\w+")


def known_facts(profile: UserProfile) -> tuple[str, ...]:
    """What a new summary must keep of what the previous one knew.

    Facts are (1) the profile's preferred topics that the previous summary mentions and
    (2) name-like words of the previous summary: capitalised, two letters or more, not the
    first word of a sentence ("Анна", "Лондон", "Bob"). Each is kept if its stem (see
    `mentions`) appears in the new summary.
    """
    previous = profile.memory_summary
    if not previous.strip():
        return ()
    facts = [t for t in profile.preferred_topics if mentions(previous, t)]
    openers = {m.start(1) for m in _SENTENCE.finditer(previous)}
    for m in _WORD.finditer(previous):
        word = m.group()
        if (
            m.start() not in openers
            and len(word) >= 2
            and word[0].isupper()
            and word.isalpha()
            and word not in facts
        ):
            facts.append(word)
    return tuple(facts)


def mentions(text: str, fact: str) -> bool:
    """Whether `text` names `fact`: each word of it, by a stem that survives inflection.

    The stem drops the last two letters of a word, keeping at least three ("Москва" ->
    "моск" also finds "Москве"), so Russian case endings do not count as a lost fact.
    """
    haystack = text.casefold()
    for word in _WORD.findall(fact.casefold()):
        stem = word[: max(len(word) - 2, 3)] if len(word) > 3 else word
        if stem not in haystack:
            return False
    return True


def reject_reason(
    summary: str,
    language: Language,
    counter: TokenCounter,
    budget: int,
    *,
    facts: Sequence[str] = (),
) -> str | None:
    """Why a summary must not replace raw events, or None if it may.

    Reasons: `empty`; `over_budget` (more than `budget` tokens); `wrong_language` (for
    Russian, under half of its letters Cyrillic; for English, under 80% Latin);
    `lost_facts` (a fact from `known_facts` is not mentioned).
    """
    if not summary.strip():
        return "empty"
    if counter.count(summary) > budget:
        return "over_budget"
    cyr, lat = script_share(summary)
    if (language == "ru" and cyr < 0.5) or (language == "en" and lat < 0.8):
        return "wrong_language"
    if any(not mentions(summary, fact) for fact in facts):
        return "lost_facts"
    return None


@dataclass(slots=True)
class Backoff:
    """When a failed compression may be tried again: doubling delays up to a ceiling."""

    base_s: float
    max_s: float
    failures: int = 0
    not_before: float = field(default=0.0)

    def failed(self, now: float) -> None:
        self.failures += 1
        self.not_before = now + min(self.base_s * 2 ** (self.failures - 1), self.max_s)

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.not_before
