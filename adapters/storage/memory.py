"""`MemoryStore`: the `Store` port in this process's memory, for a butler that needs to keep
nothing across restarts (demos, the terminal, tests). Same contract as SQLite and MongoDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Self

from engine import leases as rules
from engine.budget import Usage, period_keys
from engine.codec import checked_event, checked_profile, utc
from engine.domain import MemoryEvent, MemorySlice, TurnContext, UserProfile
from engine.errors import DuplicateMessage, StoreCorrupted, StoreUnavailable
from engine.ports import Lease, Store


class CachedAnswer(NamedTuple):
    """One entry of the response cache."""

    user_id: str
    text: str
    expires_at: datetime


@dataclass(slots=True)
class MemoryData:
    """What a `MemoryStore` holds: the database a reopened store finds again.

    Profiles by user id; events by user id, then event id; cached answers by key. Values are
    frozen and kept in UTC, so handing them out needs no copy.
    """

    profiles: dict[str, UserProfile] = field(default_factory=dict)
    events: dict[str, dict[str, MemoryEvent]] = field(default_factory=dict)
    cache: dict[str, CachedAnswer] = field(default_factory=dict)
    delivered: dict[tuple[str, str], str] = field(default_factory=dict)
    """(user id, reply id) -> the receipt of a reply the front door took."""
    leases: dict[str, Lease] = field(default_factory=dict)
    """Key -> its lease row; a released key keeps its row (owner `FREE`) and its token."""
    usage: dict[str, dict[str, int]] = field(default_factory=dict)
    """User id -> period key (`engine.budget.period_keys`) -> tokens spent."""


class MemoryStore:
    """Profiles, events and cached answers in a `MemoryData`.

    Every operation runs to completion without yielding to the loop, so each is atomic, and a
    refused write (`StoreCorrupted`) changes nothing. After `close` every operation is
    `StoreUnavailable`; a new `MemoryStore` on the same `data` sees what was written.
    """

    def __init__(self, data: MemoryData | None = None) -> None:
        self.data = MemoryData() if data is None else data
        self._closed = False

    @classmethod
    async def open(cls, data: MemoryData | None = None) -> MemoryStore:
        """A store on `data` (a fresh, empty one when None); opening cannot fail."""
        return cls(data)

    async def close(self) -> None:
        """Refuse every later operation; the data stays for a store opened on it."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _ensure_open(self) -> None:
        """Raises: StoreUnavailable once the store is closed."""
        if self._closed:
            raise StoreUnavailable("the memory store is closed")

    # -- profiles ----------------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> UserProfile | None:
        self._ensure_open()
        return self.data.profiles.get(user_id)

    async def save_profile(self, profile: UserProfile) -> None:
        self._ensure_open()
        kept = _profile(profile)
        self.data.profiles[kept.user_id] = kept

    async def list_profiles(self, *, limit: int, after: str = "") -> list[UserProfile]:
        """Profiles ordered by user id, starting after `after`."""
        self._ensure_open()
        if limit <= 0:
            return []
        profiles = self.data.profiles
        return [profiles[user_id] for user_id in sorted(profiles) if user_id > after][:limit]

    async def erase_user(self, user_id: str) -> None:
        """Delete the user's profile, events, cached answers and token usage."""
        self._ensure_open()
        self.data.profiles.pop(user_id, None)
        self.data.usage.pop(user_id, None)
        self.data.events.pop(user_id, None)
        for mark in [mark for mark in self.data.delivered if mark[0] == user_id]:
            del self.data.delivered[mark]
        cache = self.data.cache
        for key in [key for key, entry in cache.items() if entry.user_id == user_id]:
            del cache[key]

    # -- events ------------------------------------------------------------------------------

    async def append(
        self, events: Sequence[MemoryEvent], *, profile: UserProfile | None = None
    ) -> None:
        """Store `events` (replacing any with the same id) and create `profile` if absent.

        Raises:
            DuplicateMessage: a user event's origin is stored under another id already.
        """
        self._ensure_open()
        kept = [_event(event) for event in events]  # all checked before anything is written
        for event in kept:
            if event.origin and event.role == "user":
                for other in self.data.events.get(event.user_id, {}).values():
                    if other.origin == event.origin and other.id != event.id:
                        raise DuplicateMessage(other.id)
        created = None if profile is None else _profile(profile)
        if created is not None:
            self.data.profiles.setdefault(created.user_id, created)
        for event in kept:
            self.data.events.setdefault(event.user_id, {})[event.id] = event

    async def owed_replies(self, user_id: str) -> list[MemoryEvent]:
        """Assistant events of the user not yet marked delivered, oldest first."""
        self._ensure_open()
        delivered = self.data.delivered
        return [
            e
            for e in self._ordered(user_id)
            if e.role == "assistant" and (user_id, e.id) not in delivered
        ]

    async def mark_delivered(self, user_id: str, event_id: str, receipt: str) -> None:
        """Record the reply as handed over; a second mark keeps the first receipt."""
        self._ensure_open()
        event = self.data.events.get(user_id, {}).get(event_id)
        if event is not None and event.role == "assistant":
            self.data.delivered.setdefault((user_id, event_id), receipt)

    async def check(self) -> None:
        """Memory cannot vanish under the process: only a closed store fails."""
        self._ensure_open()

    async def load_turn(self, user_id: str, *, limit: int, before: str) -> TurnContext:
        """The profile, the `limit` newest events of the conversation before message
        `before` (in `MemoryEvent.position` order), and the count."""
        self._ensure_open()
        events = self._ordered(user_id)
        older = sorted(
            (event for event in events if event.position[0] < before),
            key=lambda event: event.position,
        )
        recent = tuple(older[-limit:]) if limit > 0 else ()
        profile = self.data.profiles.get(user_id)
        summary = "" if profile is None else profile.memory_summary
        return TurnContext(profile, MemorySlice(recent, summary, len(events)))

    async def unanswered(self, user_id: str) -> list[MemoryEvent]:
        """User events no reply answers (theirs, or their batch's), oldest first."""
        self._ensure_open()
        events = self._ordered(user_id)
        answered = {event.reply_to for event in events if event.role == "assistant"} - {""}
        return [
            event
            for event in events
            if event.role == "user" and event.id not in answered and event.reply_to not in answered
        ]

    # -- compaction and retention ------------------------------------------------------------

    async def events_before(self, user_id: str, *, keep_last: int) -> list[MemoryEvent]:
        """Every event except the `keep_last` newest, oldest first."""
        self._ensure_open()
        events = self._ordered(user_id)
        return events[: max(0, len(events) - max(keep_last, 0))]

    async def apply_summary(self, profile: UserProfile, event_ids: Sequence[str]) -> int:
        """Save `profile`, then delete those of `event_ids` that are the user's.

        Returns:
            How many events were deleted.
        """
        self._ensure_open()
        kept = _profile(profile)
        self.data.profiles[kept.user_id] = kept
        bucket = self.data.events.get(kept.user_id, {})
        return sum(bucket.pop(event_id, None) is not None for event_id in set(event_ids))

    async def purge_older_than(self, cutoff: datetime) -> int:
        """Delete events created before `cutoff`; returns how many."""
        self._ensure_open()
        moment = _time(cutoff)
        removed = 0
        for bucket in self.data.events.values():
            for event_id in [key for key, event in bucket.items() if event.created_at < moment]:
                del bucket[event_id]
                removed += 1
        return removed

    async def users_over(self, threshold: int, *, limit: int) -> list[tuple[str, int]]:
        """Users holding more than `threshold` events, most events first."""
        self._ensure_open()
        counts = [(user_id, len(bucket)) for user_id, bucket in self.data.events.items()]
        over = sorted((c for c in counts if c[1] > threshold), key=lambda c: (-c[1], c[0]))
        return over[: max(limit, 0)]

    # -- response cache ----------------------------------------------------------------------

    async def cached_answer(self, key: str, *, now: datetime) -> str | None:
        self._ensure_open()
        found = self.data.cache.get(key)
        return found.text if found is not None and found.expires_at > _time(now) else None

    async def cache_answer(
        self, key: str, user_id: str, text: str, *, expires_at: datetime
    ) -> None:
        self._ensure_open()
        if not user_id:
            raise StoreCorrupted("a cached answer needs a user id")
        self.data.cache[key] = CachedAnswer(user_id, text, _time(expires_at))

    async def purge_cache(self, now: datetime) -> int:
        """Delete answers that expired by `now`; returns how many."""
        self._ensure_open()
        moment = _time(now)
        cache = self.data.cache
        expired = [key for key, entry in cache.items() if entry.expires_at <= moment]
        for key in expired:
            del cache[key]
        return len(expired)

    # -- leases ------------------------------------------------------------------------------

    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float, now: datetime) -> Lease:
        """Take `key` if free or expired (token + 1), or renew it for its holder.

        Raises:
            OwnedElsewhere: another owner holds `key` unexpired.
        """
        self._ensure_open()
        lease = rules.taken(self.data.leases.get(key), key, owner, ttl_s=ttl_s, now=_time(now))
        self.data.leases[key] = replace(lease, taken_from="")
        return lease

    async def renew_lease(self, lease: Lease, *, ttl_s: float, now: datetime) -> Lease:
        """Extend `lease`. Raises: LeaseLost when its key has another holder or token."""
        self._ensure_open()
        kept = rules.renewed(self.data.leases.get(lease.key), lease, ttl_s=ttl_s, now=_time(now))
        self.data.leases[lease.key] = kept
        return kept

    async def renew_leases(
        self, leases: Sequence[Lease], *, ttl_s: float, now: datetime
    ) -> list[Lease | None]:
        """Each of `leases` renewed, or None where it was lost."""
        self._ensure_open()
        moment, kept = _time(now), self.data.leases
        renewed: list[Lease | None] = []
        for lease in leases:
            current = kept.get(lease.key)
            if current is None or not current.same_claim(lease):
                renewed.append(None)
                continue
            kept[lease.key] = rules.renewed(current, lease, ttl_s=ttl_s, now=moment)
            renewed.append(kept[lease.key])
        return renewed

    async def release_lease(self, lease: Lease) -> None:
        """Free the key if `lease` still holds it."""
        self._ensure_open()
        freed = rules.released(self.data.leases.get(lease.key), lease)
        if freed is not None:
            self.data.leases[lease.key] = freed

    async def leases(self, prefix: str, *, now: datetime) -> list[Lease]:
        """Unexpired leases whose key starts with `prefix`, ordered by key."""
        self._ensure_open()
        moment = _time(now)
        found = self.data.leases
        return [
            found[key]
            for key in sorted(found)
            if key.startswith(prefix) and rules.is_live(found[key], moment)
        ]

    async def nudge_lease(self, key: str, *, now: datetime) -> Lease | None:
        """Count a nudge on the live lease of `key`; None when nobody holds it."""
        self._ensure_open()
        current = self.data.leases.get(key)
        if current is None or not rules.is_live(current, _time(now)):
            return None
        nudged = replace(current, nudges=current.nudges + 1)
        self.data.leases[key] = nudged
        return nudged

    def fenced(self, lease: Lease) -> Store:
        """A view whose writes check, in the same step, that `lease` still holds its key."""
        return FencedMemoryStore(self, lease)

    def check_fence(self, lease: Lease) -> None:
        """Raises: LeaseLost unless `lease` holds its key (StoreUnavailable when closed)."""
        self._ensure_open()
        rules.fence(self.data.leases.get(lease.key), lease)

    # -- token usage -------------------------------------------------------------------------

    async def add_usage(self, user_id: str, tokens: int, *, now: datetime) -> None:
        """Add `tokens` to the user's day and month of `now`; older periods are dropped.

        Raises:
            ValueError: `tokens` is negative.
        """
        self._ensure_open()
        if tokens < 0:
            raise ValueError(f"tokens must be 0 or more, got {tokens}")
        keys = period_keys(_time(now))
        held = self.data.usage.get(user_id, {})
        self.data.usage[user_id] = {key: held.get(key, 0) + tokens for key in keys}

    async def usage(self, user_id: str, *, now: datetime) -> Usage:
        self._ensure_open()
        day, month = period_keys(_time(now))
        held = self.data.usage.get(user_id, {})
        return Usage(day=held.get(day, 0), month=held.get(month, 0))

    async def reset_usage(self, user_id: str) -> None:
        self._ensure_open()
        self.data.usage.pop(user_id, None)

    # -- dump (adapters.storage.dump) --------------------------------------------------------

    async def events_page(self, *, after: tuple[str, str], limit: int) -> list[MemoryEvent]:
        """Events ordered by (user id, id), starting after the key `after`."""
        self._ensure_open()
        wanted = max(limit, 1)
        found: list[MemoryEvent] = []
        for user_id in sorted(u for u in self.data.events if u >= after[0]):
            found += [e for e in self._ordered(user_id) if (user_id, e.id) > after]
            if len(found) >= wanted:
                break
        return found[:wanted]

    def _ordered(self, user_id: str) -> list[MemoryEvent]:
        return sorted(self.data.events.get(user_id, {}).values(), key=lambda event: event.id)


class FencedMemoryStore:
    """`MemoryStore.fenced`: reads pass through; each write checks the lease and writes in one
    step (neither yields to the loop in between, so no other task can take the key there)."""

    def __init__(self, store: MemoryStore, lease: Lease) -> None:
        self._store = store
        self.lease = lease

    async def save_profile(self, profile: UserProfile) -> None:
        self._store.check_fence(self.lease)
        await self._store.save_profile(profile)

    async def erase_user(self, user_id: str) -> None:
        self._store.check_fence(self.lease)
        await self._store.erase_user(user_id)

    async def append(
        self, events: Sequence[MemoryEvent], *, profile: UserProfile | None = None
    ) -> None:
        self._store.check_fence(self.lease)
        await self._store.append(events, profile=profile)

    async def mark_delivered(self, user_id: str, event_id: str, receipt: str) -> None:
        await self._store.mark_delivered(user_id, event_id, receipt)  # a fact: not fenced

    async def apply_summary(self, profile: UserProfile, event_ids: Sequence[str]) -> int:
        self._store.check_fence(self.lease)
        return await self._store.apply_summary(profile, event_ids)

    async def cache_answer(
        self, key: str, user_id: str, text: str, *, expires_at: datetime
    ) -> None:
        self._store.check_fence(self.lease)
        await self._store.cache_answer(key, user_id, text, expires_at=expires_at)

    # -- passing through ---------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> UserProfile | None:
        return await self._store.get_profile(user_id)

    async def list_profiles(self, *, limit: int, after: str = "") -> list[UserProfile]:
        return await self._store.list_profiles(limit=limit, after=after)

    async def load_turn(self, user_id: str, *, limit: int, before: str) -> TurnContext:
        return await self._store.load_turn(user_id, limit=limit, before=before)

    async def unanswered(self, user_id: str) -> list[MemoryEvent]:
        return await self._store.unanswered(user_id)

    async def owed_replies(self, user_id: str) -> list[MemoryEvent]:
        return await self._store.owed_replies(user_id)

    async def events_before(self, user_id: str, *, keep_last: int) -> list[MemoryEvent]:
        return await self._store.events_before(user_id, keep_last=keep_last)

    async def purge_older_than(self, cutoff: datetime) -> int:
        return await self._store.purge_older_than(cutoff)

    async def users_over(self, threshold: int, *, limit: int) -> list[tuple[str, int]]:
        return await self._store.users_over(threshold, limit=limit)

    async def cached_answer(self, key: str, *, now: datetime) -> str | None:
        return await self._store.cached_answer(key, now=now)

    async def purge_cache(self, now: datetime) -> int:
        return await self._store.purge_cache(now)

    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float, now: datetime) -> Lease:
        return await self._store.acquire_lease(key, owner, ttl_s=ttl_s, now=now)

    async def renew_lease(self, lease: Lease, *, ttl_s: float, now: datetime) -> Lease:
        return await self._store.renew_lease(lease, ttl_s=ttl_s, now=now)

    async def renew_leases(
        self, leases: Sequence[Lease], *, ttl_s: float, now: datetime
    ) -> list[Lease | None]:
        return await self._store.renew_leases(leases, ttl_s=ttl_s, now=now)

    async def release_lease(self, lease: Lease) -> None:
        await self._store.release_lease(lease)

    async def leases(self, prefix: str, *, now: datetime) -> list[Lease]:
        return await self._store.leases(prefix, now=now)

    async def nudge_lease(self, key: str, *, now: datetime) -> Lease | None:
        return await self._store.nudge_lease(key, now=now)

    # Token usage is counted, not a turn's memory: it passes through unfenced.
    async def add_usage(self, user_id: str, tokens: int, *, now: datetime) -> None:
        await self._store.add_usage(user_id, tokens, now=now)

    async def usage(self, user_id: str, *, now: datetime) -> Usage:
        return await self._store.usage(user_id, now=now)

    async def reset_usage(self, user_id: str) -> None:
        await self._store.reset_usage(user_id)

    def fenced(self, lease: Lease) -> Store:
        return self._store.fenced(lease)

    async def check(self) -> None:
        await self._store.check()

    async def close(self) -> None:
        """Closes nothing: the store belongs to whoever opened it."""


def _profile(profile: UserProfile) -> UserProfile:
    try:
        return checked_profile(profile)
    except ValueError as exc:
        raise StoreCorrupted(f"memory: {exc}") from exc


def _event(event: MemoryEvent) -> MemoryEvent:
    try:
        return checked_event(event)
    except ValueError as exc:
        raise StoreCorrupted(f"memory: {exc}") from exc


def _time(moment: datetime) -> datetime:
    try:
        return utc(moment)
    except (TypeError, ValueError) as exc:
        raise StoreCorrupted(f"memory: {exc}") from exc
