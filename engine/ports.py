"""Ports: the small protocols through which the core reaches storage, models and time.

Each adapter implements one port for one technology and maps its errors onto
`engine.errors` at its edge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim of `owner` on `key` (`user:<id>`, `partition:<n>`, `worker:<id>`) until
    `expires_at`. `token` is the fencing token: strictly greater for every new holder of the
    key, the same while one holder renews. `nudges` counts the hand-overs other processes
    signalled to the holder (`LeaseStore.nudge_lease`); it only ever grows. `taken_from` is
    set only on what `acquire_lease` returns when it took the key from another owner whose
    lease had expired unreleased (a takeover); it is not stored and not compared."""

    key: str
    owner: str
    token: int
    expires_at: datetime
    nudges: int = 0
    taken_from: str = field(default="", compare=False)

    def same_claim(self, other: Lease) -> bool:
        """Whether `other` is this claim (key, owner and token), renewed or not."""
        return (self.key, self.owner, self.token) == (other.key, other.owner, other.token)


class LeaseStore(Protocol):
    """Leases with fencing tokens: who may act, and write, for a key. Every method is atomic
    in the store, so two processes racing for a key never both hold it."""

    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float, now: datetime) -> Lease:
        """Take `key` if it is free or expired (a token greater than any before), or renew it
        (the same token) when `owner` holds it already; it expires `ttl_s` after `now`.

        Raises:
            OwnedElsewhere: another owner holds `key` unexpired (its owner id and expiry).
        """
        ...

    async def renew_lease(self, lease: Lease, *, ttl_s: float, now: datetime) -> Lease:
        """Extend `lease` to `ttl_s` after `now`, with the current count of nudges.

        Raises:
            LeaseLost: `key` has another holder or token now (it expired and was taken, or
                was released).
        """
        ...

    async def renew_leases(
        self, leases: Sequence[Lease], *, ttl_s: float, now: datetime
    ) -> list[Lease | None]:
        """`renew_lease` for many at once (a few round trips, not one per lease): the renewed
        lease for each, in order, or None where it was lost."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Free the key if `lease` still holds it (the token is kept for the next holder);
        otherwise do nothing."""
        ...

    async def leases(self, prefix: str, *, now: datetime) -> list[Lease]:
        """Unexpired leases whose key starts with `prefix`, ordered by key."""
        ...

    async def nudge_lease(self, key: str, *, now: datetime) -> Lease | None:
        """Count one more nudge on the unexpired lease of `key` (its holder sees it at the next
        renewal: a message was stored for it by another process) and return that lease; None
        when nobody holds `key` unexpired (the caller may take it instead)."""
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
    LeaseStore,
    UsageStore,
    Protocol,
):
    """Everything Butler keeps: one object per backend (SQLite, MongoDB)."""

    def fenced(self, lease: Lease) -> Store:
        """A view of this store whose writes commit only while `lease` holds its key.

        Fenced writes: `append`, `save_profile`, `apply_summary`, `cache_answer`,
        `erase_user`. Each checks, in the same transaction (or atomic step) as the write, that
        `lease.key` is held by `lease.owner` with `lease.token`, and otherwise raises
        `LeaseLost`, having written nothing. Expiry alone does not fail a fenced write: only a
        new holder does, and a new holder has a greater token. `mark_delivered` is not fenced:
        it records what the front door already did, and refusing it would make the next
        owner send that reply again. Reads, leases, the retention purges (`purge_older_than`,
        `purge_cache`: not a user's) and `check` pass through; `close` of a view closes
        nothing (the store is its opener's).
        """
        ...

    async def check(self) -> None:
        """Confirm the store still keeps what it is given (a service calls it on a timer).

        Raises:
            StoreUnavailable: with the reason, when the store was lost under the process (its
                file removed or replaced, its database dropped); from then on every call
                raises it, so nothing is accepted into a store that a restart will not see.
        """
        ...

    async def close(self) -> None: ...


class Ownership(Protocol):
    """How a process becomes the one that serves a user: by a lease on the user itself, or
    on the partition the user belongs to. The registry claims before an actor activates,
    renews every live claim every `renew_every_s`, and releases at passivation and drain."""

    @property
    def renew_every_s(self) -> float:
        """How often the claims must be renewed (a third of their time to live)."""
        ...

    async def claim(self, user_id: str) -> Lease:
        """The lease under which this process serves `user_id` (taken or renewed).

        Raises:
            OwnedElsewhere: another process serves the user now.
        """
        ...

    async def renew(self, leases: Sequence[Lease]) -> list[Lease | None]:
        """Renew `leases`; the renewed lease for each, in order, or None where it was lost.

        Raises:
            StoreUnavailable: nothing could be renewed now (the caller tries again).
        """
        ...

    async def release(self, lease: Lease) -> None:
        """Give the claim up (a lease shared by other live users may be kept)."""
        ...

    async def hand_over(self, user_id: str) -> Lease | None:
        """Tell the process serving `user_id` that a message for the user was stored here;
        returns its lease, or None when nobody serves the user (claim it instead)."""
        ...

    async def orphaned(self) -> list[str]:
        """Users whose serving process stopped renewing its claim (it expired unreleased) or
        is gone: what it left unanswered is a service's to take over and answer."""
        ...


Handler = Callable[[bytes], Awaitable[bool]]
"""Handles one update of a partition: True confirms it (it never comes again), False leaves it
and every later update of the partition to come again after a pause (a transient failure)."""


class PartitionLog(Protocol):
    """Scale-out's transport: updates appended per partition (a stable hash of the user id,
    `engine.partitions.partition_of`) and consumed in order by the one process that owns the
    partition. A broker's stream (NATS JetStream) or, for tests and one process, memory."""

    @property
    def partitions(self) -> int:
        """How many partitions there are (fixed for the log's life)."""
        ...

    async def publish(self, partition: int, update_id: int, payload: bytes) -> None:
        """Append `payload`; returns once the log holds it durably. A repeat of `update_id`
        within the log's duplicate window is dropped (and still returns normally).

        Raises:
            BrokerUnavailable: the log did not confirm in time (nothing may be acknowledged).
        """
        ...

    async def consume(
        self, partition: int, handle: Handler, *, holding: Callable[[], bool]
    ) -> None:
        """Take `partition` over and hand its unconfirmed updates to `handle` one at a time,
        in order, waiting for new ones, until `holding()` is False (asked before each update)
        or the task is cancelled. Updates an earlier consumer took but did not confirm come
        first; a consumer taken over by a later `consume` (here or in another process) stops.

        Raises:
            BrokerUnavailable: the log cannot be read now (the caller tries again).
        """
        ...

    async def lag(self, partition: int) -> int:
        """Updates of `partition` appended and not yet confirmed."""
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
