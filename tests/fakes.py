"""Small fakes behind the ports, for unit and property tests. The fakes follow the port's
contract where the tests rely on it; the memory store is the real adapter (it passes the store
contract suite) plus the failure switch and views the tests use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.storage import memory
from engine.domain import Language, MemoryEvent, UserProfile
from engine.errors import (
    BadAudio,
    DeliveryFailed,
    LLMRejected,
    LLMUnavailable,
    StoreUnavailable,
    TranscriberBusy,
)
from engine.ports import Completion, CompletionRequest, OutgoingReply, Transcript


class MemoryStore(memory.MemoryStore):
    """The in-memory adapter with what tests poke at: a `down` switch that fails every call as
    if the DB were unreachable, the ids `apply_summary` deleted, and the data's dicts as
    attributes (`profiles`, `events`, `cache`) to read or seed directly."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.deleted: list[str] = []

    @property
    def profiles(self) -> dict[str, UserProfile]:
        return self.data.profiles

    @property
    def events(self) -> dict[str, dict[str, MemoryEvent]]:
        return self.data.events

    @property
    def cache(self) -> dict[str, memory.CachedAnswer]:
        return self.data.cache

    @property
    def delivered(self) -> dict[tuple[str, str], str]:
        return self.data.delivered

    def _ensure_open(self) -> None:
        if self.down:
            raise StoreUnavailable("memory store is down")
        super()._ensure_open()

    async def apply_summary(self, profile: UserProfile, event_ids: Sequence[str]) -> int:
        bucket = self.data.events.get(profile.user_id, {})
        present = [event_id for event_id in dict.fromkeys(event_ids) if event_id in bucket]
        removed = await super().apply_summary(profile, event_ids)
        self.deleted += present
        return removed


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


class ScriptedBot:
    """Answers Bot API calls from a script of results or exceptions."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls: list[Any] = []
        self.called = asyncio.Event()

    async def __call__(self, method: Any, request_timeout: int | None = None) -> Any:
        self.calls.append(method)
        self.called.set()
        outcome = self.script.pop(0) if self.script else True
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
