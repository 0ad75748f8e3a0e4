"""A bounded mailbox: `offer` never blocks; `take` waits for an item or a deadline.

Lighter than `asyncio.Queue` (no putter queue, one waiter at most, since one actor reads it),
and it lets the owner look at what is waiting (edits, the oldest pending message).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """FIFO of at most `capacity` items for a single consumer."""

    __slots__ = ("_capacity", "_items", "_waiter")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    @property
    def capacity(self) -> int:
        return self._capacity

    def offer(self, item: T, *, force: bool = False) -> bool:
        """Append `item` unless full (`force` ignores the bound, for recovered messages)."""
        if not force and len(self._items) >= self._capacity:
            return False
        self._items.append(item)
        self._wake()
        return True

    def push_front(self, item: T) -> None:
        """Put `item` back at the head (a turn to retry after a transient failure)."""
        self._items.appendleft(item)
        self._wake()

    def replace(self, match: Callable[[T], bool], item: T) -> bool:
        """Replace the first waiting item that `match`es; False if none waits."""
        for index, existing in enumerate(self._items):
            if match(existing):
                self._items[index] = item
                return True
        return False

    def wake(self) -> None:
        """Wake the consumer without an item (to notice a stop request)."""
        self._wake()

    async def take(self, timeout: float | None = None) -> T | None:  # noqa: ASYNC109 - one timer, no task
        """The oldest item, or None when `timeout` passes (or `wake()` is called) first."""
        if not self._items:
            await self.wait(timeout)
            if not self._items:
                return None
        return self._items.popleft()

    def peek(self) -> T | None:
        """The oldest item, left in place; None when empty."""
        return self._items[0] if self._items else None

    def take_now(self) -> T:
        """The oldest item, which must be there (after `peek`)."""
        return self._items.popleft()

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - one timer, no task
        """Return once an item waits, `timeout` passes or `wake()` is called."""
        if self._items:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = None if timeout is None else loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
