"""Ports: the small protocols through which the core reaches storage, models and time.

Each adapter implements one port for one technology and maps its errors onto
`engine.errors` at its edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from engine.budget import Usage
from engine.domain import Language, MemoryEvent, Source, TurnContext, UserProfile


class Clock(Protocol):
    """Wall time for records and monotonic time for deadlines."""

    def now(self) -> datetime:
        """The current UTC time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class ProfileStore(Protocol):
    """Profiles, unique by user id."""

    async def get_profile(self, user_id: str) -> UserProfile | None: ...

    async def save_profile(self, profile: UserProfile) -> None: ...

    async def list_profiles(self, *, limit: int, after: str = "") -> list[UserProfile]:
        """Profiles ordered by user id, starting after `after`."""
        ...

    async def erase_user(self, user_id: str) -> None:
        """Delete everything held about the user: profile, events, cached answers, usage."""
        ...


class EventStore(Protocol):
    """Conversation memory: append, read a turn's context, find messages still owed a reply."""

    async def append(
        self, events: Sequence[MemoryEvent], *, profile: UserProfile | None = None
    ) -> None:
        """Durably store `events` (and create `profile` if the user has none) in one commit.

        An event with the id of a stored one replaces it (an edit, a transcript).

        Raises:
            DuplicateMessage: a user event's `origin` is stored already under another id
                (nothing is written): the same update delivered again.
        """
        ...

    async def load_turn(self, user_id: str, *, limit: int, before: str) -> TurnContext:
        """The profile, the `limit` newest events with ids below `before`, and the count."""
        ...

    async def unanswered(self, user_id: str) -> list[MemoryEvent]:
        """User events with no assistant event replying to them, oldest first."""
        ...


class DeliveryLedger(Protocol):
    """Which replies reached the user: a reply is stored owed, then marked delivered once the
    front door accepted it, so replies stored before a crash are sent after the restart."""

    async def owed_replies(self, user_id: str) -> list[MemoryEvent]:
        """Assistant events of the user not yet marked delivered, oldest first."""
        ...

    async def mark_delivered(self, user_id: str, event_id: str, receipt: str) -> None:
        """Record that the reply `event_id` was handed over; `receipt` says how (the Bot
        API's message ids, or why it can never be delivered). Marking twice keeps the first."""
        ...


class CompactionStore(Protocol):
    """What compression and retention need beyond a turn."""

    async def events_before(self, user_id: str, *, keep_last: int) -> list[MemoryEvent]:
        """Every event except the `keep_last` newest, oldest first."""
        ...

    async def apply_summary(self, profile: UserProfile, event_ids: Sequence[str]) -> int:
        """Save `profile` (carrying the new summary) first, then delete `event_ids`.

        Returns:
            How many events were deleted.
        """
        ...

    async def purge_older_than(self, cutoff: datetime) -> int:
        """Delete events created before `cutoff` (retention); returns how many."""
        ...

    async def users_over(self, threshold: int, *, limit: int) -> list[tuple[str, int]]:
        """Users holding more than `threshold` events, with their counts."""
        ...


class ResponseCache(Protocol):
    """Model answers kept for a while, by `engine.cache.cache_key`; erased with their user."""

    async def cached_answer(self, key: str, *, now: datetime) -> str | None:
        """The answer stored under `key` unless it expired by `now`."""
        ...

    async def cache_answer(
        self, key: str, user_id: str, text: str, *, expires_at: datetime
    ) -> None:
        """Keep `text` under `key` (replacing an older one) until `expires_at`."""
        ...

    async def purge_cache(self, now: datetime) -> int:
        """Delete answers that expired by `now`; returns how many."""
        ...


class UsageStore(Protocol):
    """Tokens each user spent, per UTC day and calendar month (`engine.budget.period_keys`)."""

    async def add_usage(self, user_id: str, tokens: int, *, now: datetime) -> None:
        """Add `tokens` to the user's day and month holding `now`, atomically (concurrent
        adds all count); counts of earlier periods may be dropped.

        Raises:
            ValueError: `tokens` is negative (nothing is written).
        """
        ...

    async def usage(self, user_id: str, *, now: datetime) -> Usage:
        """Tokens spent in the day and the month holding `now` (zeros for a new user)."""
        ...

    async def reset_usage(self, user_id: str) -> None:
        """Forget the user's counts (an operator renews their budget by hand)."""
        ...


class Store(
    ProfileStore,
    EventStore,
    DeliveryLedger,
    CompactionStore,
    ResponseCache,
    UsageStore,
    Protocol,
):
    """Everything Butler keeps: one object per backend (SQLite, MongoDB)."""

    async def check(self) -> None:
        """Confirm the store still keeps what it is given (a service calls it on a timer).

        Raises:
            StoreUnavailable: with the reason, when the store was lost under the process (its
                file removed or replaced, its database dropped); from then on every call
                raises it, so nothing is accepted into a store that a restart will not see.
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat-completion request."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A chat completion to ask of the model; `purpose` tells replies from summaries."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float = 0.7
    purpose: Literal["reply", "summary", "probe"] = "reply"


@dataclass(frozen=True, slots=True)
class Completion:
    """What the model answered, which endpoint and model answered, and the token usage."""

    text: str
    model: str
    endpoint: int
    prompt_tokens: int
    completion_tokens: int


class LanguageModel(Protocol):
    """A chat-completion model, possibly a chain of endpoints with fallbacks."""

    async def complete(self, request: CompletionRequest) -> Completion:
        """Raises:
        LLMUnavailable: every endpoint failed with transient errors.
        LLMRejected: the request itself was refused.
        """
        ...

    async def probe(self) -> bool:
        """Whether the primary endpoint answers right now (the half-open check)."""
        ...


@dataclass(frozen=True, slots=True)
class Transcript:
    """Text recognised in a voice note, its language and the audio's duration."""

    text: str
    language: str
    duration_s: float


class Transcriber(Protocol):
    """Speech to text."""

    async def transcribe(self, audio: bytes, *, language_hint: Language) -> Transcript:
        """Raises:
        BadAudio: undecodable, silent or too long audio.
        TranscriberBusy: no capacity in time.
        """
        ...


class TokenCounter(Protocol):
    """Counts tokens the way the served model would (or never fewer)."""

    def count(self, text: str) -> int: ...


ReplyKind = Literal["reply", "degraded", "declined", "error", "voice_rejected", "budget"]
"""reply: the model answered; degraded: the canned line (model unreachable); declined: the
message cannot be answered as sent (too long); error: a failed turn; voice_rejected: bad audio;
budget: the user's token budget is spent (the model was not asked)."""


@dataclass(frozen=True, slots=True)
class OutgoingReply:
    """A reply for a user: the text, the user event it answers, and why it was produced.

    `heard` is what a voice note was transcribed to (empty otherwise), for front doors that
    show the user what the butler understood.
    """

    user_id: str
    text: str
    reply_to: str
    kind: ReplyKind
    source: Source = "text"
    heard: str = ""


class ReplySink(Protocol):
    """Where replies go: Telegram, the terminal, a test."""

    async def deliver(self, reply: OutgoingReply) -> str:
        """Hand `reply` over; returns a receipt (e.g. the Bot API's message ids), or why it
        can never be delivered (the user blocked the bot): either way it is not sent again.

        Raises:
            DeliveryFailed: not now (network, server, rate limit): the reply stays owed.
        """
        ...
