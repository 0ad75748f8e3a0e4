"""Each actor's recent transitions, and live subscriptions to them (the admin API's SSE).

Publishing never blocks an actor: a subscriber whose bounded queue is full is dropped (its
stream ends and the client reconnects), never waited for. With no subscriber, publishing is one
truth test.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from engine.lifecycle import Phase, Trigger

HISTORY_SIZE = 50
"""Transitions each live actor keeps for the admin view."""


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One transition: when (the clock's monotonic seconds), what, why, and in which trace.

    `trace_id` is 0 when no trace was recording (tracing off or not sampled).
    """

    user_id: str
    at: float
    source: Phase
    dest: Phase
    trigger: Trigger
    trace_id: int


class SubscriptionDropped(Exception):
    """The subscriber fell too far behind and was dropped; reconnect to continue."""


class Subscription:
    """A bounded queue of transitions for one reader; use as a context manager."""

    __slots__ = ("_feed", "_queue", "dropped", "user_id")

    def __init__(self, feed: TransitionFeed, user_id: str | None, size: int) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[TransitionRecord] = asyncio.Queue(size)
        self.user_id = user_id
        self.dropped = False

    def offer(self, record: TransitionRecord) -> bool:
        """Queue `record`; False (and the subscriber is dropped) when its queue is full."""
        if self.dropped:
            return False
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped = True
            return False
        return True

    async def next(self, timeout: float) -> TransitionRecord | None:  # noqa: ASYNC109 - one wait
        """The next transition, or None if none comes within `timeout` seconds.

        Raises:
            SubscriptionDropped: this subscriber was too slow and was dropped.
        """
        if self.dropped:
            raise SubscriptionDropped("too slow: the transition stream was dropped")
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None

    def close(self) -> None:
        self._feed.unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TransitionFeed:
    """Fans transitions out to subscribers of one user or of every user."""

    __slots__ = ("_all", "_by_user", "dropped_total", "queue_size")

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._all: list[Subscription] = []
        self._by_user: dict[str, list[Subscription]] = {}
        self.dropped_total = 0

    def __bool__(self) -> bool:
        return bool(self._all or self._by_user)

    def __len__(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_user.values())

    def subscribe(self, user_id: str | None = None) -> Subscription:
        """A new subscription to `user_id`'s transitions (every user's when None)."""
        sub = Subscription(self, user_id, self.queue_size)
        if user_id is None:
            self._all.append(sub)
        else:
            self._by_user.setdefault(user_id, []).append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._all if sub.user_id is None else self._by_user.get(sub.user_id, [])
        if sub in subs:
            subs.remove(sub)
        if sub.user_id is not None and not subs:
            self._by_user.pop(sub.user_id, None)

    def publish(self, record: TransitionRecord) -> None:
        """Hand `record` to every interested subscriber without waiting; drop slow ones."""
        for sub in (*self._all, *self._by_user.get(record.user_id, ())):
            if not sub.offer(record):
                self.dropped_total += 1
                self.unsubscribe(sub)
