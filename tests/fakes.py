"""Small fakes behind the ports, for unit and property tests. The fakes follow the port's
contract where the tests rely on it; input validation is the real stores' job (contract suite)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from engine.domain import Language, MemoryEvent, MemorySlice, TurnContext, UserProfile
from engine.errors import (
    BadAudio,
    DeliveryFailed,
    DuplicateMessage,
    LLMRejected,
    LLMUnavailable,
    StoreUnavailable,
    TranscriberBusy,
)
from engine.ports import Completion, CompletionRequest, OutgoingReply, Transcript


class MemoryStore:
    """An in-memory `Store` with a switch that makes every call fail as if the DB were down."""

    def __init__(self) -> None:
        self.profiles: dict[str, UserProfile] = {}
        self.events: dict[str, dict[str, MemoryEvent]] = {}
        self.down = False
        self.closed = False
        self.deleted: list[str] = []
        self.cache: dict[str, tuple[str, str, datetime]] = {}
        self.delivered: dict[tuple[str, str], str] = {}

    def _check(self) -> None:
        if self.down or self.closed:
            raise StoreUnavailable("memory store is down")

    def _sorted(self, user_id: str) -> list[MemoryEvent]:
        return sorted(self.events.get(user_id, {}).values(), key=lambda e: e.id)

    async def get_profile(self, user_id: str) -> UserProfile | None:
        self._check()
        return self.profiles.get(user_id)

    async def save_profile(self, profile: UserProfile) -> None:
        self._check()
        self.profiles[profile.user_id] = profile

    async def list_profiles(self, *, limit: int, after: str = "") -> list[UserProfile]:
        self._check()
        return [self.profiles[k] for k in sorted(self.profiles) if k > after][:limit]

    async def erase_user(self, user_id: str) -> None:
        self._check()
        self.profiles.pop(user_id, None)
        self.events.pop(user_id, None)
        for mark in [m for m in self.delivered if m[0] == user_id]:
            del self.delivered[mark]
        for key in [k for k, (owner, _, _) in self.cache.items() if owner == user_id]:
            del self.cache[key]

    async def append(
        self, events: Sequence[MemoryEvent], *, profile: UserProfile | None = None
    ) -> None:
        self._check()
        for event in events:
            if event.origin and event.role == "user":
                for other in self.events.get(event.user_id, {}).values():
                    if other.origin == event.origin and other.id != event.id:
                        raise DuplicateMessage(other.id)
        if profile is not None:
            self.profiles.setdefault(profile.user_id, profile)
        for event in events:
            self.events.setdefault(event.user_id, {})[event.id] = event

    async def owed_replies(self, user_id: str) -> list[MemoryEvent]:
        self._check()
        return [
            e
            for e in self._sorted(user_id)
            if e.role == "assistant" and (user_id, e.id) not in self.delivered
        ]

    async def mark_delivered(self, user_id: str, event_id: str, receipt: str) -> None:
        self._check()
        event = self.events.get(user_id, {}).get(event_id)
        if event is not None and event.role == "assistant":
            self.delivered.setdefault((user_id, event_id), receipt)

    async def load_turn(self, user_id: str, *, limit: int, before: str) -> TurnContext:
        self._check()
        events = self._sorted(user_id)
        older = [e for e in events if e.id < before]
        recent = tuple(older[-limit:]) if limit else ()
        profile = self.profiles.get(user_id)
        summary = profile.memory_summary if profile else ""
        return TurnContext(profile, MemorySlice(recent, summary, len(events)))

    async def unanswered(self, user_id: str) -> list[MemoryEvent]:
        self._check()
        events = self._sorted(user_id)
        answered = {e.reply_to for e in events if e.role == "assistant"}
        return [e for e in events if e.role == "user" and e.id not in answered]

    async def events_before(self, user_id: str, *, keep_last: int) -> list[MemoryEvent]:
        self._check()
        events = self._sorted(user_id)
        return events[: max(0, len(events) - keep_last)]

    async def apply_summary(self, profile: UserProfile, event_ids: Sequence[str]) -> int:
        self._check()
        self.profiles[profile.user_id] = profile
        bucket = self.events.get(profile.user_id, {})
        removed = 0
        for event_id in event_ids:
            if bucket.pop(event_id, None) is not None:
                removed += 1
                self.deleted.append(event_id)
        return removed

    async def purge_older_than(self, cutoff: datetime) -> int:
        self._check()
        removed = 0
        for bucket in self.events.values():
            for event_id in [k for k, e in bucket.items() if e.created_at < cutoff]:
                del bucket[event_id]
                removed += 1
        return removed

    async def users_over(self, threshold: int, *, limit: int) -> list[tuple[str, int]]:
        self._check()
        over = [(u, len(b)) for u, b in sorted(self.events.items()) if len(b) > threshold]
        return over[:limit]

    async def cached_answer(self, key: str, *, now: datetime) -> str | None:
        self._check()
        found = self.cache.get(key)
        return found[1] if found is not None and found[2] > now else None

    async def cache_answer(
        self, key: str, user_id: str, text: str, *, expires_at: datetime
    ) -> None:
        self._check()
        self.cache[key] = (user_id, text, expires_at)

    async def purge_cache(self, now: datetime) -> int:
        self._check()
        expired = [k for k, (_, _, until) in self.cache.items() if until <= now]
        for key in expired:
            del self.cache[key]
        return len(expired)

    async def check(self) -> None:
        self._check()

    async def close(self) -> None:
        self.closed = True


Script = Callable[[CompletionRequest], str]


def echo_reply(request: CompletionRequest) -> str:
    """A deterministic reply naming the last user message's length."""
    if request.purpose == "summary":
        return (
            "Сводка: хозяин беседовал о разном."
            if "русском" in request.messages[0].content
            else "Summary: the master talked about many things."
        )
    return f"Certainly, sir ({len(request.messages[-1].content)})."


@dataclass
class ScriptedLLM:
    """A `LanguageModel` whose answers and failures the test decides."""

    script: Script = echo_reply
    down: bool = False
    reject: bool = False
    calls: list[CompletionRequest] = field(default_factory=list)
    probes: int = 0
    gate: asyncio.Event | None = None

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise LLMUnavailable("scripted outage")
        if self.reject:
            raise LLMRejected("scripted rejection")
        return Completion(self.script(request), "scripted", 0, 10, 5)

    async def probe(self) -> bool:
        self.probes += 1
        return not self.down


class CollectingSink:
    """Collects replies and lets tests wait for a number of them with a deadline."""

    def __init__(self) -> None:
        self.replies: list[OutgoingReply] = []
        self.failing = False
        """While set, every delivery fails as a dead Bot API would (DeliveryFailed)."""
        self.refused = 0
        self._changed = asyncio.Event()

    async def deliver(self, reply: OutgoingReply) -> str:
        if self.failing:
            self.refused += 1
            self._changed.set()
            raise DeliveryFailed("the collecting sink is failing")
        self.replies.append(reply)
        self._changed.set()
        return f"collected:{len(self.replies)}"

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[OutgoingReply]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.replies) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.replies


@dataclass
class ManualClock:
    """A clock that moves only when told."""

    current: datetime = field(default_factory=lambda: datetime(2026, 11, 21, 9, 0, tzinfo=UTC))
    mono: float = 1000.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.current += timedelta(seconds=seconds)


class FakeTranscriber:
    """A `Transcriber` that reads `speech(text, language)` bytes back; anything else is bad.

    `capacity` concurrent calls at most; a call that finds none free within `wait_s` is busy.
    """

    PREFIX = b"speech:"

    def __init__(self, *, capacity: int = 1, wait_s: float = 1.0) -> None:
        self.slots = asyncio.Semaphore(capacity)
        self.wait_s = wait_s
        self.calls = 0

    @classmethod
    def speech(cls, text: str, language: Language) -> bytes:
        return cls.PREFIX + f"{language}:{text}".encode()

    async def transcribe(self, audio: bytes, *, language_hint: Language) -> Transcript:
        self.calls += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self.slots.acquire()
        except TimeoutError as exc:
            raise TranscriberBusy("no transcription slot free") from exc
        try:
            if not audio.startswith(self.PREFIX):
                raise BadAudio("the recording could not be decoded")
            language, _, text = audio.removeprefix(self.PREFIX).decode().partition(":")
            if not text.strip():
                raise BadAudio("I hear no speech in it")
            return Transcript(text.strip(), language or language_hint, len(text) / 15)
        finally:
            self.slots.release()
