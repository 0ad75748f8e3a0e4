"""Commands an actor accepts through its mailbox (imperative) and what its turns produce."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from engine.domain import (
    LANGUAGES,
    MAX_PERSONA_CHARS,
    MAX_TOPIC_CHARS,
    MAX_TOPICS,
    TONES,
    InvalidProfileError,
    Language,
    MemoryEvent,
    Tone,
    UserProfile,
)


@dataclass(frozen=True, slots=True)
class HandleText:
    """Answer a stored user message, and with it `earlier`: messages of the same turn before
    it (lines written in one breath, over-rate messages), answered by one reply to `event`.

    `joins`: the message came over the user's rate; it has no turn of its own but joins the
    turn ahead of it (or, when none waits, starts one that later such messages join).
    """

    event: MemoryEvent
    earlier: tuple[MemoryEvent, ...] = ()
    joins: bool = False

    @property
    def events(self) -> tuple[MemoryEvent, ...]:
        """Every message the turn answers, oldest first."""
        return (*self.earlier, self.event)


@dataclass(frozen=True, slots=True)
class HandleVoice:
    """Transcribe a voice note into its stored (still empty) user event, then answer it.

    Empty `audio` means the recording was lost (a restart before transcription): the user is
    asked to send it again.
    """

    event: MemoryEvent
    audio: bytes


@dataclass(frozen=True, slots=True)
class CompressMemory:
    """Fold old events into the summary now, if the policy allows.

    `eager` (the background worker, for idle users) folds whatever lies beyond the kept tail
    even when the user is not over the threshold.
    """

    eager: bool = False


@dataclass(frozen=True, slots=True)
class CollectStored:
    """Queue the user's stored messages that have no reply and are not in the mailbox: another
    process stored them and handed them to this one, which serves the user."""


@dataclass(frozen=True, slots=True)
class ResetActor:
    """Leave degraded, forget the breaker and backoff (an operator's reset).

    Erasing a user (seed TL-06) is `Registry.erase`, the one erase path: the actor stops,
    what waits for it is dropped, and every record goes, for `/forget` and the admin alike.
    """


@dataclass(frozen=True, slots=True)
class UpdateProfile:
    """Change some profile fields (None keeps a field); validated when built.

    Raises:
        InvalidProfileError: a field is outside its allowed values, or nothing is changed.
    """

    persona: str | None = None
    tone: Tone | None = None
    language: Language | None = None
    topics: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.persona, self.tone, self.language, self.topics) == (None, None, None, None):
            raise InvalidProfileError("nothing to update")
        if self.persona is not None and not 0 < len(self.persona.strip()) <= MAX_PERSONA_CHARS:
            raise InvalidProfileError(f"persona must be 1..{MAX_PERSONA_CHARS} characters")
        if self.tone is not None and self.tone not in TONES:
            raise InvalidProfileError(f"tone must be one of {TONES}")
        if self.language is not None and self.language not in LANGUAGES:
            raise InvalidProfileError(f"language must be one of {LANGUAGES}")
        if self.topics is not None and (
            len(self.topics) > MAX_TOPICS
            or any(not t.strip() or len(t) > MAX_TOPIC_CHARS for t in self.topics)
        ):
            raise InvalidProfileError(
                f"at most {MAX_TOPICS} topics of 1..{MAX_TOPIC_CHARS} characters"
            )

    def apply(self, profile: UserProfile, now: datetime) -> UserProfile:
        """`profile` with the given fields changed."""
        return replace(
            profile,
            persona=profile.persona if self.persona is None else self.persona.strip(),
            tone=profile.tone if self.tone is None else self.tone,
            language=profile.language if self.language is None else self.language,
            preferred_topics=profile.preferred_topics if self.topics is None else self.topics,
            updated_at=now,
        )


Command = HandleText | HandleVoice | CompressMemory | CollectStored | ResetActor | UpdateProfile
UserMessage = HandleText | HandleVoice
