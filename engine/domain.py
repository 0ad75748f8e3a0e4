"""Domain values: user profiles, memory events, memory slices and their identifiers.

All values are frozen; changes produce new values with `dataclasses.replace`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

Language = Literal["ru", "en"]
Tone = Literal["witty", "formal", "casual"]
Role = Literal["user", "assistant"]
Source = Literal["text", "voice"]

LANGUAGES: tuple[Language, ...] = get_args(Language)
TONES: tuple[Tone, ...] = get_args(Tone)
DEFAULT_PERSONA = "Alfred-style дворецкий"
MAX_TOPICS = 10
MAX_TOPIC_CHARS = 64
MAX_PERSONA_CHARS = 400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidProfileError(ValueError):
    """A profile field is outside its allowed values."""


class InvalidEventError(ValueError):
    """An event a store must refuse: no id, an unknown role or source, a bad token count.

    `MemoryEvent` does not check itself (turns build events field by field); the stores and
    `engine.codec` do, at their edge.
    """


@dataclass(frozen=True, slots=True)
class UserProfile:
    """Who the butler is talking to and how it should speak to them.

    `summary_through` is the id of the newest event the summary covers: events with an id at or
    below it are already in `memory_summary` and may be deleted (compression is idempotent).
    """

    user_id: str
    language: Language
    persona: str
    tone: Tone
    preferred_topics: tuple[str, ...]
    memory_summary: str
    created_at: datetime
    updated_at: datetime
    summary_through: str = ""
    summary_updated_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.user_id:
            raise InvalidProfileError("user_id must not be empty")
        if self.language not in LANGUAGES:
            raise InvalidProfileError(f"language must be one of {LANGUAGES}")
        if self.tone not in TONES:
            raise InvalidProfileError(f"tone must be one of {TONES}")
        if not self.persona.strip() or len(self.persona) > MAX_PERSONA_CHARS:
            raise InvalidProfileError(f"persona must be 1..{MAX_PERSONA_CHARS} characters")
        if len(self.preferred_topics) > MAX_TOPICS or any(
            not t.strip() or len(t) > MAX_TOPIC_CHARS for t in self.preferred_topics
        ):
            raise InvalidProfileError(
                f"at most {MAX_TOPICS} topics of 1..{MAX_TOPIC_CHARS} characters"
            )

    @classmethod
    def new(cls, user_id: str, now: datetime, language: Language = "ru") -> UserProfile:
        """The profile a user gets on first contact: the default persona, Russian unless told."""
        return cls(
            user_id=user_id,
            language=language,
            persona=DEFAULT_PERSONA,
            tone="witty",
            preferred_topics=(),
            memory_summary="",
            created_at=now,
            updated_at=now,
        )

    def with_summary(self, summary: str, through: str, now: datetime) -> UserProfile:
        """This profile with a new summary that covers events up to `through`."""
        return replace(
            self,
            memory_summary=summary,
            summary_through=through,
            summary_updated_at=now,
            updated_at=now,
        )


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """One remembered utterance. Ids sort in creation order within a process.

    `reply_to` links an assistant event to the user event it answers. A turn may answer several
    messages at once (a burst folded into one turn): its reply names the newest of them, and
    each earlier message of the batch names that newest one in its own `reply_to`, written
    with the reply. A user event is owed a reply until a reply names it, or names the message
    it was folded into. `tokens` is counted once, when the event is made, so a
    prompt's budget is a sum rather than a recount. `origin` names where a user message came
    from (`tg:<update_id>`), unique per user in the store, so a message delivered twice (a
    retried webhook, a redelivered update after a crash) is stored once; empty: no such key.
    """

    id: str
    user_id: str
    role: Role
    content: str
    source: Source
    created_at: datetime
    tokens: int
    reply_to: str = ""
    origin: str = ""

    @property
    def position(self) -> tuple[str, int, str]:
        """Where the event stands in the conversation: a reply right after the message it
        answers, although it was stored later (after the later messages of a burst)."""
        if self.role == "assistant" and self.reply_to:
            return (self.reply_to, 1, self.id)
        return (self.id, 0, self.id)


@dataclass(frozen=True, slots=True)
class MemorySlice:
    """What a turn knows of the past: recent events (oldest first), the summary, the count."""

    events: tuple[MemoryEvent, ...]
    summary: str
    total_events: int


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Everything one read job gives a turn: the profile (None on first contact) and memory."""

    profile: UserProfile | None
    memory: MemorySlice


@dataclass(slots=True)
class EventIds:
    """Makes event ids that sort by creation time and never repeat within a process.

    An id is 16 hex digits of microseconds since the epoch (bumped to stay strictly increasing)
    followed by 8 random hex digits, so ids from two processes do not collide either.
    """

    _last_us: int = field(default=0)

    def next(self, now: datetime) -> tuple[str, datetime]:
        """A fresh id and the exact timestamp it encodes."""
        micros = (now - _EPOCH) // timedelta(microseconds=1)
        micros = max(micros, self._last_us + 1)
        self._last_us = micros
        stamp = _EPOCH + timedelta(microseconds=micros)
        return f"{micros:016x}{random.getrandbits(32):08x}", stamp

    def after(self, event_id: str) -> None:
        """Make every later id sort after `event_id` (an id another process made, whose
        clock may run ahead of this one's). An id not made by `next` is ignored."""
        try:
            micros = int(event_id[:16], 16)
        except ValueError:
            return
        if len(event_id) >= 16:
            self._last_us = max(self._last_us, micros)
