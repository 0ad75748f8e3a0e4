"""Bookkeeping of incoming updates: repeats, per-user rate limits, messages awaiting edits.

Every map here is bounded (least recently used entries go first): a bot with many users must
not grow without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond `capacity`."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def drop(self, match: Callable[[K], bool]) -> int:
        """Forget every key that `match`es (a scan: for rare work such as erasing a user)."""
        doomed = [key for key in self._items if match(key)]
        for key in doomed:
            del self._items[key]
        return len(doomed)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


class SeenUpdates:
    """Update ids already accepted: Telegram may deliver an update again (a lost
    confirmation, a webhook retry) and it must not be answered twice."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._seen: BoundedMap[int, bool] = BoundedMap(capacity)

    def seen(self, update_id: int) -> bool:
        return update_id in self._seen

    def remember(self, update_id: int) -> None:
        self._seen.put(update_id, True)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class RateLimiter:
    """A token bucket per user: `per_minute` turns a minute, bursts up to `burst`.

    `per_minute == 0` turns the limit off. A message over the rate is not refused: it is
    stored and joins the turn ahead of it (`HandleText.joins`), so the limit bounds model
    calls, never what the user wrote.
    """

    per_minute: int
    burst: int
    clock: Callable[[], float] = time.monotonic
    capacity: int = 100_000
    _buckets: BoundedMap[int, _Bucket] = field(init=False)

    def __post_init__(self) -> None:
        self._buckets = BoundedMap(self.capacity)

    def allow(self, user: int) -> bool:
        """Whether the user's message may have a turn of its own now (and count it)."""
        if self.per_minute == 0:
            return True
        now = self.clock()
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets.put(user, bucket)
        rate = self.per_minute / 60.0
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def forget(self, user: int) -> None:
        self._buckets.pop(user)
