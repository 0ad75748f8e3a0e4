"""`PartitionLog` in memory: one process's log, for tests of the partition workers and as the
reference the NATS adapter's contract suite is checked against."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.ports import Handler


@dataclass(slots=True)
class _Partition:
    entries: list[bytes] = field(default_factory=list)
    confirmed: int = 0
    """Index of the first unconfirmed entry (the ack floor)."""
    consumer: int = 0
    """Generation of the consumer that holds the partition; a later `consume` bumps it."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryPartitionLog:
    """Appends and consumes in order; a repeat of an update id is dropped while among the last
    `duplicate_window` ids published."""

    def __init__(
        self, partitions: int, *, duplicate_window: int = 100_000, retry_after_s: float = 0.05
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be positive, not {partitions}")
        self._parts = [_Partition() for _ in range(partitions)]
        self._recent: dict[int, None] = {}
        self._window = duplicate_window
        self.retry_after_s = retry_after_s

    @property
    def partitions(self) -> int:
        return len(self._parts)

    def _part(self, partition: int) -> _Partition:
        if not 0 <= partition < len(self._parts):
            raise ValueError(f"no partition {partition} among {len(self._parts)}")
        return self._parts[partition]

    async def publish(self, partition: int, update_id: int, payload: bytes) -> None:
        part = self._part(partition)
        if update_id in self._recent:
            return
        self._recent[update_id] = None
        if len(self._recent) > self._window:
            del self._recent[next(iter(self._recent))]
        part.entries.append(payload)
        part.changed.set()

    async def consume(
        self, partition: int, handle: Handler, *, holding: Callable[[], bool]
    ) -> None:
        part = self._part(partition)
        part.consumer += 1
        me = part.consumer
        part.changed.set()  # wakes an earlier consumer, which sees it was taken over
        while holding() and part.consumer == me:
            if part.confirmed >= len(part.entries):
                part.changed.clear()
                with contextlib.suppress(TimeoutError):  # asks `holding()` again now and then
                    await asyncio.wait_for(part.changed.wait(), 0.25)
                continue
            index = part.confirmed
            ok = await handle(part.entries[index])
            if part.consumer != me:
                return  # taken over while handling: the new holder handles it again
            if ok:
                part.confirmed = max(part.confirmed, index + 1)
            else:
                part.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(part.changed.wait(), self.retry_after_s)

    async def lag(self, partition: int) -> int:
        part = self._part(partition)
        return len(part.entries) - part.confirmed

    async def close(self) -> None:
        for part in self._parts:
            part.consumer += 1
            part.changed.set()
