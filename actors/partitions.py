"""Which partitions of the `PartitionLog` this worker consumes: a membership lease
`worker:<owner>` per live worker, a `partition:<n>` store lease per owned partition, a fair
share of ceil(partitions / workers) each, and one supervised consumer task per partition."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol

from engine.errors import BrokerUnavailable, OwnedElsewhere, StoreUnavailable
from engine.partitions import partition_key
from engine.ports import Clock, Handler, Lease, LeaseStore, PartitionLog

log = logging.getLogger(__name__)

WORKER_PREFIX = "worker:"
PARTITION_PREFIX = "partition:"


def partition_of_key(key: str) -> int | None:
    tail = key.removeprefix(PARTITION_PREFIX)
    return int(tail) if key.startswith(PARTITION_PREFIX) and tail.isdigit() else None


class PartitionObserver(Protocol):
    """What a `PartitionOwner` reports (metrics); every method must be cheap and never raise."""

    def owned(self, count: int) -> None: ...

    def takeover(self) -> None: ...

    def renewal(self, outcome: str) -> None:
        """`outcome`: "ok", "lost" or "failed" (the store did not answer)."""
        ...

    def rebalance(self) -> None: ...

    def workers(self, count: int) -> None:
        """How many workers are live (this one included), after each round."""
        ...


class NoPartitionObserver:
    def owned(self, count: int) -> None:
        pass

    def takeover(self) -> None:
        pass

    def renewal(self, outcome: str) -> None:
        pass

    def rebalance(self) -> None:
        pass

    def workers(self, count: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """This worker's view for the admin page."""

    owner: str
    partitions: list[int]
    fair_share: int
    workers: int


@dataclass(slots=True)
class _Owned:
    lease: Lease
    task: asyncio.Task[None]


BACKOFF_MIN_S = 0.5
WAKE_AFTER_EXPIRY = timedelta(milliseconds=50)
BACKOFF_MAX_S = 5.0


class PartitionOwner:
    """Claims, renews and hands back partition leases, and consumes what it holds.

    A consumer handles an update only while `holding(p)`: the lease is held and `margin_s`
    before its expiry, so a paused process stops handling before another may take over.
    """

    def __init__(
        self,
        *,
        log: PartitionLog,
        leases: LeaseStore,
        clock: Clock,
        owner: str,
        ttl_s: float,
        handler: Handler,
        observer: PartitionObserver | None = None,
        margin_s: float | None = None,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"the lease time to live must be positive, not {ttl_s!r}")
        self._log = log
        self._store = leases
        self._clock = clock
        self.owner = owner
        self.ttl_s = ttl_s
        self._handler = handler
        self._observer = observer or NoPartitionObserver()
        self._margin = timedelta(seconds=ttl_s / 6 if margin_s is None else margin_s)
        self._owned: dict[int, _Owned] = {}
        self._member: Lease | None = None
        self._workers = 1
        self._live: set[str] = {owner}
        self._rank_among = 0
        self._loop: asyncio.Task[None] | None = None
        self._wake_at: datetime | None = None
        self._offset = zlib.crc32(owner.encode()) % log.partitions

    # -- views ---------------------------------------------------------------------------------

    @property
    def partitions(self) -> int:
        return self._log.partitions

    def owned(self) -> list[int]:
        return sorted(self._owned)

    def fair_share(self) -> int:
        """floor(partitions / workers), plus one for the first (partitions mod workers)
        workers in owner order: the shares add up to the partitions exactly."""
        workers = max(1, self._workers)
        extra = 1 if self._rank_among < self.partitions % workers else 0
        return self.partitions // workers + extra

    def snapshot(self) -> PartitionSnapshot:
        return PartitionSnapshot(self.owner, self.owned(), self.fair_share(), self._workers)

    def holding(self, partition: int) -> bool:
        held = self._owned.get(partition)
        return held is not None and self._clock.now() < held.lease.expires_at - self._margin

    async def lag(self) -> int:
        """Updates not yet confirmed, summed over the owned partitions."""
        total = 0
        for partition in self.owned():
            total += await self._log.lag(partition)
        return total

    # -- life ----------------------------------------------------------------------------------

    async def __aenter__(self) -> PartitionOwner:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Join (one round now, then one every third of the time to live)."""
        with contextlib.suppress(StoreUnavailable):
            await self.round()
        self._loop = asyncio.create_task(self._rounds(), name=f"partitions:{self.owner}")

    async def stop(self) -> None:
        """Stop every consumer, then free every lease so others take over at once."""
        await self._end_rounds()
        for partition in self.owned():
            await self._drop(partition, release=True)
        if self._member is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._store.release_lease(self._member)
            self._member = None
        self._observer.owned(0)

    async def abandon(self) -> None:
        """Stop consuming without freeing anything (a crash, for tests): leases expire."""
        await self._end_rounds()
        for partition in self.owned():
            await self._drop(partition, release=False)
        self._member = None

    async def _end_rounds(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    def next_round_in(self, started: datetime) -> float:
        """Seconds until the next round: a third of the time to live after `started` (the
        rate does not drift by how long a round took), or just after the soonest expiry of a
        lease a dead worker left, so its partitions are taken over as soon as they are free."""
        due = started + timedelta(seconds=self.ttl_s / 3)
        if self._wake_at is not None and self._wake_at < due:
            due = self._wake_at + WAKE_AFTER_EXPIRY
        return max(0.0, (due - self._clock.now()).total_seconds())

    async def _rounds(self) -> None:
        started = self._clock.now()
        while True:
            await asyncio.sleep(self.next_round_in(started))  # noqa: TID251 - a periodic job
            started = self._clock.now()
            try:
                await self.round()
            except StoreUnavailable:
                log.warning("partition round skipped: store unavailable")
            except Exception as exc:  # noqa: BLE001 - the loop must survive; no message text
                log.error("partition round failed: %s", type(exc).__name__)  # noqa: TRY400

    # -- one round -----------------------------------------------------------------------------

    async def round(self) -> None:
        """Renew membership and owned leases, then claim or release towards the fair share.

        Raises:
            StoreUnavailable: the store did not answer (leases keep until they expire).
        """
        now = self._clock.now()
        self._wake_at = None
        # Independent calls, sent together: a round costs a slow store one round trip here.
        joined, renewed, members = await asyncio.gather(
            self._join(now),
            self._renew(now),
            self._store.leases(WORKER_PREFIX, now=now),
            return_exceptions=True,
        )
        for outcome in (joined, renewed):
            if isinstance(outcome, BaseException):
                raise outcome
        if isinstance(members, BaseException):
            raise members
        live = members
        owners = sorted({lease.owner for lease in live} | {self.owner})
        self._live = set(owners)
        # A worker that stops renewing is gone when its membership runs out: wake then.
        self._expect(lease.expires_at for lease in live if lease.owner != self.owner)
        self._workers = len(owners)
        self._observer.workers(self._workers)
        self._rank_among = owners.index(self.owner)
        share = self.fair_share()
        if len(self._owned) > share:
            self._observer.rebalance()
            extras = sorted(self._owned, key=self._rank, reverse=True)[: len(self._owned) - share]
            for partition in extras:
                await self._drop(partition, release=True)
        elif len(self._owned) < share:
            await self._claim(share)
        self._observer.owned(len(self._owned))

    async def _join(self, now: datetime) -> None:
        key = f"{WORKER_PREFIX}{self.owner}"
        self._member = await self._store.acquire_lease(key, self.owner, ttl_s=self.ttl_s, now=now)

    async def _renew(self, now: datetime) -> None:
        if not self._owned:
            return
        order = self.owned()
        try:
            renewed = await self._store.renew_leases(
                [self._owned[p].lease for p in order], ttl_s=self.ttl_s, now=now
            )
        except StoreUnavailable:
            self._observer.renewal("failed")
            raise
        for partition, lease in zip(order, renewed, strict=True):
            if lease is None:
                self._observer.renewal("lost")
                log.warning("partition lease lost: partition=%s", partition)
                await self._drop(partition, release=False)
            else:
                self._observer.renewal("ok")
                self._owned[partition].lease = lease

    def _expect(self, expiries: Iterable[datetime]) -> None:
        """Remember the soonest of `expiries` (a lease that may be free then) for the next round."""
        for expires_at in expiries:
            if self._wake_at is None or expires_at < self._wake_at:
                self._wake_at = expires_at

    def _rank(self, partition: int) -> int:
        """Where `partition` comes in this worker's claiming order (spreads workers)."""
        return (partition - self._offset) % self.partitions

    async def _claim(self, share: int) -> None:
        # One read of who holds what, then an acquire only where nobody does: a round of
        # failed acquires per held partition costs a slow store seconds and delays takeovers.
        leases = await self._store.leases(PARTITION_PREFIX, now=self._clock.now())
        held = {lease.key for lease in leases}
        # Leases of an owner that is no longer a member free themselves at their expiry.
        self._expect(lease.expires_at for lease in leases if lease.owner not in self._live)
        free = [
            p
            for p in sorted(range(self.partitions), key=self._rank)
            if p not in self._owned and partition_key(p) not in held
        ]
        # The acquires of one batch go out together: a takeover costs one store round trip,
        # not one per partition. One that another worker won first is skipped for the next.
        while free and len(self._owned) < share:
            wanted = share - len(self._owned)
            batch, free = free[:wanted], free[wanted:]
            now = self._clock.now()
            results = await asyncio.gather(
                *(
                    self._store.acquire_lease(
                        partition_key(p), self.owner, ttl_s=self.ttl_s, now=now
                    )
                    for p in batch
                ),
                return_exceptions=True,
            )
            failure: BaseException | None = None
            for partition, result in zip(batch, results, strict=True):
                if isinstance(result, OwnedElsewhere):
                    continue
                if isinstance(result, BaseException):
                    failure = failure or result
                    continue
                if result.taken_from:
                    self._observer.takeover()
                    log.info("partition taken over: partition=%s", partition)
                task = asyncio.create_task(self._consume(partition), name=f"partition:{partition}")
                self._owned[partition] = _Owned(result, task)
            if failure is not None:
                raise failure

    async def _drop(self, partition: int, *, release: bool) -> None:
        """Stop the partition's consumer (awaiting its end), then free its lease if asked."""
        held = self._owned.pop(partition, None)
        if held is None:
            return
        held.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held.task
        if release:
            with contextlib.suppress(StoreUnavailable):
                await self._store.release_lease(held.lease)

    async def _consume(self, partition: int) -> None:
        """Consume `partition` while it is owned; retry after a broker outage or a bug."""
        failures = 0
        holding: Callable[[], bool] = lambda: self.holding(partition)  # noqa: E731
        while partition in self._owned:
            if not holding():
                await asyncio.sleep(min(BACKOFF_MAX_S, self.ttl_s / 6))  # noqa: TID251 - waits for a renewal
                continue
            try:
                await self._log.consume(partition, self._handler, holding=holding)
                failures = 0
            except BrokerUnavailable:
                failures += 1
                log.warning("partition consumer: broker unavailable: partition=%s", partition)
            except Exception as exc:  # noqa: BLE001 - supervised: logged (no text), retried
                failures += 1
                log.error(  # noqa: TRY400
                    "partition consumer failed: partition=%s, %s", partition, type(exc).__name__
                )
            if failures:
                delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** (failures - 1))
                await asyncio.sleep(delay)  # noqa: TID251 - backoff before a retry
            else:
                await asyncio.sleep(min(0.25, self.ttl_s / 6))  # noqa: TID251 - holding() again
